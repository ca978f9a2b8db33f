"""Periodic convergence (run by the leader): nothing lost, nothing left behind.

One pass:
1. redeliver webhook deliveries that failed (the cheap, primary recovery path);
2. find queued jobs of recently active repositories that have no runner Job, and launch them;
3. per runner scope: remove surplus idle runners, Jobs that failed or never registered, runners that have no
   Job, and Secrets and Jobs that lost their counterpart.
Every step is idempotent and safe to repeat, on this replica or another.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ghapp import planner
from ghapp.activity import Activity
from ghapp.admission import Admission
from ghapp.budget import Budget, RateWindow, ScanBudgets
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import BudgetSpent, GhappError, GitHubError, InstallationGone, InvalidPayload
from ghapp.github import GitHubClient
from ghapp.installations import Installations
from ghapp.inventory import Inventory, RunnerJob
from ghapp.kube import KubeClient, age
from ghapp.launcher import Launcher
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob
from ghapp.planner import RunnerScope
from ghapp.recent import RecentMap
from ghapp.sightings import Sightings
from ghapp.warmer import Warmer

log = logging.getLogger(__name__)

RECOVERED_EVENTS = frozenset({"workflow_job", "installation"})
SCANNED_RUNS = ("queued", "in_progress")
"""Runs whose jobs may wait: a run is in progress as soon as one of its jobs starts, while others queue."""
MAX_REDELIVERIES = 5
"""Redeliveries of one GUID before ghapp leaves it to the queued-job scan."""
REMEMBERED_DELIVERIES = 10_000
"""Most delivery GUIDs whose redeliveries are counted at once; each is forgotten once it has not shown up
among failed deliveries for GHAPP_REDELIVERY_LOOKBACK_SECONDS, or as soon as one of its attempts succeeds."""
SECRET_GRACE = 120.0
"""A runner Job still without its Secret after this long cannot start: it is deleted (and made again)."""


@dataclass(slots=True)
class PassReport:
    """What one reconcile pass did."""

    redelivered: int = 0
    launched: int = 0
    surplus_removed: int = 0
    warm_started: int = 0
    """Warm runners started to refill a buffer."""
    warm_recycled: int = 0
    """Warm runners idle longer than the pool's ``warm_recycle_seconds``, removed (and replaced)."""
    orphan_job_deleted: int = 0
    orphan_runner_removed: int = 0
    orphan_secret_deleted: int = 0
    queued_seen: int = 0
    repositories_deferred: int = 0
    """Repositories left for the next pass because this pass's rate-limit budget (or the scan's half of the
    pass's time) was spent."""
    repositories_dropped: int = 0
    """Repositories GitHub answered 404 for: no longer scanned."""
    installations_retired: int = 0
    """Installations found deleted or suspended (token refused): their runners removed."""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fixes(self) -> dict[str, int]:
        """What the pass fixed: action → count (every action, zeros included)."""
        return {action: getattr(self, action) for action in FIXES}


FIXES = (
    "redelivered",
    "launched",
    "surplus_removed",
    "orphan_job_deleted",
    "orphan_runner_removed",
    "orphan_secret_deleted",
)
"""The report's counts that are repairs (``ghapp_reconcile_fixes_total``)."""


@dataclass(slots=True)
class _Scan:
    """What the queued-job scan learned: queued jobs per (pool, scope), and which scopes it saw in full."""

    queued: Counter[tuple[str, str]] = field(default_factory=Counter)
    complete: set[str] = field(default_factory=set)
    incomplete: set[str] = field(default_factory=set)
    installations: dict[str, int] = field(default_factory=dict)


