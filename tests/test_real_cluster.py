"""The real control plane: what the API server decides (validation, ownership, garbage collection, the Job
controller) is proven here, on kube-apiserver, etcd and kube-controller-manager (tests/realcluster.py)."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ghapp import check
from ghapp.clock import ManualClock, parse_timestamp
from ghapp.config import load_settings

from .conftest import ORG_INSTALLATION, Ghapp, write_pools
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


async def test_check_fails_a_pool_whose_template_the_namespaces_pod_security_level_refuses(
    environ: dict[str, str], cluster: Cluster, cluster_namespace: str, tmp_path: Path
) -> None:
    """With Pod Security ``warn`` beside ``enforce`` (as deploy/base sets on ghapp-runners), the API server
    reports a Job whose pod template the level refuses, and check's dry run FAILs that pool only."""
    for mode in ("enforce", "warn"):
        await cluster.akubectl(
            "label", "namespace", cluster_namespace, f"pod-security.kubernetes.io/{mode}=restricted"
        )
    base = {**environ, "GHAPP_NAMESPACE": cluster_namespace}
    results = await check.run_checks(load_settings(base), kube_configuration=await cluster.configuration())
    assert [r.line() for r in results if not r.ok and r.what.startswith("Kubernetes")] == []

    privileged = {
        "containers": [{"name": "dind", "image": "docker:27-dind", "securityContext": {"privileged": True}}]
    }
    pools = write_pools(tmp_path / "pools.yaml", template={"spec": privileged})
    settings = load_settings({**base, "GHAPP_POOLS_FILE": str(pools)})
    results = await check.run_checks(settings, kube_configuration=await cluster.configuration())
    (failed,) = [r.line() for r in results if not r.ok and r.what.startswith("Kubernetes")]
    assert failed.startswith(
        f"FAIL  Kubernetes: pool linux can start runners in namespace {cluster_namespace}"
    )
    assert "privileged" in failed
    assert await cluster.objects("jobs", cluster_namespace) == []


async def test_pod_running_and_runner_time_come_from_the_real_job_controller(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]],
    cluster: Cluster,
    cluster_namespace: str,
    clock: ManualClock,
) -> None:
    """The real Job controller reports a ready pod in the Job's ``status.ready`` and the end in its
    ``completionTime``: the timeline's "pod running" and the runner seconds come from there."""
    clock.current = time.time() - 60  # ghapp's clock a minute behind the API server's: runner time > 50 s
    ghapp = await real_ghapp_with()
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    timeline = ghapp.services.timeline

    async def pods() -> list[dict[str, Any]]:
        return await cluster.objects("pods", cluster_namespace, selector=f"job-name={name}")

    (pod,) = await eventually(pods, what="the Job controller to create the runner Pod")
    clock.advance(7)
    # play the kubelet: the runner container runs and is ready
    await cluster.patch_status(
        "pod",
        pod["metadata"]["name"],
        cluster_namespace,
        {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "runner",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        },
    )

    async def running() -> bool:
        entry = timeline.get(job_id)
        return entry is not None and entry.pod_running_at is not None

    async def ready() -> bool:
        job = ghapp.services.inventory.jobs.get(name)
        return job is not None and job.ready

    await eventually(running, what="the pod watch to see the runner running")
    await eventually(ready, what="status.ready from the Job controller")  # runner time counts from here
    entry = timeline.get(job_id)
    assert entry is not None
    assert entry.runner_job_created_at is not None
    assert entry.pod_running_at == clock.now()
    assert ghapp.metric("ghapp_job_runner_job_to_pod_running_seconds_sum", pool="linux") == (
        entry.pod_running_at - entry.runner_job_created_at
    )
    assert ghapp.metric("ghapp_job_runner_job_to_pod_running_seconds_count", pool="linux") == 1

    # the runner exits: the Job controller completes the Job with its completionTime
    await cluster.patch_status(
        "pod",
        pod["metadata"]["name"],
        cluster_namespace,
        {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "name": "runner",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
            ],
        },
    )

    async def finished() -> bool:
        job = ghapp.services.inventory.jobs.get(name)
        return job is not None and job.finished

    await eventually(finished, within=30, what="the Job controller to complete the Job")
    job = await cluster.get("job", name, cluster_namespace)
    assert job is not None
    completed = parse_timestamp(job["status"]["completionTime"])
    assert ghapp.services.inventory.jobs[name].finished_at == completed
    seconds = ghapp.metric("ghapp_runner_seconds_total", pool="linux", account="acme")
    assert seconds == completed - entry.pod_running_at
    assert seconds > 50
    (row,) = ghapp.services.usage.window(86400, now=completed).rows
    assert (row.account, row.pool, row.seconds) == ("acme", "linux", round(seconds, 3))
