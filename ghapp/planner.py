"""Pure planning: which pool, which scope, which runner name and labels for a queued job — or why not.

Whether the job may get a runner at all (accounts, public repositories, forks, pool scoping) is decided
by the rules of `ghapp.policy`, from facts the caller looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ghapp import policy
from ghapp.config import DEFAULT_SERVICE_ACCOUNT, Pool, Settings
from ghapp.models import WorkflowJob

ScopeKind = Literal["org", "repo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerScope:
    """Where a runner registers: an organisation, or one repository."""

    kind: ScopeKind
    owner: str
    repo: str | None = None

    @classmethod
    def for_job(cls, job: WorkflowJob) -> RunnerScope:
        """An organisation runner for an organisation's repository, else a repository runner."""
        if job.repository.owner_type == "Organization":
            return cls(kind="org", owner=job.repository.owner)
        return cls(kind="repo", owner=job.repository.owner, repo=job.repository.name)

    @classmethod
    def parse(cls, key: str) -> RunnerScope | None:
        """The inverse of `key`; None for text that is not a scope key."""
        kind, _, rest = key.partition(":")
        if kind == "org" and rest and "/" not in rest:
            return cls(kind="org", owner=rest)
        owner, _, repo = rest.partition("/")
        if kind == "repo" and owner and repo and "/" not in repo:
            return cls(kind="repo", owner=owner, repo=repo)
        return None

    @property
    def api_path(self) -> str:
        """The REST path prefix of this scope's runner endpoints."""
        if self.kind == "org":
            return f"/orgs/{self.owner}"
        return f"/repos/{self.owner}/{self.repo}"

    @property
    def key(self) -> str:
        """A stable text form, e.g. ``org:acme`` or ``repo:alice/tools``."""
        return f"org:{self.owner}" if self.kind == "org" else f"repo:{self.owner}/{self.repo}"

    def url(self, web_url: str) -> str:
        """The URL the runner's ``config.sh --url`` takes."""
        return f"{web_url}/{self.owner}" if self.kind == "org" else f"{web_url}/{self.owner}/{self.repo}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerPlan:
    """Everything needed to start one ephemeral runner for one queued job."""

    workflow_job_id: int
    run_id: int
    installation_id: int
    repository: str
    pool: Pool
    scope: RunnerScope
    name: str
    """Runner name in GitHub; also the name of its Kubernetes Job and Secret."""
    namespace: str
    runner_url: str
    """The URL the runner registers against."""
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    """The ServiceAccount of the runner pod, unless the pool's template names another."""
    attempt: int = 1
    """Which runner for the workflow job this is: 1, then 2, … when earlier ones failed."""
    notes: tuple[str, ...] = ()
    """Rules that were not checked (``ghapp render`` offline, facts unknown)."""
    warm: bool = False
    """A warm runner: started ahead of jobs, for no workflow job (`workflow_job_id` and `run_id` are 0)."""


NO_MATCHING_POOL = "no-matching-pool"


@dataclass(frozen=True, slots=True)
class Skip:
    """No runner for the job: the reason in words, and the rule that decided (``no-matching-pool``: no pool
    has the job's labels, so it is not ours; any other: a `ghapp.policy` rule refused it)."""

    reason: str
    rule: str = NO_MATCHING_POOL

    @property
    def refused(self) -> bool:
        """True when a policy rule refused the job (as opposed to it not being ours)."""
        return self.rule != NO_MATCHING_POOL


def runner_name(*, prefix: str, workflow_job_id: int) -> str:
    """The deterministic runner / Job / Secret name for a workflow job (a DNS label)."""
    return f"{prefix}-{workflow_job_id}"


def job_id_of(name: str, *, prefix: str) -> int | None:
    """The workflow job id in a runner name made by `runner_name`; None for a name ghapp did not make."""
    head, _, digits = name.rpartition("-")
    return int(digits) if head == prefix and digits.isdigit() else None


def matching_pools(labels: Sequence[str], pools: Sequence[Pool]) -> list[Pool]:
    """The pools (file order) whose labels include every label of the job, case-insensitively."""
    wanted = {label.lower() for label in labels}
    if not wanted:
        return []
    return [pool for pool in pools if wanted <= pool.label_set]


def match_pool(labels: Sequence[str], pools: Sequence[Pool]) -> Pool | None:
    """The first pool (file order) whose labels include every label of the job, case-insensitively."""
    return next(iter(matching_pools(labels, pools)), None)


