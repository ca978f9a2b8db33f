"""The cluster's runner Jobs as ghapp last saw them: rebuilt from a list, kept current by a watch.

This is a cache of the truth (the API server), never the truth itself: it can be thrown away and rebuilt at
any time, and a restart starts with a fresh list.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ghapp import informer, manifests
from ghapp.clock import Clock, parse_timestamp, timestamp_or_none
from ghapp.kube import KubeClient
from ghapp.metrics import Metrics
from ghapp.recent import RecentMap

log = logging.getLogger(__name__)

ACTIVE = "active"
TOMBSTONE_TTL = 600.0
"""Seconds the late watch events of a Job ghapp deleted are ignored (a relist of its namespace ends it)."""
MAX_TOMBSTONES = 10_000
"""Most deleted Jobs whose late watch events are ignored at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerJob:
    """What ghapp needs to know about one runner Job."""

    name: str
    namespace: str
    uid: str
    pool: str
    installation_id: int
    workflow_job_id: int
    scope: str
    repository: str
    created_at: float
    finished: bool
    failed: bool
    deleting: bool
    runner_id: int | None = None
    run_id: int = 0
    attempt: int = 1
    """Which runner for its workflow job this is (the Job's ``ghapp/attempt`` annotation)."""
    ready: bool = False
    """A pod of the Job is ready (``status.ready``): with no readiness probe, the runner container runs."""
    started_at: float | None = None
    """``status.startTime``: when the Job controller started the Job (its pod was made then)."""
    finished_at: float | None = None
    """When the Job completed or failed (``completionTime``, else the Failed condition's time)."""
    failure: str | None = None
    """Why the Job failed, in the job controller's words (the Failed condition's reason and message)."""
    warm: bool = False
    """A warm runner's Job (started ahead of jobs, for none in particular)."""

    @property
    def active(self) -> bool:
        """Counts against capacity: not finished and not being deleted."""
        return not (self.finished or self.deleting)

    @property
    def state(self) -> str:
        """One word for metrics: active, finished, failed or deleting."""
        if self.deleting:
            return "deleting"
        if self.failed:
            return "failed"
        return "finished" if self.finished else ACTIVE

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RunnerJob | None:
        """Parse a Job object; None if it is not one of ghapp's runner Jobs."""
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        status = obj.get("status") or {}
        try:
            installation_id = int(labels[manifests.INSTALLATION_LABEL])
            workflow_job_id = int(labels[manifests.JOB_ID_LABEL])
            pool = labels[manifests.POOL_LABEL]
        except (KeyError, ValueError):
            return None
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        failed = bool(status.get("failed")) or conditions.get("Failed") == "True"
        succeeded = bool(status.get("succeeded")) or conditions.get("Complete") == "True"
        created = metadata.get("creationTimestamp")
        runner_id = annotations.get(manifests.RUNNER_ID_ANNOTATION)
        run_id = str(annotations.get(manifests.RUN_ID_ANNOTATION, ""))
        attempt = str(annotations.get(manifests.ATTEMPT_ANNOTATION, ""))
        failed_at = next(
            (
                c.get("lastTransitionTime")
                for c in status.get("conditions") or []
                if c.get("type") == "Failed"
            ),
            None,
        )
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            uid=str(metadata.get("uid", "")),
            pool=str(pool),
            installation_id=installation_id,
            workflow_job_id=workflow_job_id,
            scope=str(annotations.get(manifests.SCOPE_ANNOTATION, "")),
            repository=str(annotations.get(manifests.REPOSITORY_ANNOTATION, "")),
            created_at=parse_timestamp(created) if isinstance(created, str) else 0.0,
            finished=failed or succeeded,
            failed=failed,
            deleting=bool(metadata.get("deletionTimestamp")),
            runner_id=int(runner_id) if isinstance(runner_id, str) and runner_id.isdigit() else None,
            run_id=int(run_id) if run_id.isdigit() else 0,
            attempt=int(attempt) if attempt.isdigit() else 1,
            ready=isinstance(status.get("ready"), int) and status["ready"] > 0,
            started_at=timestamp_or_none(status.get("startTime")),
            finished_at=timestamp_or_none(status.get("completionTime") or failed_at)
            if failed or succeeded
            else None,
            failure=_failure(status) if failed else None,
            warm=labels.get(manifests.WARM_LABEL) == "true",
        )


