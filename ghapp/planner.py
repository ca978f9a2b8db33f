"""Pure planning: which pool, which scope, which runner name and labels for a queued job — or why not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ghapp.config import Pool, Settings
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


@dataclass(frozen=True, slots=True)
class Skip:
    """The job is not ours, with the reason in words."""

    reason: str


def runner_name(*, prefix: str, workflow_job_id: int) -> str:
    """The deterministic runner / Job / Secret name for a workflow job (a DNS label)."""
    return f"{prefix}-{workflow_job_id}"


def match_pool(labels: Sequence[str], pools: Sequence[Pool]) -> Pool | None:
    """The first pool (file order) whose labels include every label of the job, case-insensitively."""
    wanted = {label.lower() for label in labels}
    if not wanted:
        return None
    return next((pool for pool in pools if wanted <= pool.label_set), None)


def plan(job: WorkflowJob, settings: Settings, *, pool: Pool | None = None) -> RunnerPlan | Skip:
    """Decide whether and how to start a runner for `job` (a queued ``workflow_job``).

    `pool` forces that pool whatever the job's labels (``ghapp render --pool``).
    """
    pool = pool or match_pool(job.labels, settings.pools)
    if pool is None:
        return Skip(f"no pool has all of the job's labels {sorted(job.labels)}")
    scope = RunnerScope.for_job(job)
    return RunnerPlan(
        workflow_job_id=job.id,
        run_id=job.run_id,
        installation_id=job.installation_id,
        repository=job.repository.full_name,
        pool=pool,
        scope=scope,
        name=runner_name(prefix=settings.runner_prefix, workflow_job_id=job.id),
        namespace=pool.namespace or settings.namespace,
        runner_url=scope.url(settings.web_url),
    )
