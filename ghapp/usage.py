"""Runner time per account and pool: who uses the runners (``ghapp_runner_seconds_total`` and a 24 h / 7 d
table from memory).

A runner counts from its pod running to its pod's end. Until the pod itself is watched, both come from the
runner Job: running = the Job's ``status.ready`` seen going above 0; end = its ``completionTime`` (or the
Failed condition's time, or the Job's disappearance). A Job that ended before it was ever seen running counts
from its ``startTime``. The in-memory table covers at most `keep` seconds and nothing before this process
started: it says so when a window is longer than what it saw.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ghapp.inventory import RunnerJob
from ghapp.metrics import Metrics

DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True)
class RunnerTime:
    """One runner pod's time: from `start` to `end` (epoch seconds)."""

    start: float
    end: float
    pool: str
    account: str
    repository: str


@dataclass(frozen=True, slots=True)
class UsageRow:
    account: str
    pool: str
    seconds: float


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """Runner seconds per account and pool over the last `seconds`; `covered` of them were seen (less when
    this process started later than the window's beginning)."""

    seconds: float
    covered: float
    rows: tuple[UsageRow, ...]

    @property
    def complete(self) -> bool:
        return self.covered >= self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_seconds": self.seconds,
            "covered_seconds": self.covered,
            "complete": self.complete,
            "rows": [{"account": r.account, "pool": r.pool, "seconds": r.seconds} for r in self.rows],
        }


def account_of(job: RunnerJob) -> str:
    """The organisation or user a runner Job serves (from its repository, else its scope)."""
    if "/" in job.repository:
        return job.repository.split("/", 1)[0]
    return job.scope.split(":", 1)[-1].split("/", 1)[0] or "unknown"


class Usage:
    """Counts runner seconds as runner Jobs change; keeps a week of them for the usage table."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        since: float,
        by_repository: bool,
        repository_of: Callable[[str], str | None] = lambda runner: None,
        keep: float = WEEK,
    ) -> None:
        """`repository_of(runner name)`: the repository of the job the runner took, when known."""
        self.since = since
        self._metrics = metrics
        self._by_repository = by_repository
        self._repository_of = repository_of
        self._keep = keep
        self._running: dict[str, tuple[float, RunnerJob]] = {}  # runner Job name → since when it runs
        self._done: deque[RunnerTime] = deque()

    def runner_job_changed(self, before: RunnerJob | None, after: RunnerJob | None, *, now: float) -> None:
        """Follow a runner Job (from the inventory): its pod starts running, then ends."""
        job = after or before
        assert job is not None
        if after is not None and after.ready and not after.finished and job.name not in self._running:
            # first seen already running (after a restart): from the Job's start, but never before ours
            start = now if before is not None else max(after.started_at or now, self.since)
            self._running[job.name] = (start, after)
        ended = after is None or (after.finished and (before is None or not before.finished))
        if not ended:
            return
        running = self._running.pop(job.name, None)
        if running is not None:
            start = running[0]
        elif after is None or after.started_at is None or before is None:
            return  # never ran, or ended before this process saw it
        else:
            start = after.started_at
        end = after.finished_at if after is not None and after.finished_at is not None else now
        self.add(start=start, end=max(start, end), job=job)

    def add(self, *, start: float, end: float, job: RunnerJob) -> None:
        """Count one runner's time."""
        entry = self._entry(start, end, job)
        self._metrics.runner_seconds.labels(entry.pool, entry.account).inc(end - start)
        if self._by_repository and entry.repository:
            self._metrics.runner_repository_seconds.labels(entry.pool, entry.repository).inc(end - start)
        self._done.append(entry)
        while self._done and self._done[0].end < end - self._keep:
            self._done.popleft()

    def window(self, seconds: float, *, now: float) -> UsageWindow:
        """Runner seconds per account and pool in the last `seconds` (running runners up to `now`)."""
        begin = now - seconds
        totals: dict[tuple[str, str], float] = defaultdict(float)
        ongoing = (self._entry(start, now, job) for start, job in self._running.values())
        for entry in (*self._done, *ongoing):
            overlap = min(entry.end, now) - max(entry.start, begin)
            if overlap > 0:
                totals[(entry.account, entry.pool)] += overlap
        rows = sorted(
            (UsageRow(account, pool, round(total, 3)) for (account, pool), total in totals.items()),
            key=lambda row: (-row.seconds, row.account, row.pool),
        )
        covered = min(seconds, now - self.since, self._keep)
        return UsageWindow(seconds=seconds, covered=max(0.0, covered), rows=tuple(rows))

    def _entry(self, start: float, end: float, job: RunnerJob) -> RunnerTime:
        repository = self._repository_of(job.name) or job.repository
        return RunnerTime(start, end, job.pool, account_of(job), repository)
