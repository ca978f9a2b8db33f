"""Waiting out GitHub rate limits: launches limited by the same bucket share one wait for its reset."""

from __future__ import annotations

import asyncio

from ghapp.clock import Clock
from ghapp.tasks import TaskSet


class Cooldowns:
    """One wait per rate-limit bucket (an installation, or the App), shared by everything it limits."""

    def __init__(self, *, clock: Clock, tasks: TaskSet) -> None:
        self._clock = clock
        self._tasks = tasks
        self._waits: dict[str, asyncio.Task[None]] = {}  # bucket → the wait for its reset

    async def wait(self, bucket: str, seconds: float) -> None:
        """Return once `bucket`'s limit has passed (`seconds` from the first caller's wait); a caller
        cancelled meanwhile does not cancel the wait the others share."""
        wait = self._waits.get(bucket)
        if wait is None or wait.done():
            wait = self._tasks.spawn(self._clock.sleep(seconds), name=f"rate-limit-{bucket}")
            self._waits[bucket] = wait

            def ended(task: asyncio.Task[None]) -> None:
                if self._waits.get(bucket) is task:
                    del self._waits[bucket]

            wait.add_done_callback(ended)
        await asyncio.shield(wait)
