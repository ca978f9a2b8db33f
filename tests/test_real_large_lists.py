"""Large lists on the real API server: a list pages with ``limit`` / ``continue``, and a watch resumes from
the resourceVersion of a bookmark (``allowWatchBookmarks``) instead of listing again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ghapp import manifests
from ghapp.clock import SystemClock
from ghapp.kube import KubeClient, WatchEvent
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics

from .realcluster import Cluster

RUNNER_LABELS = {manifests.MANAGED_BY: manifests.MANAGER, manifests.COMPONENT: "runner"}


@pytest.fixture
async def real_kube(cluster: Cluster, cluster_namespace: str) -> AsyncIterator[tuple[KubeClient, Metrics]]:
    metrics = Metrics()
    transport = KubeTransport(await cluster.configuration())
    try:
        yield (
            KubeClient(http=transport, namespace=cluster_namespace, clock=SystemClock(), metrics=metrics),
            metrics,
        )
    finally:
        await transport.close()


def secret(name: str, namespace: str, *, runner: bool = True) -> dict[str, object]:
    labels = RUNNER_LABELS if runner else {"app": "other"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }


async def events(kube: KubeClient, version: str, *, timeout_seconds: int) -> list[WatchEvent]:
    """Everything one watch from `version` delivers until the server ends it."""
    return [
        event
        async for event in kube.watch("secrets", resource_version=version, timeout_seconds=timeout_seconds)
    ]


async def test_a_list_pages_by_limit_and_continue_on_a_real_api_server(
    real_kube: tuple[KubeClient, Metrics], cluster_namespace: str
) -> None:
    kube, metrics = real_kube
    for i in range(5):
        await kube.create("secrets", secret(f"ghapp-{i}", cluster_namespace))
    await kube.create("secrets", secret("not-a-runner", cluster_namespace, runner=False))

    items, version = await kube.list("secrets", namespace=cluster_namespace, page_size=2)
    assert sorted(item["metadata"]["name"] for item in items) == [f"ghapp-{i}" for i in range(5)]
    assert version
    # three pages of at most two (the API server's continue token carries the rest)
    assert (
        metrics.registry.get_sample_value(
            "ghapp_kubernetes_requests_total", {"verb": "list", "resource": "secrets", "status": "200"}
        )
        == 3
    )


async def test_a_watch_resumes_from_a_bookmark_on_a_real_api_server(
    real_kube: tuple[KubeClient, Metrics], cluster_namespace: str
) -> None:
    kube, _ = real_kube
    await kube.create("secrets", secret("ghapp-0", cluster_namespace))
    _, listed = await kube.list("secrets", namespace=cluster_namespace)
    await kube.create("secrets", secret("not-a-runner", cluster_namespace, runner=False))

    # nothing the selector matches changes; the API server sends a bookmark before it ends a watch (2 s
    # before its timeout; a busy server may miss that, so watch again, from the same version, a few times)
    quiet: list[WatchEvent] = []
    for _ in range(6):
        quiet += await events(kube, listed, timeout_seconds=5)
        if quiet:
            break
    assert quiet, "the API server sent no bookmark in six watches"
    assert {event.type for event in quiet} == {"BOOKMARK"}
    bookmark = str(quiet[-1].object["metadata"]["resourceVersion"])
    assert int(bookmark) > int(listed)  # past the change the selector does not match

    # the next watch starts from the bookmark: it sees the new runner Secret, and nothing from before
    await kube.create("secrets", secret("ghapp-1", cluster_namespace))
    resumed = [event for event in await events(kube, bookmark, timeout_seconds=3) if event.type != "BOOKMARK"]
    assert [(event.type, event.object["metadata"]["name"]) for event in resumed] == [("ADDED", "ghapp-1")]
