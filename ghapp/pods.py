"""What becomes of each runner: its Pod (list + watch by label), its Job's conditions and the Job
controller's ``FailedCreate`` Events, classified by `ghapp.failures` and handed to one place that acts.

A cache like `ghapp.inventory`: written by its list + watch only, thrown away and rebuilt at will. Pods that
wait to be scheduled are looked at again every `SWEEP_SECONDS` (no event says "still unschedulable").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from ghapp import failures, informer, manifests
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.failures import Failure
from ghapp.kube import KubeClient

log = logging.getLogger(__name__)

SWEEP_SECONDS: Final = 15.0
"""How often pods still waiting to be scheduled are looked at again."""
FAILED_CREATE_FIELDS: Final = f"involvedObject.kind=Job,reason={failures.FAILED_CREATE}"
"""The Events ghapp watches: the Job controller could not create a Job's Pod."""

FailureListener = Callable[[str, str, Failure], None]
"""Called with a runner Job's name and uid, and why it failed (possibly more than once for one runner; the
uid tells a failed Job from its replacement of the same name)."""
ProgressListener = Callable[[str, str, bool], None]
"""Called with a runner Job's name, its pool and whether it completed (else: its runner is running)."""


class PodWatcher:
    """Runner Pods, and the failure or progress of each runner, in every runner namespace."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        settings: Settings,
        clock: Clock,
        on_failure: FailureListener,
        on_progress: ProgressListener,
        on_pod: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_pod`: hears every runner Pod as it is now (the timelines take its times from it)."""
        self._kube = kube
        self._on_pod = on_pod
        self._clock = clock
        self._on_failure = on_failure
        self._on_progress = on_progress
        self.namespaces = settings.runner_namespaces
        self._unschedulable_after = {pool.name: pool.unschedulable_seconds for pool in settings.pools}
        self.waiting: dict[tuple[str, str], dict[str, Any]] = {}
        """Pods not yet running nor failed, by (namespace, name): the sweep looks at them again."""

    async def run(self) -> None:
        """Watch Pods and FailedCreate Events of every runner namespace, and sweep waiting Pods, forever."""
        watches: list[Coroutine[Any, Any, None]] = []
        for namespace in self.namespaces:
            watches.append(
                informer.list_then_watch(
                    self._kube,
                    "pods",
                    namespace=namespace,
                    relist=functools.partial(self._relist, namespace),
                    apply=self.pod_changed,
                    clock=self._clock,
                    what="runner Pods",
                )
            )
            watches.append(
                informer.list_then_watch(
                    self._kube,
                    "events",
                    namespace=namespace,
                    relist=self._relist_events,
                    apply=self.event_changed,
                    clock=self._clock,
                    what="FailedCreate Events",
                    selector="",
                    fields=FAILED_CREATE_FIELDS,
                )
            )
        await asyncio.gather(*watches, self._sweep())

    def _relist_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.event_changed("ADDED", event)

    def _relist(self, namespace: str, pods: list[dict[str, Any]]) -> None:
        for key in [k for k in self.waiting if k[0] == namespace]:
            del self.waiting[key]
        for pod in pods:
            self.pod_changed("ADDED", pod)

    def pod_changed(self, kind: str, pod: dict[str, Any]) -> None:
        """Classify one runner Pod as it is now."""
        metadata = pod.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        job, uid = _owner(pod)
        pool = str((metadata.get("labels") or {}).get(manifests.POOL_LABEL, ""))
        if kind == "DELETED" or job is None:
            self.waiting.pop(key, None)
            return
        if self._on_pod is not None:
            self._on_pod(pod)
        verdict = failures.classify_pod(
            pod, now=self._clock.now(), unschedulable_after=self._unschedulable_after.get(pool, 300.0)
        )
        if verdict is not None:
            self.waiting.pop(key, None)
            self._on_failure(job, uid, verdict)
        elif failures.running(pod):
            self.waiting.pop(key, None)
            self._on_progress(job, pool, False)
        elif (pod.get("status") or {}).get("phase") in ("Pending", None):
            self.waiting[key] = pod
        else:
            self.waiting.pop(key, None)

    def event_changed(self, kind: str, event: dict[str, Any]) -> None:
        """A FailedCreate Event of a runner Job (ADDED, or MODIFIED as the Job controller retries)."""
        involved = event.get("involvedObject") or {}
        verdict = failures.classify_event(event)
        if kind != "DELETED" and verdict is not None and involved.get("kind") == "Job":
            self._on_failure(str(involved.get("name")), str(involved.get("uid")), verdict)

    def job_changed(self, job: dict[str, Any]) -> None:
        """A runner Job changed (from the Job inventory): a deadline it hit, or its completion."""
        metadata = job.get("metadata") or {}
        name, pool = str(metadata.get("name")), str((metadata.get("labels") or {}).get(manifests.POOL_LABEL))
        verdict = failures.classify_job(job)
        if verdict is not None:
            self._on_failure(name, str(metadata.get("uid")), verdict)
        elif (job.get("status") or {}).get("succeeded"):
            self._on_progress(name, pool, True)

    async def _sweep(self) -> None:
        # The cadence is real time (a ManualClock would make this loop spin); the verdict takes the clock.
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep()

    def sweep(self) -> None:
        """Look at every waiting Pod again (a Pod unschedulable for too long has no event to say so)."""
        for pod in list(self.waiting.values()):
            self.pod_changed("MODIFIED", pod)


def _owner(pod: dict[str, Any]) -> tuple[str | None, str]:
    """The name and uid of the Job that owns `pod` (None: not a Job's)."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "Job":
            return str(owner.get("name")), str(owner.get("uid"))
    return None, ""
