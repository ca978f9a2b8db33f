"""Never destroy what is still in use, never run two leaders: deletions re-check the truth (a grace age, a
GET, a lookup by name), and a leader whose API calls hang stops before another replica may take over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from ghapp.app import Services, start_services
from ghapp.clock import ManualClock, parse_timestamp
from ghapp.config import Settings, load_settings
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.leader import LeaderElector
from ghapp.manifests import RUNNER_SELECTOR
from ghapp.metrics import Metrics

from .conftest import NAMESPACE, ORG_INSTALLATION, Ghapp, advance_past_creation, wait_for
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .realcluster import Cluster

LINUX = ["self-hosted", "linux", "x64"]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def names(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects}


def orphan_secret(name: str, namespace: str, labels: dict[str, str], **metadata: Any) -> dict[str, Any]:
    """A runner Secret that no Job owns."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, **metadata},
        "data": {"token": "eA=="},
    }


@asynccontextmanager
async def reconcile_once_process(
    settings: Settings, kube: KubeEmulator | Cluster, clock: ManualClock
) -> AsyncIterator[Services]:
    """What ``ghapp reconcile --once`` builds: its own services, whose view is one list of the cluster."""
    configuration = await kube.configuration() if isinstance(kube, Cluster) else kube.configuration()
    services = await start_services(
        settings, kube_configuration=configuration, clock=clock, metrics=Metrics()
    )
    try:
        await services.inventory.sync()
        yield services
    finally:
        await services.close()


# -- item 5: a fresh Secret is never deleted as an orphan ---------------------------------------------


async def test_a_pass_whose_view_lags_keeps_a_fresh_secret_and_removes_an_old_orphan(
    ghapp: Ghapp, settings: Settings, kube: KubeEmulator, clock: ManualClock
) -> None:
    grace = settings.orphan_grace_seconds
    async with reconcile_once_process(settings, kube, clock) as once:
        # `serve` launches a runner just after `reconcile --once` listed the cluster
        job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await ghapp.settle()
        name = f"ghapp-{job_id}"
        assert name not in once.inventory.jobs  # that pass's view lags
        report = await once.reconciler.reconcile_once()
        assert (report.orphan_secret_deleted, report.errors) == (0, [])
        assert names(ghapp.runner_secrets()) == {name}  # young: left alone

        # past the grace period the view still lags, but a GET finds the Job that owns the Secret
        (job,) = ghapp.runner_jobs()
        old_orphan = orphan_secret(
            "ghapp-5555",
            NAMESPACE,
            {**job["metadata"]["labels"], "ghapp/workflow-job-id": "5555"},
            creationTimestamp=iso(clock.now() - 1),
        )
        kube.put_object("secrets", old_orphan)
        clock.advance(grace + 2)
        report = await once.reconciler.reconcile_once()
        assert (report.orphan_secret_deleted, report.errors) == (1, [])
        assert names(ghapp.runner_secrets()) == {name}  # the true orphan went, the Job's Secret stays


async def test_real_api_server_a_fresh_secret_survives_a_lagging_pass_an_old_orphan_does_not(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]],
    environ: dict[str, str],
    cluster: Cluster,
    cluster_namespace: str,
    clock: ManualClock,
) -> None:
    ghapp = await real_ghapp_with()
    settings = load_settings({**environ, "GHAPP_NAMESPACE": cluster_namespace})
    grace = settings.orphan_grace_seconds
    async with reconcile_once_process(settings, cluster, clock) as once:
        job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await ghapp.settle()
        name = f"ghapp-{job_id}"
        job = await cluster.get("job", name, cluster_namespace)
        assert job is not None
        labels = {**job["metadata"]["labels"], "ghapp/workflow-job-id": "5555"}
        # a runner Secret no Job owns (a true orphan), made on the API server just now
        await cluster.akubectl(
            "-n",
            cluster_namespace,
            "create",
            "-f",
            "-",
            stdin=json.dumps(orphan_secret("ghapp-5555", cluster_namespace, labels)),
        )
        assert name not in once.inventory.jobs  # the pass has not seen the Job

        report = await once.reconciler.reconcile_once()
        assert (report.orphan_secret_deleted, report.errors) == (0, [])
        secrets = await cluster.objects("secret", cluster_namespace, selector=RUNNER_SELECTOR)
        assert names(secrets) == {name, "ghapp-5555"}  # both young: both kept

        # later (by ghapp's clock; the API server stamped both Secrets with its own time)
        clock.advance(time.time() - clock.now() + grace + 5)
        report = await once.reconciler.reconcile_once()
        assert (report.orphan_secret_deleted, report.errors) == (1, [])
        secrets = await cluster.objects("secret", cluster_namespace, selector=RUNNER_SELECTOR)
        assert names(secrets) == {name}  # the Job's Secret (confirmed by a GET) stays, the orphan went


# -- item 8: a busy runner's Job is never deleted because one listing missed the runner ---------------


async def test_a_busy_runner_a_listing_skipped_keeps_its_job(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_REGISTRATION_TIMEOUT_SECONDS="600")
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    github.register_runner(scope="org:acme", name=name, labels=LINUX)
    github.start_job(job_id, runner_name=name)  # busy, mid-job
    advance_past_creation(clock, ghapp.runner_jobs(), 601)  # the Job is older than the registration timeout
    github.skip_in_listings(name)  # it slips between two pages of the next listing

    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.orphan_job_deleted, report.errors) == (0, [])
    assert names(ghapp.runner_jobs()) == {name}
    (lookup,) = github.calls_to("GET", r"/orgs/acme/actions/runners")[-1:]
    assert lookup.query.get("name") == name  # absence was checked by name

    # a runner that is really gone still has its Job removed
    github.complete_job(job_id)  # the ephemeral runner deregisters; say its pod then hung
    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.orphan_job_deleted, report.errors) == (1, [])
    assert ghapp.runner_jobs() == []


