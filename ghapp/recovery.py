"""Observe, then act: the one place a classified runner failure becomes a log line, a metric, an Event on
its Job, the pool's health — and a fresh runner for a workflow job that is still queued.

A replacement comes within seconds (a short backoff per attempt), at most `GHAPP_RUNNER_ATTEMPTS` runners
per workflow job (the attempt is an annotation of the Job, so it survives restarts); then ghapp gives up on
that job with an error saying why. Launches of a pool that is unhealthy are spaced out by the launcher
(`ghapp.health`), so a broken pool gets no storm of Jobs and burns no registration tokens.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ghapp import failures, manifests, planner
from ghapp.clock import Clock, format_timestamp
from ghapp.config import Settings
from ghapp.errors import GhappError
from ghapp.failures import Failure
from ghapp.github import GitHubClient
from ghapp.health import Health
from ghapp.inventory import Inventory, RunnerJob
from ghapp.kube import KubeClient
from ghapp.launcher import Launcher
from ghapp.metrics import Metrics
from ghapp.tasks import TaskSet

log = logging.getLogger(__name__)

REPLACE_BACKOFF: Final = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Seconds before replacing the runner of attempt 1, 2, 3, … (the first at once; the last one repeats)."""
GONE_TRIES: Final = 50
"""How often a replacement checks that the failed Job is gone (0.1 s apart) before it gives up."""


