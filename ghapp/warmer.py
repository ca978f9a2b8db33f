"""Warm pools, run by the leader's reconciler: keep each warm entry's idle runners topped up, remove the
surplus, and replace runners that have been idle too long.

Everything is derived from GitHub's runner list and the cluster's runner Jobs on every pass — nothing lives
only in memory — so a new leader picks up where the old one stopped: it neither doubles nor drops the
buffer, and two leaders filling the same slot meet 409 AlreadyExists (warm names are deterministic).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from ghapp import planner, policy, warm
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import GhappError
from ghapp.github import GitHubClient
from ghapp.installations import Installations
from ghapp.inventory import Inventory, RunnerJob
from ghapp.kube import KubeClient
from ghapp.launcher import Launcher
from ghapp.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WarmReport:
    """What one pass did for the warm entries."""

    started: int = 0
    removed: int = 0
    recycled: int = 0
    errors: list[str] = field(default_factory=list)


class Warmer:
    """Tops up every warm entry of every pool once per reconcile pass (the leader's)."""

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        launcher: Launcher,
        installations: Installations,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._github = github
        self._kube = kube
        self._inventory = inventory
        self._launcher = launcher
        self._installations = installations
        self._clock = clock
        self._metrics = metrics
        self._deleted: frozenset[str] = frozenset()
        self._pending: dict[str, tuple[str, str]] = {}  # warm launches started here → (pool, scope key)

    def manages(self, pool: str, scope_key: str) -> bool:
        """Whether the idle runners of `pool` in a scope are the warm buffer's (so only this module removes
        them, keeping `min_idle` of them)."""
        return any(
            p.name == pool and entry.scope_key.lower() == scope_key.lower()
            for p in self._settings.pools
            for entry in p.warm
        )

    async def converge(
        self, *, queued: Counter[tuple[str, str]], incomplete: set[str], deleted: frozenset[str] = frozenset()
    ) -> WarmReport:
        """One pass over every warm entry. `queued` counts the queued jobs the scan found per (pool, scope
        key); scopes in `incomplete` were not scanned in full (their queued jobs are unknown, so nothing
        is removed there as surplus); `deleted` names Jobs this pass deleted (their slots are not reused
        while the API server may still be deleting them)."""
        report = WarmReport()
        self._deleted = deleted
        targets = warm.targets(self._settings.pools, self._clock.now())
        if not targets:
            return report
        try:
            installations = {i.account.lower(): i for i in await self._github.installations()}
        except GhappError as exc:
            report.errors.append(f"warm: listing the App's installations failed: {exc}")
            log.warning("warm pools: listing the App's installations failed: %s", exc)
            return report
        waiting = Counter({(pool, key.lower()): n for (pool, key), n in queued.items()})
        unknown = {key.lower() for key in incomplete}
        for target in targets:
            scope = planner.RunnerScope.parse(target.entry.scope_key)
            assert scope is not None  # the config validated the entry
            self._metrics.warm_min_idle.labels(target.pool.name, scope.key).set(target.min_idle)
            refusal = await self._refusal(target.entry.account)
            if refusal is not None:
                report.errors.append(f"warm {target.pool.name} {scope.key}: {refusal}")
                log.warning("warm pool %s: no runners kept for %s: %s", target.pool.name, scope.key, refusal)
                continue
            installation = installations.get(target.entry.account.lower())
            if (
                installation is None
                or installation.suspended
                or self._installations.out_of_service(installation.id)
            ):
                report.errors.append(
                    f"warm {target.pool.name} {scope.key}: the App is not installed on {target.entry.account}"
                )
                log.warning(
                    "warm pool %s: the App has no working installation on %s; no runners kept there",
                    target.pool.name,
                    target.entry.account,
                )
                continue
            try:
                await self._entry(target, scope, installation.id, waiting, unknown, report)
            except GhappError as exc:
                report.errors.append(f"warm {target.pool.name} {scope.key}: {exc}")
                log.warning("warm pool %s, %s: %s", target.pool.name, scope.key, exc)
        return report

    async def _refusal(self, account: str) -> str | None:
        """Why the account rule (GHAPP_ALLOWED_ACCOUNTS, else the App's owner) refuses `account`, or None:
        a warm entry gets no runners that its account's jobs could not get either."""
        allowed = self._settings.allowed_accounts
        owner = None if allowed else await self._github.app_owner()
        verdict = policy.account_verdict(account, allowed=allowed, app_owner=owner)
        return verdict.reason if verdict is not None else None

    async def _entry(
        self,
        target: warm.Target,
        scope: planner.RunnerScope,
        installation_id: int,
        queued: Counter[tuple[str, str]],
        incomplete: set[str],
        report: WarmReport,
    ) -> None:
        pool, key, now = target.pool, scope.key.lower(), self._clock.now()
        registered = {
            str(r.get("name")): r
            for r in await self._github.runners(installation_id=installation_id, scope=scope)
        }
        idle: list[RunnerJob] = []
        starting = 0
        for job in self._inventory.jobs.values():
            if not (job.active and job.pool == pool.name and job.scope.lower() == key):
                continue
            runner = registered.get(job.name)
            if runner is None or (runner.get("status") != "online" and not runner.get("busy")):
                starting += 1  # its pod is starting (a JIT runner is registered, offline, before it runs)
            elif not runner.get("busy"):
                idle.append(job)
        # launches under way here whose Job the inventory does not show yet
        self._pending = {n: p for n, p in self._pending.items() if self._launcher.is_launching(n)}
        starting += sum(
            1
            for n, place in self._pending.items()
            if place == (pool.name, key) and n not in self._inventory.jobs
        )
        idle.sort(key=lambda job: job.created_at)
        supply = warm.Supply(idle=len(idle), starting=starting, queued=queued[(pool.name, key)])
        self._metrics.warm_idle.labels(pool.name, scope.key).set(supply.idle + supply.starting)
        removed: set[str] = set()
        if key not in incomplete:  # else the queued jobs are unknown: nothing is surplus for sure
            extra = warm.surplus(target.min_idle, supply)
            old_enough = [j for j in idle if now - j.created_at > self._settings.idle_grace_seconds]
            for job in old_enough[:extra]:
                if await self._remove(job, scope, installation_id):
                    removed.add(job.name)
                    report.removed += 1
                    log.info("removed a surplus idle runner", extra={"job": job.name, "pool": pool.name})
        for job in idle:
            if (
                job.name not in removed
                and now - job.created_at >= pool.warm_recycle_seconds
                and await self._remove(job, scope, installation_id)
            ):
                removed.add(job.name)
                report.recycled += 1
                log.info("replaced a runner idle for too long", extra={"job": job.name, "pool": pool.name})
        supply = warm.Supply(idle=len(idle) - len(removed), starting=starting, queued=supply.queued)
        need = warm.deficit(target.min_idle, supply)
        if not need:
            return
        taken = set(self._inventory.jobs) | set(registered) | set(self._pending) | removed | self._deleted
        for name in warm.free_slots(
            prefix=self._settings.runner_prefix, pool=pool.name, scope_key=key, taken=taken, count=need
        ):
            plan = planner.warm_plan(
                self._settings, pool, scope=scope, installation_id=installation_id, name=name
            )
            if not self._launcher.start_warm(plan):
                log.info(
                    "no capacity to refill the warm pool (queued jobs go first)",
                    extra={"pool": pool.name, "scope": scope.key},
                )
                return
            self._pending[name] = (pool.name, key)
            report.started += 1

    async def _remove(self, job: RunnerJob, scope: planner.RunnerScope, installation_id: int) -> bool:
        """Deregister an idle runner and delete its Job — never a busy one: its state is asked for again by
        name, and GitHub refuses (422) to delete a runner that took a job meanwhile."""
        found = await self._github.find_runner(installation_id=installation_id, scope=scope, name=job.name)
        if found is None or found.busy or found.status != "online":
            return False
        if not await self._github.remove_runner(
            installation_id=installation_id, scope=scope, runner_id=found.id
        ):
            return False
        await self._kube.delete("jobs", job.name, namespace=job.namespace, uid=job.uid)
        self._inventory.forget(job.name)
        return True
