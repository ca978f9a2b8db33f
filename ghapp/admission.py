"""Who may get a runner, with the facts looked up: the App's owner and a workflow run's head repository.

The rules are pure (`ghapp.policy`, applied by `ghapp.planner.plan`); this module only gathers what they
need from GitHub — and only when a rule needs it — and reports refusals (a log line, a metric).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ghapp import planner, policy
from ghapp.config import Pool, Settings
from ghapp.errors import GitHubError
from ghapp.github import GitHubClient
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class Refusals:
    """How often one rule refused a runner, and its latest example."""

    rule: str
    count: int
    repository: str
    job: str
    reason: str
    at: float


class Admission:
    """Plans queued jobs under the runner policy, looking up on GitHub what the policy needs."""

    def __init__(self, *, settings: Settings, github: GitHubClient, metrics: Metrics) -> None:
        self.settings = settings
        self._github = github
        self._metrics = metrics
        self._refused_installations: set[int] = set()
        self.refusals: dict[str, Refusals] = {}
        """Rule → its refusals since start (a count and the latest example)."""

    async def plan(self, job: WorkflowJob, *, pool: Pool | None = None) -> planner.RunnerPlan | planner.Skip:
        """The runner plan for `job` (in `pool`, when given), or why not. Facts GitHub cannot give make the
        rule refuse."""
        app_owner = await self._app_owner()
        account = policy.account_verdict(
            job.repository.owner, allowed=self.settings.allowed_accounts, app_owner=app_owner
        )
        head_repository = None
        candidates = [pool] if pool is not None else planner.matching_pools(job.labels, self.settings.pools)
        if account is None and policy.needs_head_repository(job, candidates):
            try:
                head_repository = await self._github.head_repository(
                    installation_id=job.installation_id,
                    repository=job.repository.full_name,
                    run_id=job.run_id,
                )
            except GitHubError as exc:
                log.error("could not look up the workflow run for the fork rule: %s", exc)
        facts = policy.Facts(app_owner=app_owner, head_repository=head_repository)
        return planner.plan(job, self.settings, facts=facts, pool=pool)

    def refused(self, job: WorkflowJob, skip: planner.Skip, *, at: float) -> None:
        """Count and log a refusal; an account's refusal is logged once per installation."""
        self._metrics.jobs_refused.labels(skip.rule).inc()
        count = self.refusals[skip.rule].count if skip.rule in self.refusals else 0
        self.refusals[skip.rule] = Refusals(
            rule=skip.rule,
            count=count + 1,
            repository=job.repository.full_name,
            job=job.name,
            reason=skip.reason,
            at=at,
        )
        extra = {"rule": skip.rule, "account": job.repository.owner}
        if skip.rule != "account-not-allowed":
            log.info("refused: %s", skip.reason, extra=extra)
        elif job.installation_id not in self._refused_installations:
            self._refused_installations.add(job.installation_id)
            log.warning("refused: %s; no runners for this installation", skip.reason, extra=extra)
        else:
            log.debug("refused: %s", skip.reason, extra=extra)

    async def account_allowed(self, account: str) -> bool:
        """Whether installations on `account` may get runners (False if that cannot be checked)."""
        verdict = policy.account_verdict(
            account, allowed=self.settings.allowed_accounts, app_owner=await self._app_owner()
        )
        return verdict is None

    async def _app_owner(self) -> str | None:
        if self.settings.allowed_accounts:
            return None  # not needed
        try:
            return await self._github.app_owner()
        except GitHubError as exc:
            log.error("could not look up the App's owner (GHAPP_ALLOWED_ACCOUNTS is empty): %s", exc)
            return None
