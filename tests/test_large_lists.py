"""Watch bookmarks and 410 Gone, where they come when the test says (the emulator): a bookmark moves ghapp's
watch on past changes its selector does not match, so a watch the server ends resumes from there, not from a
version the server has forgotten meanwhile; without one, that resume meets 410 Gone and lists again. The
resume itself on the real API server (which sends bookmarks when it likes, and 410 only once its watch cache
has wrapped): tests/test_real_large_lists.py."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ghapp import informer, manifests
from ghapp.clock import ManualClock
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics

from .conftest import NAMESPACE, wait_for
from .fakes.kube import KubeEmulator, RecordedRequest

HISTORY = 1000
"""Changes the emulator remembers for watches (older versions are answered 410 Gone)."""


def requests(kube: KubeEmulator, verb: str) -> list[RecordedRequest]:
    return [r for r in kube.requests if r.verb == verb and r.resource == "secrets"]


def other_secrets(kube: KubeEmulator, start: int) -> str:
    """Make Secrets the runner selector does not match, enough to push every version before them out of the
    emulator's history; the resourceVersion of the last."""
    for n in range(start, start + HISTORY + 5):
        made = kube.put_object("secrets", {"metadata": {"name": f"other-{n}", "namespace": NAMESPACE}})
    return str(made["metadata"]["resourceVersion"])


def runner_secret(name: str) -> dict[str, Any]:
    labels = {manifests.MANAGED_BY: manifests.MANAGER, manifests.COMPONENT: "runner"}
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}}


async def test_a_bookmark_moves_the_watch_past_changes_it_does_not_match_so_it_resumes_without_a_list(
    kube: KubeEmulator, clock: ManualClock
) -> None:
    relists: list[list[str]] = []
    changes: list[tuple[str, str]] = []
    streamed = 0  # events the watch delivered, bookmarks included

    def delivered() -> None:
        nonlocal streamed
        streamed += 1

    transport = KubeTransport(kube.configuration())
    loop = asyncio.create_task(
        informer.list_then_watch(
            KubeClient(http=transport, namespace=NAMESPACE, clock=clock, metrics=Metrics()),
            "secrets",
            namespace=NAMESPACE,
            relist=lambda objects: relists.append(sorted(o["metadata"]["name"] for o in objects)),
            apply=lambda kind, obj: changes.append((kind, obj["metadata"]["name"])),
            clock=clock,
            what="runner Secrets",
            working=delivered,
        )
    )
    try:
        await wait_for(lambda: relists == [[]] and streamed == 1, what="a list, then a watch's bookmark")
        present = other_secrets(kube, 0)
        kube.send_bookmarks()
        await wait_for(lambda: streamed == 2, what="the bookmark past the other Secrets")
        kube.end_watches()  # as the API server does at a watch's timeoutSeconds
        await wait_for(lambda: len(requests(kube, "watch")) >= 2, what="the next watch")
        assert requests(kube, "watch")[1].query["resourceVersion"] == present  # the bookmark's
        kube.put_object("secrets", runner_secret("ghapp-1"))
        await wait_for(lambda: changes == [("ADDED", "ghapp-1")], what="the runner Secret, watched")
        assert (relists, len(requests(kube, "list"))) == ([[]], 1)  # resumed: no list

        # no bookmark this time: the watch resumes from a version the server has forgotten, 410 Gone, a list
        other_secrets(kube, HISTORY + 5)
        kube.end_watches()
        await wait_for(lambda: len(relists) == 2, what="a list after 410 Gone")
        assert relists[1] == ["ghapp-1"]
        assert len(requests(kube, "list")) == 2
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await transport.close()
