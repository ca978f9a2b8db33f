"""Launching runners: dedupe → credential → Job → Secret owned by the Job. Idempotent end to end.

Registration-token pools share one cached token per org / repo. JIT pools get one runner registration per
job from GitHub (``generate-jitconfig``), made only after checking the cluster has no runner Job for the
job yet, so that a redelivered webhook never registers (or replaces) a runner twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from ghapp import logs, manifests
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import GhappError, GitHubError, RunnerGroupNotFound, RunnerNameTaken
from ghapp.github import DEFAULT_RUNNER_GROUP_ID, GitHubClient, JitConfig
from ghapp.kube import KubeClient
from ghapp.metrics import Metrics
from ghapp.planner import RunnerPlan
from ghapp.tasks import TaskSet

log = logging.getLogger(__name__)

Outcome = Literal["created", "exists", "failed", "skipped"]


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
        self._unknown_groups: set[tuple[str, str]] = set()

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
                outcome = await (self._create_jit(plan) if plan.pool.mode == "jit" else self._create(plan))
            except RunnerGroupNotFound as exc:
                self._metrics.jobs_skipped.labels("unknown-runner-group").inc()
                if (exc.org.lower(), exc.group.lower()) not in self._unknown_groups:
                    self._unknown_groups.add((exc.org.lower(), exc.group.lower()))
                    log.error(
                        "pool %s cannot start runners for %s: %s (pool setting runner_group)",
                        plan.pool.name,
                        exc.org,
                        exc,
                    )
                return LaunchResult("skipped", plan.name)
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
        if not created and await self._kube.get("secrets", plan.name, namespace=plan.namespace) is not None:
            return "exists"
        secret = manifests.runner_secret(plan, credential=credential, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created" if created else "exists"

    async def _create_jit(self, plan: RunnerPlan) -> Outcome:
        """JIT: check the cluster, register the runner, then the Job (with the runner id) and its Secret."""
        existing = await self._kube.get("jobs", plan.name, namespace=plan.namespace)
        if existing is not None:
            if await self._kube.get("secrets", plan.name, namespace=plan.namespace) is not None:
                return "exists"
            # An earlier attempt died between Job and Secret: its JIT config is lost. Start over.
            log.warning("runner Job has no Secret; replacing it", extra={"job": plan.name})
            await self._kube.delete("jobs", plan.name, namespace=plan.namespace)
        jit = await self._jit_config(plan)
        job, created = await self._kube.create_job(manifests.runner_job(plan, runner_id=jit.runner_id))
        if not created:
            # Another launch of the same job won the race; the runner registered here is surplus.
            await self._forget_runner(plan, jit.runner_id)
            return "exists"
        secret = manifests.runner_secret(plan, credential=jit.encoded, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created"

    async def _jit_config(self, plan: RunnerPlan) -> JitConfig:
        """One JIT runner named `plan.name`. If GitHub has a runner of that name (an earlier attempt died
        after registering it) and it is offline and idle, it is deleted and registered again."""
        if plan.scope.kind == "org" and plan.pool.runner_group:
            group_id = await self._github.runner_group_id(
                installation_id=plan.installation_id, org=plan.scope.owner, name=plan.pool.runner_group
            )
        else:
            group_id = DEFAULT_RUNNER_GROUP_ID

        async def generate() -> JitConfig:
            return await self._github.generate_jitconfig(
                installation_id=plan.installation_id,
                scope=plan.scope,
                name=plan.name,
                runner_group_id=group_id,
                labels=list(plan.pool.labels),
            )

        try:
            return await generate()
        except GitHubError as exc:
            if exc.status != 409:
                raise
        runner = await self._github.find_runner(
            installation_id=plan.installation_id, scope=plan.scope, name=plan.name
        )
        if runner is not None:
            if runner.busy or runner.status != "offline":
                state = "busy" if runner.busy else runner.status
                raise RunnerNameTaken(f"runner {plan.name} exists in GitHub and is {state}; not replacing it")
            log.info("deleting the offline runner left by an earlier attempt", extra={"runner_id": runner.id})
            await self._github.delete_runner(
                installation_id=plan.installation_id, scope=plan.scope, runner_id=runner.id
            )
        return await generate()

    async def _forget_runner(self, plan: RunnerPlan, runner_id: int) -> None:
        try:
            await self._github.delete_runner(
                installation_id=plan.installation_id, scope=plan.scope, runner_id=runner_id
            )
        except GitHubError as exc:
            log.warning("could not delete a surplus JIT runner: %s", exc, extra={"runner_id": runner_id})
