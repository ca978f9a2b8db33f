"""The status model: one snapshot of what this replica knows, for ``/status``, ``/status.json`` and
``ghapp status``. Built from what is in memory (the inventory, the launcher, the timelines, the usage, the
reconciler); the one GitHub read (the App's installations) is cached. Never carries a secret.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ghapp import __version__, policy, warm
from ghapp.cache import Expiring, ExpiringCache
from ghapp.config import Settings
from ghapp.errors import GhappError
from ghapp.github import GitHubClient, InstallationInfo
from ghapp.timeline import JobTimeline
from ghapp.usage import DAY, WEEK

if TYPE_CHECKING:
    from ghapp.app import Services

log = logging.getLogger(__name__)

INSTALLATIONS_TTL = 300.0
"""How long the installations list is reused (``GET /app/installations`` costs a JWT request)."""
RECENT_ON_PAGE = 25
"""How many recent workflow jobs the status shows."""

CAPACITY = "capacity"
REFUSED = "refused"
RUNNER_FAILING = "runner failing"
RUNNER_STARTING = "runner starting"
LAUNCHING = "launching"
WAIT_REASONS = (CAPACITY, REFUSED, RUNNER_FAILING, RUNNER_STARTING, LAUNCHING)
"""Why a workflow job still waits, in the words the page uses."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStatus:
    name: str
    mode: str
    image: str
    active: int
    max_runners: int
    waiting: int
    healthy: bool
    problem: str | None
    """Why the pool is not healthy (its last launch error), None when healthy."""
    outdated: bool
    """Whether its runners exit as too old for GitHub (exit code 7, until one of them completes a job)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmStatus:
    """What one warm entry of a pool asks for now (its schedule applied), and when that changes next."""

    pool: str
    scope: str
    min_idle: int
    next_change_at: float | None
    next_min_idle: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingJob:
    id: int
    repository: str
    name: str
    labels: list[str]
    pool: str | None
    waiting_since: float | None
    reason: str
    """One of `WAIT_REASONS`."""
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalStatus:
    rule: str
    count: int
    example_repository: str
    example_job: str
    example_reason: str
    last_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FailingRunner:
    job: str
    pool: str
    repository: str
    reason: str
    since: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallationStatus:
    id: int
    account: str
    account_type: str
    allowed: bool
    suspended: bool
    out_of_service: str | None
    """Why ghapp treats it as gone (`deleted`, `suspended`: no runners, no calls); None: in service."""
    rate_limit_remaining: int | None
    rate_limit: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerStatus:
    leader: bool
    identity: str
    holder: str | None
    """Who holds the lease, as this replica last read it."""
    last_pass_at: float | None
    last_outcome: str | None
    last_fixes: dict[str, int]
    last_errors: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    generated_at: float
    version: str
    identity: str
    started_at: float
    pools: list[PoolStatus]
    waiting: list[WaitingJob]
    refusals: list[RefusalStatus]
    failing_runners: list[FailingRunner]
    installations: list[InstallationStatus]
    installations_error: str | None
    reconciler: ReconcilerStatus
    usage: dict[str, Any]
    recent_jobs: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    warm: list[WarmStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def public_settings(settings: Settings) -> dict[str, Any]:
    """Every setting except secrets; pools as their name, labels, capacity, image and mode only (a pool's
    env and template may hold values that are nobody's business)."""
    shown: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if info.annotation is not None and SecretStr in getattr(
            info.annotation, "__args__", (info.annotation,)
        ):
            continue
        if name == "pools":
            continue
        value = getattr(settings, name)
        shown[name] = str(value) if not isinstance(value, str | int | float | bool | type(None)) else value
    shown["pools"] = [
        {
            "name": pool.name,
            "labels": list(pool.labels),
            "max_runners": pool.max_runners,
            "image": pool.image,
            "mode": pool.mode,
            "namespace": pool.namespace or settings.namespace,
        }
        for pool in settings.pools
    ]
    return shown


class StatusCollector:
    """Builds `Status` snapshots of one running ghapp."""

    def __init__(self, *, services: Services) -> None:
        self._services = services
        self._installations: ExpiringCache[str, list[InstallationInfo]] = ExpiringCache(
            fetch=self._fetch_installations, clock=services.clock, margin=0.0
        )

    async def collect(self) -> Status:
        s = self._services
        now = s.clock.now()
        installations, installations_error = await self._installation_statuses()
        recent = s.timeline.recent()
        return Status(
            generated_at=now,
            version=__version__,
            identity=s.settings.identity,
            started_at=s.usage.since,
            pools=self._pools(),
            waiting=self._waiting(recent),
            refusals=[
                RefusalStatus(
                    rule=r.rule,
                    count=r.count,
                    example_repository=r.repository,
                    example_job=r.job,
                    example_reason=r.reason,
                    last_at=r.at,
                )
                for r in sorted(s.admission.refusals.values(), key=lambda r: -r.count)
            ],
            failing_runners=self._failing(),
            installations=installations,
            installations_error=installations_error,
            reconciler=self._reconciler(),
            usage={
                "last_24h": s.usage.window(DAY, now=now).as_dict(),
                "last_7d": s.usage.window(WEEK, now=now).as_dict(),
            },
            recent_jobs=[entry.as_dict() for entry in reversed(recent[-RECENT_ON_PAGE:])],
            settings=public_settings(s.settings),
            warm=[
                WarmStatus(
                    pool=target.pool.name,
                    scope=target.entry.scope_key,
                    min_idle=target.min_idle,
                    next_change_at=target.change.at if target.change else None,
                    next_min_idle=target.change.min_idle if target.change else None,
                )
                for target in warm.targets(s.settings.pools, now)
            ],
        )

    def _pools(self) -> list[PoolStatus]:
        s = self._services
        pools = []
        for pool in s.settings.pools:
            # the pool's health (its runners' failures: ghapp.health, also ghapp_pool_healthy), then whether
            # its last launch failed (GitHub or Kubernetes refused to make a runner)
            health = s.launcher.health.pools.get(pool.name)
            error = s.launcher.pool_errors.get(pool.name)
            problem = None
            if health is not None and not health.healthy:
                problem = f"{health.reason}: {health.message}"
            elif error is not None:
                problem = f"launch failed: {error[1]}"
            pools.append(
                PoolStatus(
                    name=pool.name,
                    mode=pool.mode,
                    image=pool.image,
                    active=s.inventory.active_count(pool.name),
                    max_runners=pool.max_runners,
                    waiting=s.launcher.waiting(pool.name),
                    healthy=problem is None,
                    problem=problem,
                    outdated=health is not None and health.reason == "outdated",
                )
            )
        return pools

    def _waiting(self, recent: list[JobTimeline]) -> list[WaitingJob]:
        """Recent jobs still queued that ghapp is responsible for (or refused), each with why it waits."""
        waiting = []
        for entry in recent:
            if entry.done or (entry.skipped is not None and entry.refused_rule is None):
                continue  # taken, completed, or not ours
            if entry.pool is None and entry.refused_rule is None:
                continue  # not planned here (another replica received it)
            reason, detail = self._why(entry)
            waiting.append(
                WaitingJob(
                    id=entry.id,
                    repository=entry.repository,
                    name=entry.name,
                    labels=list(entry.labels),
                    pool=entry.pool,
                    waiting_since=entry.queued_at if entry.queued_at is not None else entry.received_at,
                    reason=reason,
                    detail=detail,
                )
            )
        waiting.sort(key=lambda job: job.waiting_since or 0.0)
        return waiting

    def _why(self, entry: JobTimeline) -> tuple[str, str]:
        s = self._services
        if entry.refused_rule is not None:
            return REFUSED, f"rule {entry.refused_rule}: {entry.skipped}"
        given_up = s.launcher.health.given_up.get(entry.id)
        if given_up is not None:
            return RUNNER_FAILING, f"ghapp gave up starting runners for it: {given_up}"
        pool = s.settings.pool(entry.pool) if entry.pool else None
        if pool is not None and s.launcher.is_waiting(entry.id):
            active = s.inventory.active_count(pool.name)
            return CAPACITY, f"pool {pool.name} is full ({active}/{pool.max_runners} runners)"
        job = s.inventory.jobs.get(entry.runner_job) if entry.runner_job else None
        if job is not None and job.failed:
            return RUNNER_FAILING, f"runner Job {job.name} failed" + (
                f": {job.failure}" if job.failure else ""
            )
        if entry.launch_error is not None and entry.runner_job is None:
            return RUNNER_FAILING, entry.launch_error
        if entry.runner_job is not None:
            if entry.pod_running_at is not None:
                return RUNNER_STARTING, f"runner {entry.runner_job} is running; waiting for GitHub to assign"
            return RUNNER_STARTING, f"runner Job {entry.runner_job} created; its pod is not running yet"
        return LAUNCHING, "starting a runner"

    def _failing(self) -> list[FailingRunner]:
        return [
            FailingRunner(
                job=job.name,
                pool=job.pool,
                repository=job.repository,
                reason=job.failure or "the runner Job failed",
                since=job.finished_at,
            )
            for job in sorted(self._services.inventory.jobs.values(), key=lambda j: j.name)
            if job.failed and not job.deleting
        ]

    def _reconciler(self) -> ReconcilerStatus:
        s = self._services
        report = s.reconciler.last_report
        return ReconcilerStatus(
            leader=s.elector.is_leader,
            identity=s.elector.identity,
            holder=s.elector.holder,
            last_pass_at=s.reconciler.last_pass_at,
            last_outcome=None if report is None else ("failed" if report.errors else "ok"),
            last_fixes={} if report is None else report.fixes(),
            last_errors=[] if report is None else list(report.errors),
        )

    async def _installation_statuses(self) -> tuple[list[InstallationStatus], str | None]:
        s = self._services
        try:
            found = await self._installations.get("all")
        except GhappError as exc:
            return [], f"could not list the App's installations: {exc}"
        owner = None
        if not s.settings.allowed_accounts:
            try:
                owner = await s.github.app_owner()
            except GhappError as exc:
                log.warning("status: could not look up the App's owner: %s", exc)
        retired = s.installations.retired()
        statuses = []
        for installation in found:
            gone = retired.get(installation.id)
            window = s.github.rate_limits.window(str(installation.id))
            verdict = policy.account_verdict(
                installation.account, allowed=s.settings.allowed_accounts, app_owner=owner
            )
            statuses.append(
                InstallationStatus(
                    id=installation.id,
                    account=installation.account,
                    account_type=installation.account_type,
                    allowed=verdict is None,
                    suspended=installation.suspended,
                    out_of_service=None if gone is None else gone.reason,
                    rate_limit_remaining=None if window is None else window.remaining,
                    rate_limit=None if window is None else window.limit,
                )
            )
        return statuses, None

    async def _fetch_installations(self, _: str) -> Expiring[list[InstallationInfo]]:
        github: GitHubClient = self._services.github
        return Expiring(await github.installations(), self._services.clock.now() + INSTALLATIONS_TTL)
