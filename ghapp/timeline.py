"""Each recent workflow job's timeline, from what GitHub and the cluster already say; the per-pool histograms.

A timeline is kept for the most recent `capacity` workflow jobs (the oldest is dropped first). Times come from
GitHub's payloads where GitHub knows them (queued = ``created_at``, ``started_at``, ``completed_at``) and from
this process's clock where only it knows them (webhook received, runner Job created, pod running). Each
histogram is observed once per workflow job, however often its webhooks are delivered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ghapp import failures, manifests
from ghapp.clock import timestamp_or_none
from ghapp.inventory import RunnerJob
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob


@dataclass(slots=True, kw_only=True)
class JobTimeline:
    """What is known of one workflow job, in the order things happen to it (epoch seconds)."""

    id: int
    repository: str
    account: str
    name: str = ""
    workflow: str | None = None
    labels: tuple[str, ...] = ()
    pool: str | None = None
    """The pool ghapp planned for it (None: not ours, or not planned by this process)."""
    queued_at: float | None = None
    """GitHub's ``created_at``."""
    received_at: float | None = None
    """When this process received its first webhook."""
    runner_job: str | None = None
    runner_job_created_at: float | None = None
    pod_scheduled_at: float | None = None
    pod_running_at: float | None = None
    started_at: float | None = None
    """GitHub's ``started_at``: a runner took the job."""
    runner_name: str | None = None
    completed_at: float | None = None
    conclusion: str | None = None
    skipped: str | None = None
    """Why ghapp starts no runner for it: the reason in words."""
    refused_rule: str | None = None
    """The rule that refused it a runner (None when not refused)."""
    launch_error: str | None = None
    """The last error starting its runner (cleared once a runner Job exists)."""
    observed: set[str] = field(default_factory=set)
    """Histograms already observed for this job (each once)."""

    @property
    def done(self) -> bool:
        """A runner took it, or it completed: it waits no more."""
        return self.started_at is not None or self.completed_at is not None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("observed")
        data["labels"] = list(self.labels)
        return data


