"""Background task bookkeeping: finished work is waited for, stuck work is cancelled, failures are logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ghapp.tasks import TaskSet


async def test_drain_waits_for_quick_tasks_and_cancels_stuck_ones() -> None:
    tasks = TaskSet()
    release = asyncio.Event()
    finished: list[str] = []

    async def quick() -> None:
        await release.wait()
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    tasks.spawn(quick(), name="quick")
    tasks.spawn(stuck(), name="stuck")
    asyncio.get_running_loop().call_soon(release.set)
    cancelled = await tasks.drain(grace=0.2)
    assert finished == ["quick"]
    assert cancelled == 1
    assert len(tasks) == 0


async def test_failures_are_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet()

    async def boom() -> None:
        raise RuntimeError("kaput")

    tasks.spawn(boom(), name="boom")
    await tasks.idle()
    assert any("boom" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
