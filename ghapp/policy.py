"""Pure: who may get a runner — allowed accounts, public repositories, forks, per-pool scoping.

Every rule answers with a `Refusal` that names itself and says why in words, with `Unchecked` when it needs
a fact from GitHub that the caller does not have (``ghapp render`` offline), or with None: allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ghapp.config import Pool, glob_match
from ghapp.models import Repository, WorkflowJob

Rule = Literal["account-not-allowed", "outside-pool-scope", "public-repository", "fork-pull-request"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A rule refused the job."""

    rule: Rule
    reason: str


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A rule could not be checked: it needs a fact from GitHub that is not known."""

    rule: Rule
    reason: str


Verdict = Refusal | Unchecked | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What the rules need to know from GitHub, when they need it."""

    app_owner: str | None = None
    """The login of the App's owner (``GET /app``); needed when GHAPP_ALLOWED_ACCOUNTS is empty."""
    head_repository: str | None = None
    """``owner/name`` of the workflow run's head repository; needed for the fork rule."""
    offline: bool = False
    """``ghapp render``: a rule that needs an unknown fact is noted and passed, not refused."""


def is_public(repository: Repository) -> bool:
    """A public repository (``private`` false, or ``visibility`` public)."""
    return not repository.private or repository.visibility == "public"


_matches = glob_match


def account_verdict(account: str, *, allowed: Sequence[str], app_owner: str | None) -> Verdict:
    """May installations on `account` get runners? `allowed` is GHAPP_ALLOWED_ACCOUNTS."""
    if "*" in allowed:
        return None
    if allowed:
        if account.lower() in {login.lower() for login in allowed}:
            return None
        return Refusal("account-not-allowed", f"account {account} is not in GHAPP_ALLOWED_ACCOUNTS")
    if app_owner is None:
        return Unchecked(
            "account-not-allowed",
            "GHAPP_ALLOWED_ACCOUNTS is empty, so only the App's owner may get runners, "
            "and who owns the App needs GitHub (GET /app)",
        )
    if account.lower() == app_owner.lower():
        return None
    return Refusal(
        "account-not-allowed",
        f"account {account} is not the App's owner ({app_owner}) and GHAPP_ALLOWED_ACCOUNTS is empty",
    )


def pools_for_account(account: str, pools: Sequence[Pool]) -> list[Pool]:
    """The pools whose scope (``organizations``, and the owner part of ``repositories``) can take jobs of
    repositories owned by `account`; an empty list means no job of that account can ever get a runner."""
    return [
        pool
        for pool in pools
        if (not pool.organizations or _matches(account, pool.organizations))
        and (
            not pool.repositories or _matches(account, [glob.split("/", 1)[0] for glob in pool.repositories])
        )
    ]


def pool_verdict(job: WorkflowJob, pool: Pool, *, head_repository: str | None) -> Verdict:
    """May `job` get a runner from `pool` (whose labels it matches)?"""
    repo = job.repository
    if pool.organizations and not _matches(repo.owner, pool.organizations):
        return Refusal(
            "outside-pool-scope",
            f"pool {pool.name}: owner {repo.owner} matches none of organizations {list(pool.organizations)}",
        )
    if pool.repositories and not _matches(repo.full_name, pool.repositories):
        return Refusal(
            "outside-pool-scope",
            f"pool {pool.name}: {repo.full_name} matches none of repositories {list(pool.repositories)}",
        )
    if not is_public(repo):
        return None
    if not pool.allow_public:
        return Refusal(
            "public-repository",
            f"pool {pool.name}: {repo.full_name} is public and the pool does not set allow_public",
        )
    if pool.allow_forks:
        return None
    if head_repository is None:
        return Unchecked(
            "fork-pull-request",
            f"pool {pool.name}: whether run {job.run_id} of public {repo.full_name} comes from a fork needs "
            f"GitHub (GET /repos/{repo.full_name}/actions/runs/{job.run_id})",
        )
    if head_repository.lower() != repo.full_name.lower():
        return Refusal(
            "fork-pull-request",
            f"pool {pool.name}: run {job.run_id} of public {repo.full_name} comes from the fork "
            f"{head_repository} and the pool does not set allow_forks",
        )
    return None


def needs_head_repository(job: WorkflowJob, candidates: Sequence[Pool]) -> bool:
    """Whether the fork rule decides which of `candidates` (the pools with the job's labels, in order)
    takes `job` — only then is the workflow run worth looking up."""
    for pool in candidates:
        verdict = pool_verdict(job, pool, head_repository=None)
        if verdict is None:
            return False  # this pool takes the job whatever the run
        if isinstance(verdict, Unchecked):
            return True
    return False