class Timeline:
    """The timelines of recent workflow jobs, bounded; observes the job histograms as events arrive."""

    def __init__(
        self, *, capacity: int, metrics: Metrics, pool_of_runner: Callable[[str], str | None]
    ) -> None:
        """`pool_of_runner(name)`: the pool of ghapp's runner called `name`, None if it is not ghapp's."""
        self.capacity = capacity
        self._metrics = metrics
        self._pool_of_runner = pool_of_runner
        self._jobs: OrderedDict[int, JobTimeline] = OrderedDict()
        self._by_runner: dict[str, int] = {}  # runner name → the workflow job it took
        self._made_for: dict[str, int] = {}  # runner Job name → the workflow job it was started for

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, workflow_job_id: int) -> JobTimeline | None:
        return self._jobs.get(workflow_job_id)

    def recent(self) -> list[JobTimeline]:
        """Every kept timeline, oldest first."""
        return list(self._jobs.values())

    def took(self, runner_name: str) -> JobTimeline | None:
        """The workflow job the runner called `runner_name` took, if known."""
        job_id = self._by_runner.get(runner_name)
        return None if job_id is None else self._jobs.get(job_id)

    # -- from webhooks ------------------------------------------------------------------------------------

    def webhook(self, job: WorkflowJob, *, received_at: float) -> JobTimeline:
        """Record what a ``workflow_job`` webhook says (any action); observe what it completes."""
        entry = self._entry(job.id, repository=job.repository.full_name, account=job.account)
        entry.name = job.name or entry.name
        entry.workflow = job.workflow_name or entry.workflow
        entry.labels = job.labels or entry.labels
        if entry.received_at is None:
            entry.received_at = received_at
        if job.created_at is not None:
            entry.queued_at = job.created_at
        if job.action in ("in_progress", "completed") and job.runner_name:
            entry.started_at = job.started_at if job.started_at is not None else entry.started_at
            entry.runner_name = job.runner_name
            self._by_runner[job.runner_name] = job.id
            pool = self._runner_pool(entry)
            if pool is not None:
                self._observe(entry, "queued_to_started", pool, entry.queued_at, entry.started_at)
        if job.action == "completed":
            entry.completed_at = job.completed_at
            entry.conclusion = job.conclusion
            pool = self._runner_pool(entry) if entry.runner_name else None
            if pool is not None:
                self._observe(entry, "duration", pool, entry.started_at, entry.completed_at)
        return entry

    def planned(self, workflow_job_id: int, *, pool: str) -> None:
        entry = self._jobs.get(workflow_job_id)
        if entry is not None:
            entry.pool, entry.skipped, entry.refused_rule = pool, None, None

    def skipped(self, workflow_job_id: int, *, reason: str, rule: str | None = None) -> None:
        """ghapp starts no runner for the job: not ours (`rule` None) or refused by `rule`."""
        entry = self._jobs.get(workflow_job_id)
        if entry is not None:
            entry.skipped, entry.refused_rule = reason, rule

    # -- from the launcher and the cluster ----------------------------------------------------------------

    def runner_job_created(self, workflow_job_id: int, *, pool: str, name: str, at: float) -> None:
        """This process created the runner Job `name` for the job at `at`."""
        entry = self._jobs.get(workflow_job_id)
        if entry is None:
            return
        entry.pool = entry.pool or pool
        entry.runner_job, entry.runner_job_created_at, entry.launch_error = name, at, None
        self._made_for[name] = workflow_job_id
        self._observe(entry, "queued_to_runner_job", pool, entry.queued_at, at)

    def launch_failed(self, workflow_job_id: int, *, error: str) -> None:
        entry = self._jobs.get(workflow_job_id)
        if entry is not None:
            entry.launch_error = error

    def runner_job_changed(self, before: RunnerJob | None, after: RunnerJob | None, *, now: float) -> None:
        """A runner Job changed (from the inventory): note its creation and when its pod runs."""
        if after is None:
            return
        entry = self._jobs.get(after.workflow_job_id)
        if entry is None:
            return
        if entry.runner_job is None:  # made by another replica, or before a restart
            entry.runner_job, entry.runner_job_created_at = after.name, after.created_at
            entry.pool, entry.launch_error = entry.pool or after.pool, None
            self._made_for[after.name] = entry.id
        started_running = after.ready and not after.finished and (before is None or not before.ready)
        if started_running and before is not None:  # first seen running in a list: when it began is unknown
            self._pod_running(entry, after.pool, now)

    def pod_changed(self, pod: dict[str, Any], *, now: float) -> None:
        """A runner Pod changed (from the pod watch): when it was scheduled, and when its runner runs."""
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        job_id = str(labels.get(manifests.JOB_ID_LABEL, ""))
        entry = self._jobs.get(int(job_id)) if job_id.isdigit() else None
        if entry is None:
            return
        if entry.pod_scheduled_at is None:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
                    entry.pod_scheduled_at = timestamp_or_none(condition.get("lastTransitionTime")) or now
        if failures.running(pod):
            self._pod_running(entry, str(labels.get(manifests.POOL_LABEL, entry.pool or "")), now)

    def _pod_running(self, entry: JobTimeline, pool: str, now: float) -> None:
        """The runner's pod runs (seen first by the pod watch or by the Job's ``status.ready``)."""
        if entry.pod_running_at is None:
            entry.pod_running_at = now
            self._observe(entry, "runner_job_to_pod_running", pool, entry.runner_job_created_at, now)

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _entry(self, workflow_job_id: int, *, repository: str, account: str) -> JobTimeline:
        entry = self._jobs.get(workflow_job_id)
        if entry is None:
            entry = self._jobs[workflow_job_id] = JobTimeline(
                id=workflow_job_id, repository=repository, account=account
            )
            while len(self._jobs) > self.capacity:
                _, dropped = self._jobs.popitem(last=False)
                if dropped.runner_name and self._by_runner.get(dropped.runner_name) == dropped.id:
                    del self._by_runner[dropped.runner_name]
                if dropped.runner_job and self._made_for.get(dropped.runner_job) == dropped.id:
                    del self._made_for[dropped.runner_job]
        return entry

    def _runner_pool(self, entry: JobTimeline) -> str | None:
        """The pool of the runner that took the job: only ghapp's runners count (its Job may be gone)."""
        if entry.runner_name is None:
            return None
        pool = self._pool_of_runner(entry.runner_name)
        if pool is None and entry.runner_name in self._made_for:
            pool = self._jobs[self._made_for[entry.runner_name]].pool
        return pool

    def _observe(
        self, entry: JobTimeline, histogram: str, pool: str, start: float | None, end: float | None
    ) -> None:
        if start is None or end is None or histogram in entry.observed:
            return
        entry.observed.add(histogram)
        metric = {
            "queued_to_runner_job": self._metrics.job_queued_to_runner_job,
            "runner_job_to_pod_running": self._metrics.job_runner_job_to_pod_running,
            "queued_to_started": self._metrics.job_queued_to_started,
            "duration": self._metrics.job_duration,
        }[histogram]
        metric.labels(pool).observe(max(0.0, end - start))
