"""Pure: each pool's health from its runners' failures, when its next launch may go, and given-up jobs.

A pool whose runners fail the same way again and again (a wrong image, a missing ServiceAccount, an outdated
runner) is unhealthy: its launches are spaced out (one attempt per backoff interval, doubling up to a cap)
instead of hot-looping, so no storm of Jobs and no burnt registration tokens. The first runner of the pool
that gets past the failing step makes it healthy again. This is the one model the logs, the
``ghapp_pool_healthy`` gauge, ``ghapp check`` and the status page read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from ghapp.failures import Failure, Reason

UNHEALTHY_AFTER: Final[dict[Reason, int]] = {
    "create_failed": 3,
    "image_pull": 3,
    "unschedulable": 3,
    "killed": 5,
    "runner_error": 3,
    "outdated": 1,  # the image is too old for GitHub: every runner of the pool will be refused
}
"""Failures in a row, of one reason, that make a pool unhealthy."""
BEFORE_START: Final[frozenset[Reason]] = frozenset({"create_failed", "image_pull", "unschedulable"})
"""Reasons a runner that starts running has got past (any runner of the pool that runs clears them)."""
BACKOFF_BASE: Final = 15.0
BACKOFF_CAP: Final = 600.0
"""Seconds between two launches of an unhealthy pool: 15, 30, 60, … at most 600."""
GIVEN_UP_KEPT: Final = 10_000
"""Given-up workflow jobs remembered (the oldest are forgotten first)."""


@dataclass(frozen=True, slots=True)
class PoolHealth:
    """What is known of one pool's runners."""

    healthy: bool = True
    reason: Reason | None = None
    """The reason of the latest failures in a row (None when the last runner did not fail)."""
    message: str = ""
    """The cluster's words for the latest failure."""
    streak: int = 0
    """Failures in a row with `reason`."""
    since: float = 0.0
    """When `healthy` last changed."""
    next_launch: float = 0.0
    """While unhealthy: the earliest time of the pool's next launch."""

    def backoff(self) -> float:
        """Seconds between two launches of the pool (0 while healthy)."""
        if self.healthy or self.reason is None:
            return 0.0
        doublings = max(0, self.streak - UNHEALTHY_AFTER[self.reason])
        return float(min(BACKOFF_CAP, BACKOFF_BASE * 2.0**doublings))


class Health:
    """The health of every pool, and the workflow jobs ghapp gave up on (and why)."""

    def __init__(self, pools: list[str]) -> None:
        self.pools: dict[str, PoolHealth] = {pool: PoolHealth() for pool in pools}
        self.given_up: dict[int, str] = {}

    def failed(self, pool: str, failure: Failure, *, now: float, at_once: bool = False) -> bool:
        """Record a runner failure (`at_once`: one that will repeat for every runner, found without starting
        one); True when this makes the pool unhealthy (it was healthy)."""
        state = self.pools.get(pool, PoolHealth())
        streak = state.streak + 1 if state.reason == failure.reason else 1
        if at_once:
            streak = max(streak, UNHEALTHY_AFTER[failure.reason])
        unhealthy = streak >= UNHEALTHY_AFTER[failure.reason]
        state = replace(state, reason=failure.reason, message=failure.message, streak=streak)
        became = unhealthy and state.healthy
        if became:
            state = replace(state, healthy=False, since=now)
            state = replace(state, next_launch=now + state.backoff())
        self.pools[pool] = state
        return became

    def progressed(self, pool: str, *, completed: bool, now: float) -> bool:
        """A runner of `pool` got running (`completed`: it finished its job); True when that makes the pool
        healthy again. A running runner clears only failures that happen before a runner starts."""
        state = self.pools.get(pool, PoolHealth())
        if state.reason is None or not (completed or state.reason in BEFORE_START):
            return False
        self.pools[pool] = PoolHealth(since=now if not state.healthy else state.since)
        return not state.healthy

    def launch_delay(self, pool: str, *, now: float) -> float:
        """Seconds the next launch of `pool` waits (0 while healthy); each call takes the next free turn."""
        state = self.pools.get(pool, PoolHealth())
        if state.healthy:
            return 0.0
        turn = max(now, state.next_launch)
        self.pools[pool] = replace(state, next_launch=turn + state.backoff())
        return turn - now

    def give_up(self, workflow_job_id: int, why: str) -> None:
        """Start no more runners for this workflow job (it stays queued in GitHub; the log says why)."""
        self.given_up[workflow_job_id] = why
        while len(self.given_up) > GIVEN_UP_KEPT:
            del self.given_up[next(iter(self.given_up))]
