"""Time, injectable: code that waits or expires things takes a `Clock` so tests need no real waiting."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a way to wait."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(slots=True)
class ManualClock:
    """A clock that only moves when told to; `sleep` advances it at once and records the wait."""

    current: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.current += seconds


def parse_timestamp(value: str) -> float:
    """An ISO 8601 timestamp as GitHub writes it (``2026-01-01T00:00:00Z``) to epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
