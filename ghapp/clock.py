"""Time, injectable: code that waits or expires things takes a `Clock` so tests need no real waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, a way to wait, and a way to bound a wait."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """``async with clock.timeout(s):`` — the block is cancelled after `s` seconds of this clock's time,
        and `TimeoutError` raised (like `asyncio.timeout`)."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(max(0.0, seconds))


@dataclass(slots=True)
class ManualClock:
    """A clock that only moves when told to; `sleep` advances it at once and records the wait."""

    current: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)
    _deadlines: list[tuple[float, asyncio.Timeout]] = field(default_factory=list, repr=False)

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time on; blocks under a `timeout` whose deadline has come are cancelled."""
        self.current += seconds
        _expire(self._deadlines, self.current)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """Times out when the clock is moved (by `advance` or `sleep`) to `seconds` from now, not before."""
        return _deadline(self._deadlines, now=self.current, seconds=seconds)


@dataclass(slots=True)
class HeldClock:
    """A clock that only moves when told to; `sleep` records the wait and returns only once `advance` has
    moved time past its end (for tests that must see what happens while something waits)."""

    current: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)
    _sleepers: list[asyncio.Future[None]] = field(default_factory=list)
    _deadlines: list[tuple[float, asyncio.Timeout]] = field(default_factory=list, repr=False)

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        end = self.current + max(0.0, seconds)
        while self.current < end:
            woken = asyncio.get_running_loop().create_future()
            self._sleepers.append(woken)
            await woken

    def advance(self, seconds: float) -> None:
        self.current += seconds
        sleepers, self._sleepers = self._sleepers, []
        for woken in sleepers:
            if not woken.done():
                woken.set_result(None)
        _expire(self._deadlines, self.current)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """Times out when `advance` moves the clock to `seconds` from now, not before."""
        return _deadline(self._deadlines, now=self.current, seconds=seconds)


@contextlib.asynccontextmanager
async def _deadline(
    deadlines: list[tuple[float, asyncio.Timeout]], *, now: float, seconds: float
) -> AsyncIterator[asyncio.Timeout]:
    """A block a test clock cancels (`TimeoutError`) once it is moved `seconds` past `now` (at once if
    `seconds` is not positive)."""
    async with asyncio.timeout(None) as scope:
        deadline = (now + seconds, scope)
        deadlines.append(deadline)
        try:
            _expire([deadline], now)
            yield scope
        finally:
            deadlines.remove(deadline)


def _expire(deadlines: list[tuple[float, asyncio.Timeout]], now: float) -> None:
    """Cancel the blocks whose deadline `now` has reached (at the event loop's next turn)."""
    for when, scope in deadlines:
        if when <= now:
            scope.reschedule(asyncio.get_running_loop().time())


def format_timestamp(value: float) -> str:
    """Epoch seconds as the RFC 3339 UTC time Kubernetes and GitHub write (``2026-01-01T00:00:00Z``)."""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> float:
    """An ISO 8601 timestamp as GitHub writes it (``2026-01-01T00:00:00Z``) to epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def timestamp_or_none(value: object) -> float | None:
    """`value` as epoch seconds if it is an ISO 8601 timestamp, else None (for times only reported)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None