def _failure(status: dict[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            words = [str(condition[key]) for key in ("reason", "message") if condition.get(key)]
            return ": ".join(words) or None
    return None


JobChange = Callable[["RunnerJob | None", "RunnerJob | None"], None]
"""Hears every change of a runner Job: (before, after); None before = new to ghapp, None after = gone."""


class Inventory:
    """ghapp's runner Jobs by name, from list + watch of each runner namespace; listeners hear of changes.

    Runner names are unique across namespaces (they derive from the workflow job id), so one map holds all.
    """

    def __init__(
        self, *, kube: KubeClient, namespaces: Iterable[str], clock: Clock, metrics: Metrics
    ) -> None:
        self._kube = kube
        self.namespaces = tuple(sorted(set(namespaces)))
        self._clock = clock
        self._metrics = metrics
        self.jobs: dict[str, RunnerJob] = {}
        self._counts: Counter[tuple[str, str]] = Counter()  # (pool, state) → Jobs, kept as Jobs change
        self._versions: dict[str, str] = {}  # namespace → the resourceVersion of `sync`'s list
        self._listeners: list[Callable[[], None]] = []
        self._job_listeners: list[Callable[[dict[str, Any]], None]] = []
        # uid → namespace of Jobs ghapp deleted, until the watch or a relist confirms it
        self._tombstones: RecentMap[str, str] = RecentMap(
            clock=clock, ttl=TOMBSTONE_TTL, max_entries=MAX_TOMBSTONES
        )
        self._change_listeners: list[JobChange] = []
        self._broken_since: dict[str, float] = {}  # namespace → first failure of its watch since it worked
        self.synced = asyncio.Event()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` (synchronously) whenever capacity may have freed: a Job ended or went away."""
        self._listeners.append(listener)

    def on_job(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with each runner Job object the watch brings (added or changed)."""
        self._job_listeners.append(listener)

    def on_change(self, listener: JobChange) -> None:
        """Call `listener(before, after)` (synchronously) for every change of a runner Job ghapp sees."""
        self._change_listeners.append(listener)

    def active(self, pool: str | None = None) -> list[RunnerJob]:
        """Jobs that count against capacity, of one pool or all."""
        return [j for j in self.jobs.values() if j.active and (pool is None or j.pool == pool)]

    def active_count(self, pool: str | None = None) -> int:
        """How many Jobs count against capacity, of one pool or all (no scan: counts are kept current)."""
        if pool is None:
            return sum(n for (_, state), n in self._counts.items() if state == ACTIVE)
        return self._counts[(pool, ACTIVE)]

    def by_workflow_job(self, workflow_job_id: int) -> RunnerJob | None:
        return next((j for j in self.jobs.values() if j.workflow_job_id == workflow_job_id), None)

    async def sync(self) -> None:
        """Replace what is known with a fresh list of every runner namespace."""
        jobs: dict[str, RunnerJob] = {}
        for namespace in self.namespaces:
            jobs.update({job.name: job for job in await self._list(namespace)})
        self._replace(jobs)
        self._tombstones.clear()
        self.synced.set()
        log.info("runner Jobs listed", extra={"jobs": len(self.jobs), "active": self.active_count()})

    async def _list(self, namespace: str) -> list[RunnerJob]:
        objects, version = await self._kube.list("jobs", namespace=namespace)
        self._versions[namespace] = version
        return self._parse(objects)

    def _resync(self, namespace: str, fresh: list[RunnerJob]) -> None:
        """Replace what is known of one namespace with a fresh list of it (its tombstones end: the list is
        the truth, and events missed while not watching will never come)."""
        jobs = {name: job for name, job in self.jobs.items() if job.namespace != namespace}
        jobs.update({job.name: job for job in fresh})
        self._tombstones.remove_if(lambda _, where: where == namespace)
        self._replace(jobs)

    def observe(self, obj: dict[str, Any]) -> None:
        """Record an object ghapp just created (the watch will confirm it later)."""
        job = RunnerJob.from_object(obj)
        if job is not None:
            self._put(job)

    def forget(self, name: str, *, uid: str | None = None) -> None:
        """Record that ghapp deleted a Job (the one with `uid`, when given); older watch events about it
        (still in flight) are then ignored."""
        job = self.jobs.get(name)
        if job is not None and uid in (None, job.uid):
            self._tombstones.set(job.uid, job.namespace)
            self._drop(name)

    @property
    def tombstones(self) -> int:
        """Deleted Jobs whose late watch events are still ignored (at most `MAX_TOMBSTONES`)."""
        return len(self._tombstones)

    async def run(self) -> None:
        """Watch every runner namespace forever (after `sync`)."""
        await asyncio.gather(*(self._watch(namespace) for namespace in self.namespaces))

    def broken_for(self) -> float:
        """Seconds since the watch of some namespace started failing without working again (0: all work).

        A watch works again once one of its streams delivers an event (a bookmark counts) that applies.
        """
        if not self._broken_since:
            return 0.0
        return max(0.0, self._clock.now() - min(self._broken_since.values()))

    async def _watch(self, namespace: str) -> None:
        """Watch one namespace (from `sync`'s list); list it again after an expired or broken watch.

        A failure is recorded for `broken_for` until a stream delivers an event again.
        """
        await informer.list_then_watch(
            self._kube,
            "jobs",
            namespace=namespace,
            version=self._versions.get(namespace, ""),
            relist=lambda objects: self._resync(namespace, self._parse(objects)),
            apply=self._apply,
            clock=self._clock,
            what="runner Jobs",
            broken=lambda: self._watch_broken(namespace),
            working=lambda: self._watch_works(namespace),
        )

    def _watch_broken(self, namespace: str) -> None:
        self._broken_since.setdefault(namespace, self._clock.now())

    def _watch_works(self, namespace: str) -> None:
        self._broken_since.pop(namespace, None)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) about a runner Job."""
        job = RunnerJob.from_object(obj)
        if job is None:
            return
        if job.uid in self._tombstones:
            if kind == "DELETED":
                self._tombstones.pop(job.uid)
            return
        if kind == "DELETED":
            self._drop(job.name)
        else:
            self._put(job)
            for listener in self._job_listeners:
                listener(obj)

    @staticmethod
    def _parse(objects: Iterable[dict[str, Any]]) -> list[RunnerJob]:
        return [job for job in map(RunnerJob.from_object, objects) if job is not None]

    # -- bookkeeping: counts and metrics follow every change; listeners hear when capacity frees ------------

    def _put(self, job: RunnerJob) -> None:
        old = self.jobs.get(job.name)
        self.jobs[job.name] = job
        if old is not None:
            self._count(old, -1)
        self._count(job, +1)
        self._changed(old, job)
        if old is not None and old.active and not job.active:
            self._notify()

    def _drop(self, name: str) -> None:
        old = self.jobs.pop(name, None)
        if old is not None:
            self._count(old, -1)
            self._changed(old, None)
            if old.active:
                self._notify()

    def _replace(self, jobs: dict[str, RunnerJob]) -> None:
        old_jobs, self.jobs = self.jobs, jobs
        self._counts.clear()
        self._metrics.runner_jobs.clear()
        for job in jobs.values():
            self._count(job, +1)
        for name in old_jobs.keys() | jobs.keys():
            before, after = old_jobs.get(name), jobs.get(name)
            if before != after:
                self._changed(before, after)
        self._notify()

    def _changed(self, before: RunnerJob | None, after: RunnerJob | None) -> None:
        for listener in self._change_listeners:
            listener(before, after)

    def _count(self, job: RunnerJob, delta: int) -> None:
        key = (job.pool, job.state)
        self._counts[key] += delta
        self._metrics.runner_jobs.labels(*key).set(self._counts[key])

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