class Recovery:
    """Turns each runner failure into its actions, once per runner."""

    def __init__(
        self,
        *,
        settings: Settings,
        kube: KubeClient,
        github: GitHubClient,
        inventory: Inventory,
        launcher: Launcher,
        health: Health,
        metrics: Metrics,
        clock: Clock,
        tasks: TaskSet,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._github = github
        self._inventory = inventory
        self._launcher = launcher
        self.health = health
        self._metrics = metrics
        self._clock = clock
        self._tasks = tasks
        self._handled: dict[str, str] = {}  # uid of a runner Job → the reason it failed (once per runner)
        for pool in settings.pools:
            metrics.pool_healthy.labels(pool.name).set(1)

    # -- what the pod watcher reports ----------------------------------------------------------------------

    def runner_failed(self, job_name: str, job_uid: str, failure: Failure) -> None:
        """A runner failed: log, count, record an Event, update the pool's health, replace it if needed.

        Only for the Job of that uid as ghapp knows it: news about a Job ghapp deleted (its Pod lingers a
        moment) never counts against its replacement of the same name."""
        job = self._inventory.jobs.get(job_name)
        if job is None or job.uid != job_uid or job.uid in self._handled or job.deleting:
            return
        self._handled[job.uid] = failure.reason
        self._forget_old()
        log.warning(
            "runner %s of pool %s failed: %s: %s",
            job.name,
            job.pool,
            failure.reason,
            failure.message,
            extra={
                "pool": job.pool,
                "runner": job.name,
                "reason": failure.reason,
                "workflow_job_id": job.workflow_job_id,
            },
        )
        self._metrics.runner_failures.labels(job.pool, failure.reason).inc()
        self._pool_failed(job.pool, failure)
        self._tasks.spawn(self._act(job, failure), name=f"recover-{job.name}")

    def runner_progressed(self, job_name: str, pool: str, completed: bool) -> None:
        """A runner got running (or completed its job): the pool may be healthy again."""
        if self.health.progressed(pool, completed=completed, now=self._clock.now()):
            self._metrics.pool_healthy.labels(pool).set(1)
            log.info("pool %s is healthy again: runner %s got running", pool, job_name, extra={"pool": pool})

    async def verify_service_accounts(self) -> None:
        """At start: each pool's dedicated runner ServiceAccount must exist, else the pool is unhealthy."""
        for pool in self._settings.pools:
            plan = manifests.sample_plan(self._settings, pool)
            account = manifests.dedicated_service_account(manifests.runner_job(plan))
            if account is None:
                continue
            try:
                exists = (
                    await self._kube.get("serviceaccounts", account, namespace=plan.namespace) is not None
                )
            except GhappError as exc:
                log.warning("could not look up ServiceAccount %s/%s: %s", plan.namespace, account, exc)
                continue
            if not exists:
                failure = failures.missing_service_account(namespace=plan.namespace, account=account)
                log.error(
                    "pool %s cannot start runners: %s", pool.name, failure.message, extra={"pool": pool.name}
                )
                self._pool_failed(pool.name, failure, at_once=True)

    # -- the actions ---------------------------------------------------------------------------------------

    def _pool_failed(self, pool: str, failure: Failure, *, at_once: bool = False) -> None:
        if self.health.failed(pool, failure, now=self._clock.now(), at_once=at_once):
            self._metrics.pool_healthy.labels(pool).set(0)
            state = self.health.pools[pool]
            log.error(
                "pool %s is unhealthy: its runners keep failing: %s: %s; its launches back off",
                pool,
                failure.reason,
                failure.message,
                extra={"pool": pool, "reason": failure.reason, "failures_in_a_row": state.streak},
            )

    async def _act(self, job: RunnerJob, failure: Failure) -> None:
        await self._kube.record_event(self._event(job, failure))
        try:
            await self._replace(job, failure)
        except GhappError as exc:
            log.warning(
                "could not replace runner %s: %s; the reconciler will",
                job.name,
                exc,
                extra={"runner": job.name},
            )

    async def _replace(self, job: RunnerJob, failure: Failure) -> None:
        if job.warm:
            return  # it stood for no workflow job: the leader's next warm pass starts a fresh one
        attempts = self._settings.runner_attempts
        if job.attempt >= attempts:
            why = f"{job.attempt} runner(s) failed, the last: {failure.reason}: {failure.message}"
            self.health.give_up(job.workflow_job_id, why)
            log.error(
                "gave up starting runners for workflow job %d: %s",
                job.workflow_job_id,
                why,
                extra={
                    "pool": job.pool,
                    "runner": job.name,
                    "reason": failure.reason,
                    "workflow_job_id": job.workflow_job_id,
                },
            )
            return
        plan = planner.plan_again(
            self._settings,
            pool_name=job.pool,
            workflow_job_id=job.workflow_job_id,
            run_id=job.run_id,
            installation_id=job.installation_id,
            repository=job.repository,
            scope_key=job.scope,
            attempt=job.attempt + 1,
        )
        if plan is None:
            return
        await self._clock.sleep(REPLACE_BACKOFF[min(job.attempt, len(REPLACE_BACKOFF)) - 1])
        found = await self._github.workflow_job(
            installation_id=job.installation_id, repository=job.repository, job_id=job.workflow_job_id
        )
        status = found.get("status")
        if status != "queued":
            log.info(
                "workflow job is %s; its failed runner is not replaced", status, extra={"runner": job.name}
            )
            return
        # the failed runner may be registered (offline): a new one of the same name must not meet it
        runner = await self._github.find_runner(
            installation_id=plan.installation_id, scope=plan.scope, name=plan.name
        )
        if runner is not None and not await self._github.remove_runner(
            installation_id=plan.installation_id, scope=plan.scope, runner_id=runner.id
        ):
            return  # busy: it took a job after all
        await self._kube.delete("jobs", job.name, namespace=job.namespace)
        await self._kube.delete("secrets", job.name, namespace=job.namespace)
        self._inventory.forget(job.name)
        for _ in range(GONE_TRIES):
            if await self._kube.get("jobs", job.name, namespace=job.namespace) is None:
                break
            await self._clock.sleep(0.1)
        log.info(
            "replacing failed runner %s (attempt %d of %d)",
            job.name,
            plan.attempt,
            attempts,
            extra={"runner": job.name, "pool": job.pool, "reason": failure.reason},
        )
        self._launcher.submit(plan, received_at=self._clock.now())

    def _event(self, job: RunnerJob, failure: Failure) -> dict[str, Any]:
        """A Warning Event on the runner's Job: ``kubectl describe job`` shows why its runner failed."""
        now = format_timestamp(self._clock.now())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{job.name}.", "namespace": job.namespace},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "namespace": job.namespace,
                "uid": job.uid,
            },
            "reason": failures.EVENT_REASON,
            "message": failures.event_message(job.pool, failure),
            "type": "Warning",
            "source": {"component": "ghapp"},
            "reportingComponent": "ghapp",
            "reportingInstance": self._settings.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    def _forget_old(self) -> None:
        if len(self._handled) > 2 * len(self._inventory.jobs) + 100:
            known = {job.uid for job in self._inventory.jobs.values()}
            self._handled = {uid: r for uid, r in self._handled.items() if uid in known}
