"""Which runner stands for which queued job, now that runners are not bound to jobs (pure; no I/O).

GitHub gives a queued job to any idle runner whose labels it matches, not to the runner started for it. So
when job X runs on the runner started for job K, it is K that still waits: whatever stood for X (X's queue
entry, or X's own runner) now stands for K, and if nothing stood for X, K needs a new runner at once. The
demand of a pool in a scope is kept that way: one entry or runner per job that still waits.

A "token" is the workflow job id in a runner's name (``ghapp-<id>``): the queue entry, the launch or the
runner Job of that name. A token stands for its own job unless this module says otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")

Place = tuple[str, str]
"""(pool name, scope key): where a runner can serve jobs."""

Where = Callable[[int], Place | None]
"""Where the token's queue entry, launch or active runner Job is; None if it has none."""

MAX_ENTRIES: Final = 10_000
"""At most this many links (and this many used runners) are remembered; the oldest are dropped."""


@dataclass(frozen=True, slots=True)
class Moved:
    """The entry or runner `token` now stands for job `serves` (bookkeeping only)."""

    token: int
    serves: int


@dataclass(frozen=True, slots=True)
class Replace:
    """Job `serves` lost its runner and nothing in `place` stands in for it: a new runner must, now.

    `freed` is a token that stood for the job that took the runner but is in another place (another pool),
    so it cannot stand for `serves`: no job needs it any more. `place` is None if the runner's place is
    unknown (its Job is gone already).
    """

    serves: int
    place: Place | None
    freed: int | None


class Demand:
    """Links between tokens and the jobs they stand for; told which job ran on which runner."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._serves: OrderedDict[int, int] = OrderedDict()  # token → job it stands for (not its own)
        self._served_by: dict[int, int] = {}  # the reverse: job → token standing for it
        self._used: OrderedDict[int, int] = OrderedDict()  # token whose runner took a job → that job
        self._settled: OrderedDict[int, None] = OrderedDict()  # jobs that need no runner any more

    def serves(self, token: int) -> int:
        """The job `token` stands for now."""
        return self._serves.get(token, token)

    def settled(self, job_id: int) -> bool:
        """True once `job_id` needs no runner: it ran, or ended without one."""
        return job_id in self._settled

    def token_for(self, job_id: int, *, where: Where) -> int | None:
        """The token that stands for `job_id` and still exists, or None."""
        token = self._served_by.get(job_id)
        if job_id in self._settled:
            return None
        if token is None and job_id not in self._serves and job_id not in self._used:
            token = job_id
        return token if token is not None and where(token) is not None else None

    def ran(
        self, *, job_id: int, runner: int, runner_place: Place | None, where: Where
    ) -> Moved | Replace | None:
        """Job `job_id` was taken by the runner of token `runner`, started in `runner_place` (None: no longer
        known); idempotent."""
        if self._used.get(runner) == job_id:
            return None  # told already (``in_progress``, then ``completed``)
        self._remember(self._used, runner, job_id)
        served = self._unlink(runner)
        token = self.token_for(job_id, where=where)
        self._remember(self._settled, job_id, None)
        if served == job_id:
            return None
        place = runner_place
        if token is not None and (place is None or where(token) == place):
            self.link(token, served)
            return Moved(token, served)
        if token is not None:
            self._unlink(token)
        return Replace(serves=served, place=place, freed=token)

    def done(self, job_id: int, *, where: Where) -> int | None:
        """Job `job_id` needs no runner any more (it ended without one, or ran elsewhere): the token that
        stood for it, now standing for nothing, or None."""
        token = self.token_for(job_id, where=where)
        if token is not None:
            self._unlink(token)
        self._remember(self._settled, job_id, None)  # told again (in_progress, then completed): nothing
        return token

    def link(self, token: int, serves: int) -> None:
        """From now on `token` stands for job `serves`."""
        self._unlink(token)
        if serves == token:
            return
        previous = self._served_by.pop(serves, None)
        if previous is not None:
            self._serves.pop(previous, None)
        self._serves[token] = serves
        self._served_by[serves] = token
        while len(self._serves) > self._max:
            _, job = self._serves.popitem(last=False)
            self._served_by.pop(job, None)

    def _remember(self, table: OrderedDict[int, T], key: int, value: T) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._max:
            table.popitem(last=False)

    def _unlink(self, token: int) -> int:
        """Make `token` stand for nothing else; return the job it stood for."""
        served = self._serves.pop(token, None)
        if served is None:
            return token
        if self._served_by.get(served) == token:
            del self._served_by[served]
        return served
