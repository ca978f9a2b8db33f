"""Large lists on the real API server: a list pages with ``limit`` / ``continue``; ghapp's list-then-watch
loop resumes a watch the server ended from the last resourceVersion it saw, without listing again (whether
or not a bookmark came: the API server does not promise one).

Where the real API server decides by itself, the emulator says when, in tests/test_large_lists.py: bookmarks
(``allowWatchBookmarks``: sent when the server likes), and 410 Gone, which makes the loop list again (a real
v1.24 server answers a watch from a forgotten version with 410 only once its watch cache has wrapped: a
fresh server streams the events since version 1 instead)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from ghapp import informer, manifests
from ghapp.clock import SystemClock
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics

from .realcluster import Cluster, eventually

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


class RecordingTransport(KubeTransport):
    """The real transport, recording every request as it is sent: method, path and query."""

    def __init__(self, configuration: k8s.Configuration) -> None:
        super().__init__(configuration)
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    async def request(
        self, method: str, path: str, *, query: Mapping[str, str | int] | None = None, **rest: Any
    ) -> aiohttp.ClientResponse:
        self.sent.append((method, path, {key: str(value) for key, value in (query or {}).items()}))
        return await super().request(method, path, query=query, **rest)

    def watches(self) -> list[dict[str, str]]:
        return [query for _, _, query in self.sent if query.get("watch") == "true"]

    def lists(self) -> list[dict[str, str]]:
        return [
            query
            for method, path, query in self.sent
            if method == "GET" and path.endswith("/secrets") and "watch" not in query
        ]


@dataclass
class Cache:
    """What `informer.list_then_watch` hands its caller: each list's names, and each change."""

    relists: list[list[str]] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)
    failures: int = 0
    """Watches or lists that failed (an expired version is not a failure: it is listed again at once)."""

    def broken(self) -> None:
        self.failures += 1

    def relist(self, objects: list[dict[str, Any]]) -> None:
        self.relists.append(sorted(obj["metadata"]["name"] for obj in objects))

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self.changes.append((kind, obj["metadata"]["name"]))


@asynccontextmanager
async def informing(
    cluster: Cluster, namespace: str
) -> AsyncIterator[tuple[RecordingTransport, KubeClient, Cache]]:
    """Runner Secrets of `namespace` cached by ghapp's list-then-watch loop, each watch ended by the API
    server after a second (``timeoutSeconds``)."""
    transport = RecordingTransport(await cluster.configuration())
    kube = KubeClient(http=transport, namespace=namespace, clock=SystemClock(), metrics=Metrics())
    cache = Cache()
    loop = asyncio.create_task(
        informer.list_then_watch(
            kube,
            "secrets",
            namespace=namespace,
            relist=cache.relist,
            apply=cache.apply,
            clock=SystemClock(),
            what="runner Secrets",
            watch_seconds=1,
            broken=cache.broken,
        )
    )
    try:
        yield transport, kube, cache
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await transport.close()


async def test_a_watch_the_server_ends_resumes_from_the_last_version_seen_without_listing_again(
    cluster: Cluster, cluster_namespace: str
) -> None:
    async with informing(cluster, cluster_namespace) as (transport, kube, cache):

        async def listed() -> bool:
            return cache.relists == [[]]

        async def changes(*names: str) -> bool:
            return cache.changes == [("ADDED", name) for name in names]

        async def watched(count: int) -> bool:
            return len(transport.watches()) >= count

        await eventually(listed, what="the first list")
        await kube.create("secrets", secret("ghapp-0", cluster_namespace))
        await eventually(lambda: changes("ghapp-0"), what="the first runner Secret")
        made = await kube.create("secrets", secret("ghapp-1", cluster_namespace))
        made_at = int(made.body["metadata"]["resourceVersion"])
        await eventually(lambda: changes("ghapp-0", "ghapp-1"), what="the second runner Secret")
        # the server ends each watch after a second: three more watches, whatever the stream brought
        # (a bookmark or nothing), then changes the selector does not match, and one it does
        after = len(transport.watches())
        await eventually(lambda: watched(after + 3), within=30, what="three watches the server ended")
        await kube.create("secrets", secret("not-a-runner", cluster_namespace, runner=False))
        await kube.create("secrets", secret("ghapp-2", cluster_namespace))
        await eventually(lambda: changes("ghapp-0", "ghapp-1", "ghapp-2"), what="the third runner Secret")
        await eventually(lambda: watched(after + 5), within=30, what="two more watches")

    # one list at the start; each of the watches that followed began where the one before it stopped
    assert (cache.relists, cache.failures) == ([[]], 0)
    assert len(transport.lists()) == 1
    versions = [int(query["resourceVersion"]) for query in transport.watches()]
    assert versions == sorted(versions)
    assert all(version >= made_at for version in versions[after:])  # so no event came twice
    assert all(query["allowWatchBookmarks"] == "true" for query in transport.watches())
