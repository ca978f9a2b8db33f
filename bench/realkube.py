"""A real Kubernetes API server as a benchmark target (issue #14 item 4), in place of the emulator.

`RealKube` offers what ``bench/burst.py`` reads from its instrumented emulator (`TimedKube`): a namespace
to write to (a fresh one, deleted at the end), ``created`` — when (``time.monotonic()``) each Job and
Secret was first seen — and request counts. The times come from a watch of the namespace held by the
benchmark process (the API server's timestamps have one-second resolution), so each is the moment the
object's ``ADDED`` event arrived: a few milliseconds after the write was answered. The counts come from the
API server's ``apiserver_request_total`` metric (before/after), which counts every client's requests: the
Job controller's reads and status updates of the same Jobs are in them (they are per resource and verb, not
per client), but nothing else creates Jobs or Secrets there.

The cluster is named by a kubeconfig (``--kubeconfig``), or started for the run from ``../shared/k8s`` in a
folder of its own and stopped at the end (``--real-cluster DIR``), with the helpers of
``tests/realcluster.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections import Counter
from pathlib import Path

import aiohttp

from tests.realcluster import Cluster, eventually

WATCHED = {"jobs": "/apis/batch/v1/namespaces/{ns}/jobs", "secrets": "/api/v1/namespaces/{ns}/secrets"}
VERBS = {
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "APPLY": "patch",
    "DELETE": "delete",
    "GET": "get",
    "LIST": "list",
    "WATCH": "watch",
}
"""apiserver_request_total's verbs, named as the emulator (and Kubernetes' RBAC) names them."""
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def ssl_context(cluster: Cluster) -> tuple[str, ssl.SSLContext | bool]:
    """The API server's URL and a TLS context with the kubeconfig's CA and client certificate."""
    configuration = await cluster.configuration()
    host = str(configuration.host).rstrip("/")
    if not host.startswith("https:"):
        return host, False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    return host, context


class RealKube:
    """A fresh namespace on a real API server, watched from this process (start, then close)."""

    def __init__(self, kubeconfig: Path, *, prefix: str = "ghapp-bench") -> None:
        self.kubeconfig = kubeconfig
        self.cluster = Cluster(kubeconfig)
        self.prefix = prefix
        self.namespace = ""
        self.url = ""
        self.created: dict[str, dict[str, float]] = {"jobs": {}, "secrets": {}}
        self._session: aiohttp.ClientSession | None = None
        self._watches: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.url, context = await ssl_context(self.cluster)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), trust_env=False, read_bufsize=2**21
        )
        self.namespace = await asyncio.to_thread(self.cluster.create_namespace, self.prefix)
        ready = [asyncio.get_running_loop().create_future() for _ in WATCHED]
        self._watches = [
            asyncio.create_task(self._watch(resource, started))
            for resource, started in zip(WATCHED, ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*ready), 30)

    async def _watch(self, resource: str, started: asyncio.Future[None]) -> None:
        """Note the first time each object of `resource` is seen in the namespace (list, then watch)."""
        assert self._session is not None
        path = self.url + WATCHED[resource].format(ns=self.namespace)
        loop = asyncio.get_running_loop()
        seen = self.created[resource]
        async with self._session.get(path) as response:
            response.raise_for_status()
            listed = await response.json()
        for item in listed["items"]:
            seen.setdefault(item["metadata"]["name"], loop.time())
        version = listed["metadata"]["resourceVersion"]
        query = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "3600"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._session.get(path, params=query, timeout=timeout) as response:
            response.raise_for_status()
            started.set_result(None)
            async for line in response.content:
                event = json.loads(line)
                if event["type"] == "ADDED":
                    seen.setdefault(event["object"]["metadata"]["name"], loop.time())

    async def request_counts(self) -> Counter[str]:
        """The API server's requests so far on Jobs and Secrets, as "verb resource[/subresource]"."""
        assert self._session is not None
        async with self._session.get(self.url + "/metrics") as response:
            response.raise_for_status()
            text = await response.text()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            match = _METRIC.match(line)
            if match is None:
                continue
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("resource") not in WATCHED or labels.get("dry_run"):
                continue
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            verb = VERBS.get(labels.get("verb", ""), labels.get("verb", "").lower())
            counts[f"{verb} {labels['resource']}{sub}"] += int(float(match["value"]))
        return counts

    async def close(self, *, within: float = 180.0) -> None:
        """Stop watching; delete the namespace and wait (at most `within` s) until it is gone, so that
        the garbage collector's work on it does not fall into a later phase. Safe to call twice."""
        for task in self._watches:
            task.cancel()
        for task in self._watches:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
        self._watches = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.namespace:
            await asyncio.to_thread(self.cluster.delete_namespace, self.namespace)

            async def gone() -> bool:
                code, _, _ = await self.cluster.akubectl("get", "namespace", self.namespace, check=False)
                return code != 0

            await eventually(gone, within=within, what=f"namespace {self.namespace} to be deleted")
            self.namespace = ""


def writes(counts: Counter[str]) -> int:
    """Creates, updates, patches and deletes of Jobs and Secrets themselves (not their status), from counts
    keyed "verb resource[/subresource]" (`RealKube.request_counts`, `TimedKube.request_counts`)."""
    return sum(
        n
        for key, n in counts.items()
        if key.split()[0] in ("create", "update", "patch", "delete") and key.split()[1] in WATCHED
    )
