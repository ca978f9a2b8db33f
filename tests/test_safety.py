"""Never destroy what is still in use, never run two leaders: deletions re-check the truth (a grace age, a
GET, a lookup by name), and a leader whose API calls hang stops before another replica may take over."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from ghapp.app import Services, start_services
from ghapp.clock import ManualClock
from ghapp.config import Settings, load_settings
from ghapp.manifests import RUNNER_SELECTOR
from ghapp.metrics import Metrics

from .conftest import NAMESPACE, ORG_INSTALLATION, Ghapp
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
    clock.advance(601)  # the Job is older than the registration timeout
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
