"""The real control plane: what the API server decides (validation, ownership, garbage collection, the Job
controller) is proven here, on kube-apiserver, etcd and kube-controller-manager (tests/realcluster.py)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from ghapp import check
from ghapp.config import load_settings

from .conftest import ORG_INSTALLATION, Ghapp
from .realcluster import Cluster, eventually

LINUX = ["self-hosted", "linux", "x64"]


async def test_a_queued_job_becomes_a_job_and_its_secret_on_a_real_api_server(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with()
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"

    job = await cluster.get("job", name, cluster_namespace)
    secret = await cluster.get("secret", name, cluster_namespace)
    assert job is not None
    assert secret is not None
    # the registration token is only in the Secret, which the Job owns
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token
    assert token not in str(job)
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name, job["metadata"]["uid"])

    # the garbage collector removes the Secret with its Job
    await cluster.akubectl("-n", cluster_namespace, "delete", "job", name, "--cascade=background")

    async def secret_gone() -> bool:
        return await cluster.get("secret", name, cluster_namespace) is None

    await eventually(secret_gone, what="the runner Secret garbage-collected with its Job")


async def test_default_settings_runner_pods_are_created_in_a_fresh_namespace(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with()
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()

    async def pods() -> list[dict[str, Any]]:
        return await cluster.objects("pods", cluster_namespace, selector=f"job-name=ghapp-{job_id}")

    # the real Job controller makes the runner's Pod (no ServiceAccount needed beyond `default`)
    (pod,) = await eventually(pods, what="the Job controller to create the runner Pod")
    assert pod["spec"]["serviceAccountName"] == "default"
    assert pod["spec"]["automountServiceAccountToken"] is False
    events = await cluster.objects("events", cluster_namespace)
    assert [e for e in events if e.get("reason") == "FailedCreate"] == []


async def test_check_fails_a_pool_whose_dedicated_service_account_is_missing(
    environ: dict[str, str], cluster: Cluster, cluster_namespace: str
) -> None:
    settings = load_settings(
        {**environ, "GHAPP_NAMESPACE": cluster_namespace, "GHAPP_RUNNER_SERVICE_ACCOUNT": "ci-runner"}
    )
    results = await check.run_checks(settings, kube_configuration=await cluster.configuration())
    failed = [r.line() for r in results if not r.ok and r.what.startswith("Kubernetes")]
    assert failed[0].startswith(
        f"FAIL  Kubernetes: pool linux can start runners in namespace {cluster_namespace}"
    )
    assert f"ServiceAccount 'ci-runner' not found in namespace {cluster_namespace}" in failed[0]
    assert len(failed) == 2

    await cluster.akubectl("-n", cluster_namespace, "create", "serviceaccount", "ci-runner")
    results = await check.run_checks(settings, kube_configuration=await cluster.configuration())
    assert [r.line() for r in results if not r.ok and r.what.startswith("Kubernetes")] == []
    # the dry runs stored nothing
    assert await cluster.objects("jobs", cluster_namespace) == []
    assert (
        await cluster.objects("secrets", cluster_namespace, selector="app.kubernetes.io/managed-by=ghapp")
        == []
    )
