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
from ghapp.kube import KubeClient
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
    """Starts one ephemeral runner per plan; duplicates (same workflow job) are absorbed at every layer."""

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        metrics: Metrics,
        clock: Clock,
        tasks: TaskSet,
    ) -> None:
        self.settings = settings
        self._github = github
        self._kube = kube
        self._metrics = metrics
        self._clock = clock
        self._tasks = tasks
        self._inflight: dict[int, asyncio.Task[LaunchResult]] = {}

    def submit(self, plan: RunnerPlan, *, received_at: float) -> asyncio.Task[LaunchResult]:
        """Launch `plan` in the background; a launch of the same workflow job under way is reused."""
        running = self._inflight.get(plan.workflow_job_id)
        if running is not None:
            return running
        task = self._tasks.spawn(self.launch(plan, received_at=received_at), name=f"launch-{plan.name}")
        self._inflight[plan.workflow_job_id] = task
        task.add_done_callback(lambda _: self._inflight.pop(plan.workflow_job_id, None))
        return task

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
        if not created and await self._kube.get("secrets", plan.name) is not None:
            return "exists"
        secret = manifests.runner_secret(plan, credential=credential, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created" if created else "exists"