class Reconciler:
    """Brings the cluster and GitHub's runner lists in line with GitHub's queued jobs."""

    def __init__(
        self,
        *,
        settings: Settings,
        admission: Admission,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        launcher: Launcher,
        activity: Activity,
        installations: Installations,
        clock: Clock,
        metrics: Metrics,
        sightings: Sightings,
        warmer: Warmer,
    ) -> None:
        self._settings = settings
        self._warmer = warmer
        self._admission = admission
        self._github = github
        self._kube = kube
        self._inventory = inventory
        self._launcher = launcher
        self._activity = activity
        self._installations = installations
        self._clock = clock
        self._metrics = metrics
        self._sightings = sightings
        self._ended: set[str] = set()  # runner Jobs this pass deleted: their runners are ghapp's, and dead
        self._deliveries_since: float | None = None
        self._redeliveries: RecentMap[str, int] = RecentMap(
            clock=clock, ttl=settings.redelivery_lookback_seconds, max_entries=REMEMBERED_DELIVERIES
        )
        self.last_pass_at: float | None = None
        self.last_report: PassReport | None = None
        """The latest pass this replica ran, and when it ended."""
        self._budgets = ScanBudgets(share=settings.reconcile_rate_share)
        self._scan_from: dict[int, str] = {}  # installation → the repository its next scan starts with
        self._pass_started = 0.0

    async def run_forever(self) -> None:
        """A pass every `reconcile_interval_seconds` until cancelled; one broken pass does not end it."""
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # a bug must not silently stop recovery for good
                self._metrics.reconcile_passes.labels("failed").inc()
                log.exception("reconcile pass broke; the next pass runs as planned")
            await self._clock.sleep(self._settings.reconcile_interval_seconds)

    async def reconcile_once(self) -> PassReport:
        """One full pass; a failing step is logged and the others still run. A pass still running after
        `reconcile_timeout_seconds` (a call that hangs: a list that never answers) is cut off there."""
        report = PassReport()
        started = self._pass_started = self._clock.now()
        limit = self._settings.reconcile_timeout_seconds
        self._ended.clear()
        try:
            async with self._clock.timeout(limit):
                await self._steps(report)
        except TimeoutError:
            report.errors.append(f"pass cut off after {limit:g} s")
            log.warning("reconcile pass cut off after %g s; the next pass runs as planned", limit)
            outcome = "timeout"
        else:
            outcome = "failed" if report.errors else "ok"
        self._metrics.reconcile_seconds.observe(self._clock.now() - started)
        self.last_pass_at, self.last_report = self._clock.now(), report
        self._metrics.reconcile_passes.labels(outcome).inc()
        for action, count in report.as_dict().items():
            if action in FIXES and count:
                self._metrics.reconcile_fixes.labels(action).inc(count)
        log.info("reconcile pass done", extra={k: v for k, v in report.as_dict().items() if v})
        return report

    async def _steps(self, report: PassReport) -> None:
        if not self._inventory.synced.is_set():
            await self._inventory.sync()
        for step in (self._redeliver, self._converge):
            try:
                await step(report)
            except GhappError as exc:
                report.errors.append(f"{step.__name__.strip('_')}: {exc}")
                log.warning("reconcile step failed: %s", exc)

    # -- 1. failed deliveries --------------------------------------------------------------------------

    async def _redeliver(self, report: PassReport) -> None:
        now = self._clock.now()
        since = (
            self._deliveries_since - 60
            if self._deliveries_since is not None
            else now - self._settings.redelivery_lookback_seconds
        )
        deliveries = await self._github.deliveries(since=since)
        self._deliveries_since = now
        attempts: dict[str, list[dict[str, Any]]] = {}
        for delivery in deliveries:
            attempts.setdefault(str(delivery.get("guid")), []).append(delivery)
        for guid, tries in attempts.items():
            if any(200 <= int(t.get("status_code") or 0) < 300 for t in tries):
                self._redeliveries.pop(guid)
                continue
            if tries[0].get("event") not in RECOVERED_EVENTS:
                continue
            redelivered = self._redeliveries.get(guid, 0)
            if redelivered >= MAX_REDELIVERIES:
                self._redeliveries.set(guid, redelivered)  # kept while its failures still show up
                continue
            newest = max(tries, key=lambda t: int(t.get("id") or 0))
            await self._github.redeliver(int(newest["id"]))
            self._redeliveries.set(guid, redelivered + 1)
            report.redelivered += 1
            log.info("redelivered a failed webhook delivery", extra={"delivery_id": guid})
        self._redeliveries.prune()

    @property
    def remembered_deliveries(self) -> int:
        """Delivery GUIDs whose redeliveries are being counted (at most `REMEMBERED_DELIVERIES`)."""
        return len(self._redeliveries)

    # -- 2 and 3. queued jobs, runners, orphans ----------------------------------------------------------

    async def _converge(self, report: PassReport) -> None:
        await self._finish_retirements()
        scan = await self._scan_queued(report)
        scopes = dict(scan.installations)
        for job in self._inventory.jobs.values():
            scopes.setdefault(job.scope, job.installation_id)
        for key, installation_id in scopes.items():
            scope = RunnerScope.parse(key)
            if scope is None or self._installations.out_of_service(installation_id):
                continue
            try:
                await self._tidy_scope(scope, installation_id, scan, report)
            except InstallationGone as exc:
                await self._retire(exc, report)
            except GhappError as exc:
                report.errors.append(f"scope {key}: {exc}")
                log.warning("reconciling runners of %s failed: %s", key, exc)
        warmed = await self._warmer.converge(
            queued=scan.queued, incomplete=scan.incomplete, deleted=frozenset(self._ended)
        )
        report.warm_started += warmed.started
        report.warm_recycled += warmed.recycled
        report.surplus_removed += warmed.removed
        report.errors.extend(warmed.errors)
        await self._tidy_secrets(report)

    async def _finish_retirements(self) -> None:
        """Out-of-service installations whose runner Jobs are still here (a removal failed or a runner was
        busy): try again."""
        left = {job.installation_id for job in self._inventory.jobs.values() if job.active}
        for installation_id, retired in self._installations.retired().items():
            if installation_id in left:
                await self._installations.retire(installation_id, reason=retired.reason)

    async def _retire(self, exc: InstallationGone, report: PassReport) -> None:
        if not self._installations.out_of_service(exc.installation_id):
            report.installations_retired += 1
        await self._installations.retire(exc.installation_id, reason=exc.reason)

    def _targets(self) -> dict[int, set[str]]:
        now = self._clock.now()
        targets: dict[int, set[str]] = {}
        for installation_id, repository in self._activity.recent(
            now=now, ttl=self._settings.activity_ttl_seconds
        ):
            targets.setdefault(installation_id, set()).add(repository)
        for job in self._inventory.jobs.values():
            if job.repository and not self._activity.gone(
                installation_id=job.installation_id, repository=job.repository
            ):
                targets.setdefault(job.installation_id, set()).add(job.repository)
        return targets

    async def _scan_queued(self, report: PassReport) -> _Scan:
        """Every installation's targets, `scan_concurrency` repositories at a time over all of them."""
        scan = _Scan()
        slots = asyncio.Semaphore(self._settings.scan_concurrency)

        async def scan_installation(installation_id: int, repositories: list[str]) -> None:
            try:
                await self._scan_installation(installation_id, repositories, scan, report, slots)
            except GhappError as exc:  # reported here, so that it stops neither the others nor the pass
                report.errors.append(f"scan of installation {installation_id}: {exc}")
                log.warning(
                    "scanning an installation failed: %s", exc, extra={"installation_id": installation_id}
                )

        async with asyncio.TaskGroup() as group:
            for installation_id, repositories in self._targets().items():
                if not self._installations.out_of_service(installation_id):
                    group.create_task(scan_installation(installation_id, sorted(repositories)))
        return scan

    async def _scan_installation(
        self,
        installation_id: int,
        repositories: list[str],
        scan: _Scan,
        report: PassReport,
        slots: asyncio.Semaphore,
    ) -> None:
        """Scan `repositories`, starting where the last pass ran out of budget, within this pass's budget."""
        bucket = str(installation_id)
        try:
            window = await self._rate_window(installation_id)
        except InstallationGone as exc:
            await self._retire(exc, report)
            return
        budget = self._budgets.for_pass(installation_id, window, now=self._clock.now())
        try:
            await self._scan_in_order(installation_id, repositories, scan, report, budget, slots)
        finally:
            window = self._github.rate_limits.window(bucket)
            self._budgets.record(installation_id, window, budget)
            self._metrics.scan_budget_remaining.labels(bucket).set(
                self._budgets.allowance(installation_id, window, now=self._clock.now())
            )
        for repository in repositories:
            owner = repository.split("/", 1)[0]
            # a repository not scanned in full leaves its scopes' queued counts unknown
            if repository not in scan.complete:
                scan.incomplete.update({f"org:{owner}", f"repo:{repository}"})

    async def _rate_window(self, installation_id: int) -> RateWindow | None:
        """The installation's rate-limit window as GitHub last described it; when it has not (this process's
        first pass) or that window has reset, asked of GitHub, so that the budget of a pass follows the
        installation's own limit (up to 15,000 an hour) and what it has left from the start."""
        window = self._github.rate_limits.window(str(installation_id))
        if window is not None and window.reset_at > self._clock.now():
            return window
        try:
            return await self._github.rate_window(installation_id=installation_id)
        except InstallationGone:
            raise
        except GhappError as exc:
            log.warning(
                "GitHub's rate limit of an installation unknown; its scan assumes GitHub's minimum: %s",
                exc,
                extra={"installation_id": installation_id},
            )
            return window

    async def _scan_in_order(
        self,
        installation_id: int,
        repositories: list[str],
        scan: _Scan,
        report: PassReport,
        budget: Budget,
        slots: asyncio.Semaphore,
    ) -> None:
        """Each repository as a slot frees up, in turn from where the last pass stopped. When the budget runs
        out (each request takes its share before it is sent, so listings made at once never overdraw it), or
        the scan has taken half the pass's time (`reconcile_timeout_seconds`: the pass's other steps get the
        rest), the rest wait for the next pass, which starts with the first of them."""
        start = bisect.bisect_left(repositories, self._scan_from.pop(installation_id, ""))
        order = repositories[start:] + repositories[:start]
        spent_at: list[int] = []  # positions in `order` whose scan found the budget or the time spent
        out_of_time = False
        gone: list[InstallationGone] = []
        scan_until = self._pass_started + self._settings.reconcile_timeout_seconds / 2

        async def scan_one(index: int, repository: str) -> None:
            nonlocal out_of_time
            async with slots:
                if spent_at or gone:
                    return
                if self._clock.now() >= scan_until:
                    out_of_time = True
                    spent_at.append(index)
                    return
                try:
                    await self._scan_repository(installation_id, repository, scan, report, budget)
                except InstallationGone as exc:
                    gone.append(exc)
                except BudgetSpent:
                    spent_at.append(index)
                except GhappError as exc:
                    report.errors.append(f"scan {repository}: {exc}")
                    log.warning("scanning %s for queued jobs failed: %s", repository, exc)

        try:
            async with asyncio.TaskGroup() as group:
                for index, repository in enumerate(order):
                    group.create_task(scan_one(index, repository))
        except asyncio.CancelledError:  # the pass is cut off: the next one goes on from here
            left = next((repository for repository in order if repository not in scan.complete), None)
            if left is not None:
                self._scan_from[installation_id] = left
            raise
        waiting: list[str] = []
        if spent_at:
            first = min(spent_at)
            waiting = [repository for repository in order[first:] if repository not in scan.complete]
        self._metrics.scan_repositories_waiting.labels(str(installation_id)).set(len(waiting))
        if gone:
            await self._retire(gone[0], report)
        elif spent_at:
            self._scan_from[installation_id] = order[first]
            report.repositories_deferred += len(waiting)
            log.warning(
                "%s of this pass spent; %d repositories wait for the next pass",
                "time" if out_of_time else "rate-limit budget",
                len(waiting),
                extra={"installation_id": installation_id, "spent": budget.spent},
            )

    async def _scan_repository(
        self, installation_id: int, repository: str, scan: _Scan, report: PassReport, budget: Budget
    ) -> None:
        runs: dict[int, dict[str, Any]] = {}
        try:
            for status in SCANNED_RUNS:
                for run in await self._github.workflow_runs(
                    installation_id=installation_id, repository=repository, status=status, budget=budget
                ):
                    runs.setdefault(int(run["id"]), run)
        except GitHubError as exc:
            if not _not_found(exc):
                raise
            self._drop(installation_id, repository, report)
        for run_id, run in runs.items():
            try:
                jobs = await self._github.run_jobs(
                    installation_id=installation_id, repository=repository, run_id=run_id, budget=budget
                )
            except GitHubError as exc:
                if not _not_found(exc):
                    raise
                continue  # the run was deleted meanwhile: none of its jobs waits
            for job in jobs:
                if job.get("status") == "queued":
                    await self._queued_job(installation_id, run, job, scan, report)
        scan.complete.add(repository)

    def _drop(self, installation_id: int, repository: str, report: PassReport) -> None:
        """GitHub says the repository is not there (deleted, renamed, transferred, or no longer granted to
        the installation): stop scanning it until a job is planned there again."""
        self._activity.drop(installation_id=installation_id, repository=repository, now=self._clock.now())
        self._metrics.repositories_dropped.inc()
        report.repositories_dropped += 1
        log.warning(
            "GitHub does not know %s (404); it is no longer scanned",
            repository,
            extra={"installation_id": installation_id, "repository": repository},
        )

    async def _queued_job(
        self, installation_id: int, run: dict[str, Any], job: dict[str, Any], scan: _Scan, report: PassReport
    ) -> None:
        payload = {
            "action": "queued",
            "workflow_job": job,
            "repository": run.get("repository"),
            "installation": {"id": installation_id},
        }
        try:
            workflow_job = WorkflowJob.from_payload(payload)
        except InvalidPayload as exc:
            log.warning("queued job unusable: %s", exc)
            return
        plan = await self._admission.plan(workflow_job)
        if not isinstance(plan, planner.RunnerPlan):
            return
        self._activity.touch(
            installation_id=installation_id,
            repository=workflow_job.repository.full_name,
            now=self._clock.now(),
        )
        report.queued_seen += 1
        scan.queued[(plan.pool.name, plan.scope.key)] += 1
        scan.installations.setdefault(plan.scope.key, installation_id)
        existing = self._inventory.jobs.get(plan.name)
        if existing is not None and existing.active:
            return
        if self._launcher.is_known(workflow_job.id):
            return
        if existing is not None:
            # its runner Job ran (or failed) without taking this job: make room for a fresh one next pass
            if await self._delete_job(existing):
                report.orphan_job_deleted += 1
            return
        self._launcher.submit(plan, received_at=self._clock.now())
        report.launched += 1
        log.info("queued job had no runner; launching one", extra={"workflow_job_id": workflow_job.id})

    async def _tidy_scope(
        self, scope: RunnerScope, installation_id: int, scan: _Scan, report: PassReport
    ) -> None:
        now = self._clock.now()
        prefix = f"{self._settings.runner_prefix}-"
        registered = {
            str(r.get("name")): r
            for r in await self._github.runners(installation_id=installation_id, scope=scope)
            if str(r.get("name", "")).startswith(prefix)
        }
        jobs = {j.name: j for j in self._inventory.jobs.values() if j.scope == scope.key and not j.deleting}

        # runners that have no Job (their pod is gone) and are offline — and have been for a while: a JIT
        # runner is registered before its Job is made, maybe by another replica a moment ago
        for name, runner in registered.items():
            orphan = name not in jobs and runner.get("status") == "offline"
            if (
                orphan
                and not self._launcher.is_launching(name)
                and (
                    name in self._ended
                    or self._sightings.age(int(runner["id"])) >= self._settings.orphan_grace_seconds
                )
            ):
                removed = await self._github.remove_runner(
                    installation_id=installation_id, scope=scope, runner_id=int(runner["id"])
                )
                self._sightings.forget(int(runner["id"]))
                if removed:
                    report.orphan_runner_removed += 1
                    log.info("removed an offline runner that has no Job", extra={"runner_name": name})

        # Jobs whose pod failed, or whose runner never came online in time (a JIT runner is registered
        # before its pod starts, so "registered but offline and idle" counts as never started)
        for job in list(jobs.values()):
            seen = registered.get(job.name)
            never_started = (
                job.active
                and (seen is None or (seen.get("status") == "offline" and not seen.get("busy")))
                and now - job.created_at > self._settings.registration_timeout_seconds
            )
            if not (job.failed or never_started):
                continue
            runner_id = int(seen["id"]) if seen is not None and not seen.get("busy") else None
            if not job.failed:
                # a listing paged by offset over a changing list can miss a runner: ask for it by name
                found = await self._github.find_runner(
                    installation_id=installation_id, scope=scope, name=job.name
                )
                if found is not None and (found.busy or found.status != "offline"):
                    log.info("a runner the listing missed is alive; its Job stays", extra={"job": job.name})
                    continue
                runner_id = found.id if found is not None else None
            await self._remove(job, runner_id, scope, installation_id)
            report.orphan_job_deleted += 1
            del jobs[job.name]
            log.info(
                "deleted a runner Job that failed or never registered",
                extra={"job": job.name, "failed": job.failed},
            )

        # idle runners beyond the queued jobs they could take
        if scope.key in scan.incomplete:
            return
        idle: dict[str, list[RunnerJob]] = {}
        for name, runner in registered.items():
            candidate = jobs.get(name)
            if (
                candidate is not None
                and candidate.active
                and runner.get("status") == "online"
                and not runner.get("busy")
                and now - candidate.created_at > self._settings.idle_grace_seconds
            ):
                idle.setdefault(candidate.pool, []).append(candidate)
        for pool, candidates in idle.items():
            if self._warmer.manages(pool, scope.key):
                continue  # the warm buffer: `Warmer` keeps min_idle of them and removes the rest
            surplus = len(candidates) - scan.queued[(pool, scope.key)]
            for job in sorted(candidates, key=lambda j: j.created_at)[: max(0, surplus)]:
                runner_id = int(registered[job.name]["id"])
                if not await self._github.remove_runner(
                    installation_id=installation_id, scope=scope, runner_id=runner_id
                ):
                    continue  # it took a job meanwhile (422): never kill a busy runner
                await self._delete_job(job)
                report.surplus_removed += 1
                log.info("removed a surplus idle runner", extra={"job": job.name, "pool": pool})

    async def _remove(
        self, job: RunnerJob, runner_id: int | None, scope: RunnerScope, installation_id: int
    ) -> None:
        """Deregister a Job's idle runner (GitHub refuses a busy one), then delete the Job."""
        if runner_id is not None:
            await self._github.remove_runner(
                installation_id=installation_id, scope=scope, runner_id=runner_id
            )
        await self._delete_job(job)

    async def _delete_job(self, job: RunnerJob) -> bool:
        """Delete the very Job `job` describes (not one made again under its name since); False if gone."""
        deleted = await self._kube.delete("jobs", job.name, namespace=job.namespace, uid=job.uid)
        self._inventory.forget(job.name, uid=job.uid)
        self._ended.add(job.name)
        return deleted

    async def _tidy_secrets(self, report: PassReport) -> None:
        for namespace in self._inventory.namespaces:
            await self._tidy_secrets_in(namespace, report)

    async def _tidy_secrets_in(self, namespace: str, report: PassReport) -> None:
        secrets, _ = await self._kube.list("secrets", namespace=namespace)
        now = self._clock.now()
        names = set()
        for secret in secrets:
            metadata = secret.get("metadata") or {}
            name = str(metadata.get("name"))
            names.add(name)
            if await self._secret_orphaned(metadata, namespace, now) and await self._kube.delete(
                "secrets", name, namespace=namespace, uid=str(metadata.get("uid") or "") or None
            ):
                report.orphan_secret_deleted += 1
                log.info("deleted a runner Secret whose Job is gone", extra={"secret": name})
        for job in _without(self._inventory.jobs.values(), names):
            if (
                job.namespace == namespace
                and job.active
                and now - job.created_at > SECRET_GRACE
                and not self._launcher.is_launching(job.name)
                # made since the list above?
                and await self._kube.get("secrets", job.name, namespace=namespace) is None
                and await self._delete_job(job)
            ):
                report.orphan_job_deleted += 1
                log.info("deleted a runner Job that has no Secret", extra={"job": job.name})

    async def _secret_orphaned(self, metadata: dict[str, Any], namespace: str, now: float) -> bool:
        """True if a runner Secret has no Job that owns it — by the inventory, then confirmed by a GET.

        Any view of the cluster lags (the watch, another replica's fresh Job, ``reconcile --once``'s list),
        so a Secret younger than `orphan_grace_seconds` is never an orphan, nor one a launch here is making.
        """
        name = str(metadata.get("name"))
        owners = {ref.get("uid") for ref in metadata.get("ownerReferences") or []}
        job = self._inventory.jobs.get(name)
        if job is not None and job.uid in owners:
            return False
        if self._launcher.is_launching(name) or age(metadata, now) < self._settings.orphan_grace_seconds:
            return False
        current = await self._kube.get("jobs", name, namespace=namespace)
        return current is None or (current.get("metadata") or {}).get("uid") not in owners


def _not_found(exc: GitHubError) -> bool:
    """A 404 about the thing asked for (not about the installation, which `InstallationGone` reports)."""
    return exc.status == 404 and not isinstance(exc, InstallationGone)


def _without(jobs: Iterable[RunnerJob], names: set[str]) -> list[RunnerJob]:
    return [job for job in jobs if job.name not in names]
