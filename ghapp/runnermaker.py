"""Making one runner's objects: its credential from GitHub, its Job, then the Secret the Job owns.

Registration-token pools share one cached token per org / repo. JIT pools get one runner registration per
job from GitHub (``generate-jitconfig``), made only after checking the cluster has no runner Job for the
job yet, so that a redelivered webhook never registers (or replaces) a runner twice. Every step is
idempotent: the Job name is deterministic, and an object that exists already counts as done.
"""

from __future__ import annotations

import logging
from typing import Literal

from ghapp import manifests
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import GitHubError, RunnerNameTaken
from ghapp.github import DEFAULT_RUNNER_GROUP_ID, GitHubClient, JitConfig
from ghapp.inventory import Inventory
from ghapp.kube import KubeClient, age
from ghapp.limiter import Limiter
from ghapp.planner import RunnerPlan
from ghapp.sightings import Sightings

log = logging.getLogger(__name__)

Outcome = Literal["created", "exists", "failed", "skipped", "deferred"]


class RunnerMaker:
    """Creates the Job and Secret of one runner plan unless they exist (GitHub and Kubernetes I/O)."""

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        limiter: Limiter,
        clock: Clock,
        sightings: Sightings,
    ) -> None:
        self._settings = settings
        self._github = github
        self._kube = kube
        self._inventory = inventory
        self._limiter = limiter
        self._clock = clock
        self._sightings = sightings

    async def make(self, plan: RunnerPlan) -> Outcome:
        """``created``, or ``exists`` when this or another replica made it already. Once the Job exists the
        plan's capacity reservation ends (the Job counts itself)."""
        return await (self._jit(plan) if plan.pool.mode == "jit" else self._with_token(plan))

    async def _with_token(self, plan: RunnerPlan) -> Outcome:
        """Registration token: the org's or repo's cached token, the Job, then its Secret."""
        credential = await self._github.registration_token(
            installation_id=plan.installation_id, scope=plan.scope
        )
        job, created = await self._kube.create_job(manifests.runner_job(plan))
        self._inventory.observe(job)
        self._limiter.release(plan)  # the Job counts itself now
        if not created and await self._kube.get("secrets", plan.name, namespace=plan.namespace) is not None:
            return "exists"
        secret = manifests.runner_secret(plan, credential=credential, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created" if created else "exists"

    async def _jit(self, plan: RunnerPlan) -> Outcome:
        """JIT: check the cluster, register the runner, then the Job (with the runner id) and its Secret."""
        existing = await self._kube.get("jobs", plan.name, namespace=plan.namespace)
        if existing is not None:
            if await self._kube.get("secrets", plan.name, namespace=plan.namespace) is not None:
                return "exists"
            if age(existing.get("metadata") or {}, self._clock.now()) < self._settings.orphan_grace_seconds:
                return "exists"  # another replica's launch may be between its Job and its Secret
            # An earlier attempt died between Job and Secret: its JIT config is lost. Start over.
            log.warning("runner Job has no Secret; replacing it", extra={"job": plan.name})
            await self._kube.delete("jobs", plan.name, namespace=plan.namespace)
            self._inventory.forget(plan.name)
        jit = await self._jit_config(plan)
        if jit is None:
            return "exists"
        job, created = await self._kube.create_job(manifests.runner_job(plan, runner_id=jit.runner_id))
        self._inventory.observe(job)
        self._limiter.release(plan)  # the Job counts itself now
        if not created:
            # Another launch of the same job won the race; the runner registered here is surplus.
            await self._forget_runner(plan, jit.runner_id)
            return "exists"
        secret = manifests.runner_secret(plan, credential=jit.encoded, job_uid=job["metadata"]["uid"])
        await self._kube.create_secret(secret)
        return "created"

    async def _jit_config(self, plan: RunnerPlan) -> JitConfig | None:
        """One JIT runner named `plan.name`. If GitHub has a runner of that name (an earlier attempt died
        after registering it) and it is offline and idle, it is deleted and registered again — unless its
        Job exists by now (another replica's launch of the same job won): then None — or this process has
        seen it for less than `orphan_grace_seconds` (another replica may be between registering it and
        making its Job): then `RunnerNameTaken`, and a later attempt (the reconciler's) decides again."""
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
            if await self._kube.get("jobs", plan.name, namespace=plan.namespace) is not None:
                return None  # another replica registered it and has just made its Job: that launch won
            age = self._sightings.age(runner.id)
            if age < self._settings.orphan_grace_seconds:
                # another replica may have registered it a moment ago and be about to make its Job
                raise RunnerNameTaken(
                    f"runner {plan.name} exists in GitHub, offline, seen for {age:.0f}s only"
                    " (another replica may be starting it); not replacing it yet"
                )
            log.info("deleting the offline runner left by an earlier attempt", extra={"runner_id": runner.id})
            await self._github.delete_runner(
                installation_id=plan.installation_id, scope=plan.scope, runner_id=runner.id
            )
            self._sightings.forget(runner.id)
        return await generate()

    async def _forget_runner(self, plan: RunnerPlan, runner_id: int) -> None:
        try:
            await self._github.delete_runner(
                installation_id=plan.installation_id, scope=plan.scope, runner_id=runner_id
            )
        except GitHubError as exc:
            log.warning("could not delete a surplus JIT runner: %s", exc, extra={"runner_id": runner_id})
