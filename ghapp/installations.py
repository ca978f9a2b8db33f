"""Installations that went away (deleted or suspended): their runners are removed, and they cost no calls.

GitHub says so with an ``installation`` webhook (``deleted``, ``suspend``), or by refusing to mint the
installation's token (404: deleted, 403: suspended). Either way ghapp deletes that installation's runner Jobs
and Secrets (the ``ghapp/installation-id`` label) in every runner namespace, deregisters its idle runners if
GitHub still lets it, and stops scanning its repositories and runner scopes until it is back (``unsuspend``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from ghapp import manifests
from ghapp.activity import Activity
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.errors import GitHubError
from ghapp.github import GitHubClient
from ghapp.inventory import Inventory, RunnerJob
from ghapp.kube import KubeClient
from ghapp.metrics import Metrics
from ghapp.planner import RunnerScope

log = logging.getLogger(__name__)

DELETED: Final = "deleted"
SUSPENDED: Final = "suspended"


@dataclass(frozen=True, slots=True)
class Retired:
    """Why an installation is out of service, and since when (epoch seconds)."""

    reason: str
    since: float


class Installations:
    """Which installations are out of service, and taking one out of service."""

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        activity: Activity,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._github = github
        self._kube = kube
        self._inventory = inventory
        self._activity = activity
        self._clock = clock
        self._metrics = metrics
        self._retired: dict[int, Retired] = {}

    def out_of_service(self, installation_id: int) -> bool:
        """True while ghapp knows the installation as deleted or suspended."""
        return installation_id in self._retired

    def retired(self) -> dict[int, Retired]:
        return dict(self._retired)

    def restore(self, installation_id: int) -> None:
        """The installation is usable again (``unsuspend``, or installed anew)."""
        if self._retired.pop(installation_id, None) is not None:
            log.info("installation is back in service", extra={"installation_id": installation_id})

    async def retire(self, installation_id: int, *, reason: str) -> int:
        """Take an installation out of service and remove its runners; returns the Jobs deleted.

        Safe to repeat: a second call finds nothing left to delete.
        """
        first = installation_id not in self._retired
        self._retired[installation_id] = Retired(reason, self._clock.now())
        if reason == DELETED:
            self._activity.forget_installation(installation_id)
        deleted = await self._remove_runners(installation_id)
        if first:
            self._metrics.installations_retired.labels(reason).inc()
            log.warning(
                "installation %s: its runner Jobs and Secrets are removed and it is no longer scanned",
                reason,
                extra={"installation_id": installation_id, "jobs_deleted": deleted},
            )
        return deleted

    async def _remove_runners(self, installation_id: int) -> int:
        selector = f"{manifests.RUNNER_SELECTOR},{manifests.INSTALLATION_LABEL}={installation_id}"
        found: list[RunnerJob] = []
        for namespace in self._inventory.namespaces:
            objects, _ = await self._kube.list("jobs", selector=selector, namespace=namespace)
            found.extend(job for job in map(RunnerJob.from_object, objects) if job is not None)
        busy = await self._deregister_idle(installation_id, {job.scope for job in found})
        deleted = 0
        for job in found:
            if job.name in busy:
                continue  # mid-job: it ends by itself (ephemeral), and its Secret goes with its Job
            if await self._kube.delete("jobs", job.name, namespace=job.namespace, uid=job.uid):
                deleted += 1
            self._inventory.forget(job.name, uid=job.uid)
        for namespace in self._inventory.namespaces:
            secrets, _ = await self._kube.list("secrets", selector=selector, namespace=namespace)
            for secret in secrets:
                metadata = secret.get("metadata") or {}
                name = str(metadata.get("name"))
                if name not in busy:
                    await self._kube.delete("secrets", name, namespace=namespace, uid=metadata.get("uid"))
        return deleted

    async def _deregister_idle(self, installation_id: int, scopes: set[str]) -> set[str]:
        """Deregister the installation's idle runners where GitHub still allows it; the names of busy ones.

        A deleted or suspended installation gets no token, so usually GitHub allows nothing: then no runner
        is known to be busy, and every runner Job goes (GitHub removes the offline registrations later).
        """
        prefix = f"{self._settings.runner_prefix}-"
        busy: set[str] = set()
        for key in sorted(scopes):
            scope = RunnerScope.parse(key)
            if scope is None:
                continue
            try:
                for runner in await self._github.runners(installation_id=installation_id, scope=scope):
                    name = str(runner.get("name", ""))
                    if not name.startswith(prefix):
                        continue
                    try:
                        await self._github.delete_runner(
                            installation_id=installation_id, scope=scope, runner_id=int(runner["id"])
                        )
                    except GitHubError as exc:
                        if exc.status != 422:
                            raise
                        busy.add(name)  # GitHub refuses: it is running a job
            except GitHubError as exc:
                log.info(
                    "GitHub does not let ghapp deregister the installation's runners: %s",
                    exc,
                    extra={"installation_id": installation_id, "scope": key},
                )
        return busy