def plan(
    job: WorkflowJob, settings: Settings, *, facts: policy.Facts, pool: Pool | None = None
) -> RunnerPlan | Skip:
    """Decide whether and how to start a runner for `job` (a queued ``workflow_job``).

    The job's account must be allowed; then the first pool (file order) that has the job's labels and
    whose rules (scope, public repositories, forks) let the job in is taken. A rule that needs a fact
    missing from `facts` refuses — unless `facts.offline`, when it is noted and passed. `pool` forces that
    pool whatever the job's labels (``ghapp render --pool``).
    """
    notes: list[str] = []
    refusal = _decide(
        policy.account_verdict(
            job.repository.owner, allowed=settings.allowed_accounts, app_owner=facts.app_owner
        ),
        facts,
        notes,
    )
    if refusal is not None:
        return Skip(refusal.reason, refusal.rule)
    candidates = [pool] if pool is not None else matching_pools(job.labels, settings.pools)
    if not candidates:
        return Skip(f"no pool has all of the job's labels {sorted(job.labels)}")
    refusals: list[policy.Refusal] = []
    for candidate in candidates:
        verdict = policy.pool_verdict(job, candidate, head_repository=facts.head_repository)
        refusal = _decide(verdict, facts, notes)
        if refusal is None:
            return _plan(job, settings, candidate, notes=tuple(notes))
        refusals.append(refusal)
    # Named for the most telling rule: a pool's scope only says the pool is not meant for the job.
    rule = next((r.rule for r in refusals if r.rule != "outside-pool-scope"), refusals[0].rule)
    return Skip("; ".join(r.reason for r in refusals), rule)


def _decide(verdict: policy.Verdict, facts: policy.Facts, notes: list[str]) -> policy.Refusal | None:
    match verdict:
        case policy.Unchecked(rule, reason) if facts.offline:
            notes.append(f"not checked: {reason}")
            return None
        case policy.Unchecked(rule, reason):
            return policy.Refusal(rule, f"could not be checked: {reason}")
        case policy.Refusal() as refusal:
            return refusal
    return None


def warm_plan(
    settings: Settings, pool: Pool, *, scope: RunnerScope, installation_id: int, name: str
) -> RunnerPlan:
    """The plan of a warm runner called `name` (see `ghapp.warm.warm_name`) of `pool` in `scope`."""
    return RunnerPlan(
        workflow_job_id=0,
        run_id=0,
        installation_id=installation_id,
        repository=f"{scope.owner}/{scope.repo}" if scope.kind == "repo" else "",
        pool=pool,
        scope=scope,
        name=name,
        namespace=pool.namespace or settings.namespace,
        runner_url=scope.url(settings.web_url),
        service_account=_service_account(settings, pool),
        warm=True,
    )


def _service_account(settings: Settings, pool: Pool) -> str:
    return pool.service_account or settings.runner_service_account or DEFAULT_SERVICE_ACCOUNT


def _plan(job: WorkflowJob, settings: Settings, pool: Pool, *, notes: tuple[str, ...]) -> RunnerPlan:
    return _runner_plan(
        settings,
        pool,
        RunnerScope.for_job(job),
        workflow_job_id=job.id,
        run_id=job.run_id,
        installation_id=job.installation_id,
        repository=job.repository.full_name,
        notes=notes,
    )


def plan_again(
    settings: Settings,
    *,
    pool_name: str,
    scope_key: str,
    workflow_job_id: int,
    run_id: int,
    installation_id: int,
    repository: str,
    attempt: int,
) -> RunnerPlan | None:
    """The plan of a replacement for a failed runner, from what its Job records (the workflow job was
    admitted when the first runner was planned); None if its pool or scope no longer makes sense."""
    pool = settings.pool(pool_name)
    scope = RunnerScope.parse(scope_key)
    if pool is None or scope is None:
        return None
    return _runner_plan(
        settings,
        pool,
        scope,
        workflow_job_id=workflow_job_id,
        run_id=run_id,
        installation_id=installation_id,
        repository=repository,
        attempt=attempt,
    )


def _runner_plan(
    settings: Settings,
    pool: Pool,
    scope: RunnerScope,
    *,
    workflow_job_id: int,
    run_id: int,
    installation_id: int,
    repository: str,
    attempt: int = 1,
    notes: tuple[str, ...] = (),
) -> RunnerPlan:
    return RunnerPlan(
        workflow_job_id=workflow_job_id,
        run_id=run_id,
        installation_id=installation_id,
        repository=repository,
        pool=pool,
        scope=scope,
        name=runner_name(prefix=settings.runner_prefix, workflow_job_id=workflow_job_id),
        namespace=pool.namespace or settings.namespace,
        runner_url=scope.url(settings.web_url),
        service_account=_service_account(settings, pool),
        attempt=attempt,
        notes=notes,
    )