# -- item 9: a leader whose API calls hang stops leading before the lease can pass on -------------------


async def test_a_leader_whose_renewal_hangs_stops_the_reconciler_while_the_lease_still_holds(
    kube: KubeEmulator, clock: ManualClock
) -> None:
    metrics = Metrics()
    transport = KubeTransport(kube.configuration())
    elector = LeaderElector(
        kube=KubeClient(http=transport, namespace=NAMESPACE, clock=clock, metrics=metrics),
        name="ghapp-reconciler",
        identity="replica-a",
        duration=15.0,
        clock=clock,
        metrics=metrics,
    )
    leading = asyncio.Event()
    stopped_at: list[float] = []

    async def reconcile_forever() -> None:
        leading.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped_at.append(clock.now())

    campaign = asyncio.create_task(elector.run(reconcile_forever))
    try:
        await wait_for(leading.is_set, what="replica-a leads")
        kube.stall(resource="leases")  # the API server stops answering (no error, no answer)
        await wait_for(lambda: kube.stalled > 0, what="a renewal that hangs")
        lease = kube.get("leases", NAMESPACE, "ghapp-reconciler")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "replica-a"
        # another replica may take over once it has seen this record unrenewed for the lease's duration
        takeover = parse_timestamp(lease["spec"]["renewTime"]) + lease["spec"]["leaseDurationSeconds"]
        assert stopped_at == []

        clock.advance(takeover - 0.01 - clock.now())  # time passes, up to just before that
        await wait_for(lambda: bool(stopped_at), within=5, what="the reconciler stopped")
        assert stopped_at[0] < takeover
        await wait_for(lambda: not elector.is_leader, what="no longer the leader")
        assert metrics.registry.get_sample_value("ghapp_leader") == 0
    finally:
        kube.unstall()
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaign
        await transport.close()


async def test_manual_clock_timeouts_fire_when_the_clock_reaches_them(clock: ManualClock) -> None:
    async def bounded() -> None:
        async with clock.timeout(10):
            await asyncio.Event().wait()

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0)  # let it enter the block
    clock.advance(9.9)
    for _ in range(10):  # give a (wrongly) fired deadline every chance to land
        await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 5)
    assert clock._deadlines == []


# -- item 11: JIT races between replicas ------------------------------------------------------------------


async def test_an_offline_runner_without_a_job_is_removed_only_once_seen_past_the_grace(
    ghapp: Ghapp, github: FakeGitHub, clock: ManualClock
) -> None:
    # another replica registered a JIT runner and has not made its Job yet (or died doing so)
    github.register_runner(scope="org:acme", name="ghapp-4444", labels=LINUX, status="offline")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()  # (a runner Job in acme, so the pass looks at acme's runners)
    first = await ghapp.services.reconciler.reconcile_once()
    assert (first.orphan_runner_removed, first.errors) == (0, [])
    assert "ghapp-4444" in {r["name"] for r in github.runners("org:acme")}

    clock.advance(ghapp.services.settings.orphan_grace_seconds)
    later = await ghapp.services.reconciler.reconcile_once()
    assert (later.orphan_runner_removed, later.errors) == (1, [])
    assert "ghapp-4444" not in {r["name"] for r in github.runners("org:acme")}


GPU = ["self-hosted", "linux", "x64", "gpu"]


async def one_job_waits(ghapp: Ghapp) -> tuple[int, int]:
    """Fill the gpu pool (max_runners 2) and queue one more: (a running job's id, the waiting job's id)."""
    first, second, waiting = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=GPU)
        for _ in range(3)
    ]
    await ghapp.settle()
    assert names(ghapp.runner_jobs()) == {f"ghapp-{first}", f"ghapp-{second}"}
    assert ghapp.services.launcher.is_known(waiting)
    return first, waiting


async def free_a_slot(ghapp: Ghapp, kube: KubeEmulator, running: int, waiting: int) -> None:
    kube.finish_job(NAMESPACE, f"ghapp-{running}")  # capacity frees here
    await wait_for(lambda: not ghapp.services.launcher.is_known(waiting), what="the waiting job's turn")
    await ghapp.settle()


async def test_a_waiting_job_that_completed_meanwhile_gets_no_runner(
    ghapp: Ghapp, github: FakeGitHub, kube: KubeEmulator
) -> None:
    running, waiting = await one_job_waits(ghapp)
    # the waiting job ran elsewhere and completed; its webhook went to another replica, not this one
    github.cancel_job(waiting)
    await free_a_slot(ghapp, kube, running, waiting)
    assert f"ghapp-{waiting}" not in names(ghapp.runner_jobs())
    (check,) = github.calls_to("GET", rf"/repos/acme/webapp/actions/jobs/{waiting}")
    assert check.status == 200
    skipped = ghapp.metric("ghapp_runners_launched_total", pool="gpu", outcome="skipped")
    assert skipped == 1


async def test_a_waiting_job_still_queued_gets_its_runner(ghapp: Ghapp, kube: KubeEmulator) -> None:
    running, waiting = await one_job_waits(ghapp)
    await free_a_slot(ghapp, kube, running, waiting)
    assert f"ghapp-{waiting}" in names(ghapp.runner_jobs())
