"""Launching runners: dedupe → credential → Job → Secret owned by the Job. Idempotent end to end."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from ghapp import logs, manifests
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import GhappError
from ghapp.github import GitHubClient
from ghapp.inventory import Inventory
from ghapp.kube import KubeClient
from ghapp.limiter import Limiter
from ghapp.metrics import Metrics
from ghapp.planner import RunnerPlan
from ghapp.tasks import TaskSet

log = logging.getLogger(__name__)

Outcome = Literal["created", "exists", "failed"]


@dataclass(frozen=True, slots=True)
class LaunchResult:
    """What launching one runner came to."""

    outcome: Outcome
    job_name: str


class Launcher:
    """Starts one ephemeral runner per plan, within capacity; duplicates are absorbed at every layer.

    Layers of dedupe: a workflow job already launching or waiting here is ignored; the Job name is
    deterministic, so a second replica or a later delivery meets 409 AlreadyExists, which counts as done.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        limiter: Limiter,
        metrics: Metrics,
        clock: Clock,
        tasks: TaskSet,
    ) -> None:
        self.settings = settings
        self._github = github
        self._kube = kube
        self._inventory = inventory
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self._tasks = tasks
        self._inflight: dict[int, asyncio.Task[LaunchResult]] = {}
        self._waiting: dict[int, float] = {}  # workflow job id → when its webhook arrived
        self._launching: set[str] = set()  # runner names being created
        inventory.subscribe(self.pump)

    def submit(self, plan: RunnerPlan, *, received_at: float) -> None:
        """Launch `plan` now if its pool has room, else queue it; a job launching or waiting is ignored."""
        job_id = plan.workflow_job_id
        if job_id in self._inflight or job_id in self._waiting:
            return
        if self._limiter.has_room(plan.pool.name):
            self._limiter.reserve(plan)
            self._start(plan, received_at)
            return
        self._waiting[job_id] = received_at
        self._limiter.enqueue(plan)
        self._metrics.queue_length.labels(plan.pool.name).set(self._limiter.waiting(plan.pool.name))
        log.info("pool at capacity; job waits", extra={"pool": plan.pool.name, "job": plan.name})

    def cancel(self, workflow_job_id: int) -> None:
        """A waiting job no longer needs a runner (it completed or was cancelled)."""
        if self._waiting.pop(workflow_job_id, None) is not None:
            self._limiter.discard(workflow_job_id)
            self._update_queue_metrics()

    def pump(self) -> None:
        """Start waiting jobs for which there is room now (called whenever capacity may have freed)."""
        for plan in self._limiter.ready():
            received_at = self._waiting.pop(plan.workflow_job_id, self._clock.now())
            self._start(plan, received_at)
        self._update_queue_metrics()

    def _update_queue_metrics(self) -> None:
        for pool in self.settings.pools:
            self._metrics.queue_length.labels(pool.name).set(self._limiter.waiting(pool.name))

    def _start(self, plan: RunnerPlan, received_at: float) -> None:
        task = self._tasks.spawn(self.launch(plan, received_at=received_at), name=f"launch-{plan.name}")
        self._inflight[plan.workflow_job_id] = task
        self._launching.add(plan.name)

        def done(_: asyncio.Task[LaunchResult]) -> None:
            self._inflight.pop(plan.workflow_job_id, None)
            self._launching.discard(plan.name)
            self._limiter.release(plan)
            self.pump()

        task.add_done_callback(done)

    @property
    def busy(self) -> int:
        """Launches under way plus jobs waiting for capacity."""
        return len(self._inflight) + len(self._waiting)

    def is_known(self, workflow_job_id: int) -> bool:
        """True if this job is launching or waiting here."""
        return workflow_job_id in self._inflight or workflow_job_id in self._waiting

    def is_launching(self, name: str) -> bool:
        """True while the runner called `name` is being created here (its objects may be half made)."""
        return name in self._launching

    async def launch(self, plan: RunnerPlan, *, received_at: float) -> LaunchResult:
        """Create the runner's Job and Secret unless they exist; GitHub or Kubernetes failures are logged."""
        with logs.bound(
            installation_id=plan.installation_id,
            repository=plan.repository,
            workflow_job_id=plan.workflow_job_id,
            pool=plan.pool.name,
        ):
            try:
                outcome = await self._create(plan)
            except GhappError as exc:
                log.error("could not start a runner: %s", exc)
                outcome = "failed"
            self._metrics.runners_launched.labels(plan.pool.name, outcome).inc()
            if outcome == "created":
                self._metrics.launch_seconds.labels(plan.pool.name).observe(self._clock.now() - received_at)
                log.info("runner Job created", extra={"job": plan.name, "scope": plan.scope.key})
            elif outcome == "exists":
                log.info("runner Job exists already; nothing to do", extra={"job": plan.name})
            return LaunchResult(outcome, plan.name)

    async def _create(self, plan: RunnerPlan) -> Outcome:
        credential = await self._github.registration_token(
            installation_id=plan.installation_id, scope=plan.scope
        )
        job, created = await self._kube.create_job(manifests.runner_job(plan))
        self._inventory.observe(job)
        if not created and await self._kube.get("secrets", plan.name) is not None:
            return "exists"
        secret = manifests.runner_secret(plan, credential=credential, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created" if created else "exists"
