"""Runner failures on the real control plane: the real Job controller makes Pods (or FailedCreate Events),
the test plays the kubelet by patching ``pods/status``, ghapp classifies, replaces and tracks pool health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .conftest import ORG_INSTALLATION, Ghapp
from .realcluster import Cluster, eventually

LINUX = ["self-hosted", "linux", "x64"]


async def runner_pod(cluster: Cluster, namespace: str, name: str, *, not_uid: str = "") -> dict[str, Any]:
    """The Pod of runner Job `name` (not of the Job whose uid is `not_uid`)."""

    async def pods() -> list[dict[str, Any]]:
        found = await cluster.objects("pods", namespace, selector=f"job-name={name}")
        return [p for p in found if p["metadata"]["ownerReferences"][0]["uid"] != not_uid]

    found = await eventually(pods, what=f"the Job controller to create the Pod of {name}")
    pod: dict[str, Any] = found[-1]
    return pod


def container_statuses(pod: dict[str, Any], state: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": state,
        }
        for c in pod["spec"]["containers"]
    ]


async def job_attempt(cluster: Cluster, namespace: str, name: str) -> tuple[str, str] | None:
    job = await cluster.get("job", name, namespace)
    if job is None:
        return None
    return job["metadata"]["uid"], job["metadata"]["annotations"]["ghapp/attempt"]


async def test_an_image_pull_failure_gets_a_fresh_runner_bounded(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with(GHAPP_RUNNER_ATTEMPTS="2")
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    first = await job_attempt(cluster, cluster_namespace, name)
    assert first is not None
    assert first[1] == "1"
    pod = await runner_pod(cluster, cluster_namespace, name)
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "bad:1"'}}
    await cluster.patch_status(
        "pod",
        pod["metadata"]["name"],
        cluster_namespace,
        {"containerStatuses": container_statuses(pod, waiting)},
    )

    async def replaced() -> tuple[str, str] | None:
        now = await job_attempt(cluster, cluster_namespace, name)
        return now if now is not None and now[0] != first[0] else None

    second = await eventually(replaced, what="a fresh runner Job for the still-queued job")
    assert second[1] == "2"
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="image_pull") == 1
    events = await cluster.objects("events", cluster_namespace)
    (event,) = [e for e in events if e.get("reason") == "RunnerFailed"]
    assert event["involvedObject"]["uid"] == first[0]
    assert "image_pull" in event["message"]

    # the second runner fails the same way: ghapp gives up, no third Job
    pod = await runner_pod(cluster, cluster_namespace, name, not_uid=first[0])
    await cluster.patch_status(
        "pod",
        pod["metadata"]["name"],
        cluster_namespace,
        {"containerStatuses": container_statuses(pod, waiting)},
    )

    async def given_up() -> bool:
        return job_id in ghapp.services.launcher.health.given_up

    await eventually(given_up, what="ghapp to give up on the job")
    await ghapp.settle()
    assert await job_attempt(cluster, cluster_namespace, name) == second


async def test_exit_code_7_marks_the_pool_outdated(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with()
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    pod = await runner_pod(cluster, cluster_namespace, name)
    terminated = {"terminated": {"exitCode": 7, "reason": "Error"}}
    await cluster.patch_status(
        "pod",
        pod["metadata"]["name"],
        cluster_namespace,
        {"phase": "Failed", "containerStatuses": container_statuses(pod, terminated)},
    )

    async def outdated() -> bool:
        state = ghapp.services.launcher.health.pools["linux"]
        return not state.healthy and state.reason == "outdated"

    await eventually(outdated, what="the pool marked outdated")
    assert ghapp.metric("ghapp_pool_healthy", pool="linux") == 0
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="outdated") == 1


async def test_a_missing_service_account_makes_the_pool_unhealthy_and_failed_create_is_seen(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with(GHAPP_RUNNER_SERVICE_ACCOUNT="ci-runner", GHAPP_RUNNER_ATTEMPTS="1")
    state = ghapp.services.launcher.health.pools["linux"]
    assert (state.healthy, state.reason) == (False, "create_failed")
    assert ghapp.metric("ghapp_pool_healthy", pool="linux") == 0
    assert f"ServiceAccount 'ci-runner' not found in namespace {cluster_namespace}" in state.message

    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()

    async def classified() -> bool:
        return ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="create_failed") == 1

    # the real Job controller's FailedCreate Event (serviceaccount "ci-runner" not found) is classified
    await eventually(classified, what="FailedCreate classified as create_failed")
    await ghapp.settle()
    assert job_id in ghapp.services.launcher.health.given_up
