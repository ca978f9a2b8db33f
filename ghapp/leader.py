"""Leader election with a Kubernetes Lease: one replica at a time runs the reconciler.

The usual algorithm (as client-go's): the holder renews the Lease every `duration / 3` seconds; another
replica takes it over once it has seen the same record, unrenewed, for `duration` seconds by its own clock
(so clocks need not agree). Every write carries the resourceVersion read, so two candidates cannot both win.
A leader that cannot renew within `2/3 · duration` stops leading before anyone else may start: every
campaign runs under a deadline at the leader's last renewal plus `2/3 · duration`, so an API call that hangs
ends there too (errors alone are not enough: a call can hang for longer than the lease lasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from ghapp import manifests
from ghapp.clock import Clock
from ghapp.errors import KubernetesError
from ghapp.kube import KubeClient
from ghapp.metrics import Metrics

log = logging.getLogger(__name__)


def _micro_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for one Lease; runs `lead()` while holding it and cancels it when the lease is lost."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        name: str,
        namespace: str | None = None,
        identity: str,
        duration: float,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._kube = kube
        self._name = name
        self._namespace = (
            namespace or kube.namespace
        )  # the Lease's (GHAPP_LEASE_NAMESPACE), else the client's
        self.identity = identity
        self._duration = duration
        self._clock = clock
        self._metrics = metrics
        self._observed: tuple[str, float] | None = None  # (record seen, when first seen)
        self._renewed_at = 0.0
        self._version: str | None = None
        self.is_leader = False
        self.holder: str | None = None
        """Who held the lease when this replica last read it."""
        self._still_holds = False  # stopped campaigning while holding the lease: release() gives it up

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever (until cancelled); `lead()` runs as a task exactly while this replica leads."""
        task: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    async with self._clock.timeout(self._patience()):
                        leading = await self.campaign_once()
                except TimeoutError:
                    # the API hangs: whatever it did meanwhile, this replica may no longer count on the lease
                    log.warning("lease %s: no answer within the renew deadline", self._name)
                    leading = False
                except KubernetesError as exc:
                    log.warning("lease %s: %s", self._name, exc)
                    leading = self.is_leader and self._clock.now() - self._renewed_at < self.renew_deadline
                if leading and task is None:
                    log.info("became the leader; starting the reconciler", extra={"lease": self._name})
                    task = asyncio.create_task(lead(), name="reconciler")
                elif not leading and task is not None:
                    log.warning("lost the lease; stopping the reconciler", extra={"lease": self._name})
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    task = None
                self._set_leader(leading)
                await self._clock.sleep(self._duration / 3)
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._stopped_leading()

    @property
    def renew_deadline(self) -> float:
        """A leader that has not renewed for this long stops leading (a third of the lease is left)."""
        return self._duration * 2 / 3

    def _patience(self) -> float:
        """How long one campaign may take: a leader's ends at its renew deadline, so a renewal that hangs
        stops the reconciler while the lease still holds; anyone else's within a renew deadline."""
        if self.is_leader:
            return self._renewed_at + self.renew_deadline - self._clock.now()
        return self.renew_deadline

    def _stopped_leading(self) -> None:
        """Not campaigning any more, so not leading (though the lease may linger until released)."""
        self._still_holds = self.is_leader
        self._set_leader(False)

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            self._metrics.leader.set(1 if leading else 0)

    def _body(self, *, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = _micro_time(self._clock.now())
        metadata: dict[str, Any] = {
            "name": self._name,
            "namespace": self._namespace,
            "labels": {manifests.MANAGED_BY: manifests.MANAGER},
        }
        if self._version is not None:
            metadata["resourceVersion"] = self._version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self._duration)),
                "acquireTime": acquire_time or now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def campaign_once(self) -> bool:
        """Read the Lease and take or renew it if this replica may; True if it leads now."""
        lease = await self._kube.get("leases", self._name, namespace=self._namespace)
        now = self._clock.now()
        if lease is None:
            self._version = None
            answer = await self._kube.create("leases", self._body(transitions=0, acquire_time=None))
            return self._took(answer.status, answer.body, now)
        spec = lease.get("spec") or {}
        self._version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        holder = spec.get("holderIdentity") or ""
        self.holder = holder or None
        record = f"{holder}|{spec.get('renewTime')}"
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            answer = await self._kube.replace(
                "leases", self._body(transitions=transitions, acquire_time=spec.get("acquireTime"))
            )
            return self._took(answer.status, answer.body, now)
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if holder and now - self._observed[1] < duration:
            return False  # someone else holds a live lease
        answer = await self._kube.replace(
            "leases", self._body(transitions=transitions + 1, acquire_time=None)
        )
        return self._took(answer.status, answer.body, now)

    def _took(self, status: int, body: dict[str, Any], now: float) -> bool:
        if status in (200, 201):
            self.holder = self.identity
            self._renewed_at = now
            self._version = str((body.get("metadata") or {}).get("resourceVersion", ""))
            return True
        return False  # 409: another replica wrote first

    async def release(self) -> None:
        """Give the lease up at once (on shutdown), so another replica need not wait for it to expire."""
        if not (self.is_leader or self._still_holds):
            return
        with contextlib.suppress(KubernetesError, TimeoutError):
            async with self._clock.timeout(self.renew_deadline):
                await self._release()
        self._still_holds = False
        self._set_leader(False)

    async def _release(self) -> None:
        lease = await self._kube.get("leases", self._name, namespace=self._namespace)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["leaseDurationSeconds"] = 1
            await self._kube.replace("leases", lease)
            log.info("released the lease", extra={"lease": self._name})
