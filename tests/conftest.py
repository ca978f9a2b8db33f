"""Shared fixtures: the fake GitHub, the Kubernetes emulator, and ghapp itself, all on loopback."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from ghapp.app import Services, build_admin_app, build_app, start_services
from ghapp.clock import ManualClock, parse_timestamp
from ghapp.config import Settings, load_settings
from ghapp.metrics import Metrics

from . import realcluster
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM
from .realcluster import Cluster

APP_ID = 12345
WEBHOOK_SECRET = "it's-a-secret-to-everybody"
NAMESPACE = "runners"
ORG_INSTALLATION = 4242  # acme: an organisation
USER_INSTALLATION = 5151  # alice: a user
OTHER_ORG_INSTALLATION = 6161  # globex: another organisation

POOLS_YAML = """
pools:
  - name: linux
    labels: [self-hosted, linux, x64]
    max_runners: 20
    image: ghcr.io/actions/actions-runner:2.330.0
  - name: gpu
    labels: [self-hosted, linux, x64, gpu]
    max_runners: 2
"""


async def wait_for(predicate: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds, failing after `within` seconds (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def advance_past_creation(clock: ManualClock, objects: list[dict[str, Any]], seconds: float) -> None:
    """Move `clock` on to `seconds` after the youngest of `objects` was made.

    Their ``creationTimestamp`` is the API server's wall clock, which a `ManualClock` (started at the wall
    clock's time when the test began) does not follow: under load, making them may take seconds of real
    time, so ``clock.advance(seconds)`` alone may leave them younger than `seconds`.
    """
    newest = max(parse_timestamp(obj["metadata"]["creationTimestamp"]) for obj in objects)
    clock.advance(max(0.0, newest + seconds - clock.now()))


@pytest.fixture
def clock() -> ManualClock:
    """Time for ghapp and the fake GitHub: starts now, moves only when a test (or a wait) moves it."""
    return ManualClock(current=time.time())


def new_github(*, clock: ManualClock, base_path: str = "") -> FakeGitHub:
    """The fake GitHub with the App installed on acme (org), alice (user) and globex (org); not started.

    ``base_path="/api/v3"`` makes it a GitHub Enterprise Server.
    """
    fake = FakeGitHub(
        app_id=APP_ID,
        public_key_pem=PUBLIC_KEY_PEM,
        webhook_secret=WEBHOOK_SECRET,
        base_path=base_path,
        clock=clock.now,
    )
    fake.add_installation(
        installation_id=ORG_INSTALLATION,
        account="acme",
        account_type="Organization",
        repositories=["webapp", "api"],
    )
    fake.add_installation(
        installation_id=USER_INSTALLATION, account="alice", account_type="User", repositories=["tools"]
    )
    fake.add_installation(
        installation_id=OTHER_ORG_INSTALLATION,
        account="globex",
        account_type="Organization",
        repositories=["site"],
    )
    return fake


@pytest.fixture
async def github(clock: ManualClock) -> AsyncIterator[FakeGitHub]:
    fake = new_github(clock=clock)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.fixture
def pools_file(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS_YAML)
    return path


@pytest.fixture
def environ(github: FakeGitHub, pools_file: Path) -> dict[str, str]:
    """The environment a deployment would set, pointing at the fakes."""
    return {
        "GHAPP_APP_ID": str(APP_ID),
        "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
        "GHAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GHAPP_GITHUB_API_URL": github.api_url,
        "GHAPP_NAMESPACE": NAMESPACE,
        "GHAPP_POOLS_FILE": str(pools_file),
        "GHAPP_ALLOWED_ACCOUNTS": "acme,alice,globex",
    }


@pytest.fixture
def settings(environ: dict[str, str]) -> Settings:
    return load_settings(environ)


def write_pools(path: Path, **pool: Any) -> Path:
    """A pools file with one `linux` pool, fields overridden by `pool`."""
    path.write_text(
        yaml.safe_dump({"pools": [{"name": "linux", "labels": ["self-hosted", "linux", "x64"], **pool}]})
    )
    return path


@dataclass
class Ghapp:
    """A running ghapp: its services, its HTTP server and helpers to talk to it."""

    services: Services
    server: TestServer
    admin: TestServer
    """The admin listener: /metrics, /status, /status.json."""
    github: FakeGitHub
    kube: Any  # KubeEmulator, or a realcluster.Cluster for the real tier
    stopped: bool = False

    @property
    def webhook_url(self) -> str:
        return str(self.server.make_url("/webhook"))

    async def stop(self) -> None:
        """Shut down as on SIGTERM (idempotent)."""
        if not self.stopped:
            self.stopped = True
            await self.admin.close()
            await self.server.close()

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one metric sample (0 if it has not been recorded)."""
        return self.services.metrics.registry.get_sample_value(name, labels) or 0.0

    async def settle(self) -> None:
        """Wait until every delivery received so far has been fully processed."""
        await asyncio.wait_for(self.services.tasks.idle(), 30)

    async def queue(self, *, installation_id: int, repository: str, labels: list[str], **kwargs: Any) -> int:
        """Queue a job in the fake GitHub and deliver its signed ``queued`` webhook; return the job id."""
        job = self.github.queue_job(
            installation_id=installation_id, repository=repository, labels=labels, **kwargs
        )
        await self.github.deliver("workflow_job", self.github.workflow_job_payload(job["id"], "queued"))
        return int(job["id"])

    def runner_jobs(self) -> list[dict[str, Any]]:
        return self.kube.objects("jobs", NAMESPACE)

    def runner_secrets(self) -> list[dict[str, Any]]:
        return self.kube.objects("secrets", NAMESPACE)

    async def post(self, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.webhook_url, data=body, headers=headers) as response,
        ):
            await response.read()
            return response


async def start_ghapp(
    settings: Settings,
    github: FakeGitHub,
    kube: KubeEmulator | Cluster,
    *,
    reconcile: bool = False,
    **kwargs: Any,
) -> Ghapp:
    """Start ghapp on loopback against the emulator or a real cluster; the reconciler loop only when asked
    (tests mostly run single passes)."""
    configuration = await kube.configuration() if isinstance(kube, Cluster) else kube.configuration()
    services = await start_services(settings, kube_configuration=configuration, metrics=Metrics(), **kwargs)
    app: web.Application = build_app(services, reconcile=reconcile)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    admin = TestServer(build_admin_app(services), host="127.0.0.1")
    await admin.start_server()
    github.webhook_url = str(server.make_url("/webhook"))
    return Ghapp(services=services, server=server, admin=admin, github=github, kube=kube)


@pytest.fixture
async def ghapp_with(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> AsyncIterator[Callable[..., Awaitable[Ghapp]]]:
    """Start ghapp with some settings changed (``GHAPP_X="…"``); every one started is stopped at the end."""
    started: list[Ghapp] = []

    async def start(**changes: str) -> Ghapp:
        running = await start_ghapp(load_settings({**environ, **changes}), github, kube, clock=clock)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def ghapp(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> AsyncIterator[Ghapp]:
    running = await start_ghapp(settings, github, kube, clock=clock)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The real control plane (see tests/realcluster.py for which one); skipped only outside CI."""
    given = os.environ.get("GHAPP_TEST_KUBECONFIG")
    if given:
        yield Cluster(kubeconfig=Path(given))
        return
    if not (realcluster.SHARED_K8S / "up").is_file():
        if realcluster.required():
            pytest.fail("GHAPP_REQUIRE_REAL_CLUSTER is set but no control plane: set GHAPP_TEST_KUBECONFIG")
        pytest.skip("no control plane at hand: set GHAPP_TEST_KUBECONFIG to run this tier")  # ok-skip
    folder = tmp_path_factory.mktemp("k8s")
    kubeconfig = realcluster.start_shared(folder)
    try:
        yield Cluster(kubeconfig=kubeconfig)
    finally:
        realcluster.stop_shared(folder)


@pytest.fixture
def cluster_namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on the real control plane, deleted after the test."""
    name = cluster.create_namespace()
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture
async def real_ghapp_with(
    environ: dict[str, str], github: FakeGitHub, cluster: Cluster, cluster_namespace: str, clock: ManualClock
) -> AsyncIterator[Callable[..., Awaitable[Ghapp]]]:
    """Like ``ghapp_with``, on the real control plane, with GHAPP_NAMESPACE set to a fresh namespace."""
    started: list[Ghapp] = []

    async def start(**changes: str) -> Ghapp:
        changed = {**environ, "GHAPP_NAMESPACE": cluster_namespace, **changes}
        running = await start_ghapp(load_settings(changed), github, cluster, clock=clock)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
