"""Runner failures end to end on the Kubernetes emulator: its Job controller makes the Pods, the test plays
the kubelet; ghapp classifies each failure, reports it, replaces the runner (bounded), tracks pool health."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ghapp import check
from ghapp.clock import ManualClock, format_timestamp
from ghapp.health import BACKOFF_BASE

from .conftest import NAMESPACE, ORG_INSTALLATION, Ghapp, wait_for

LINUX = ["self-hosted", "linux", "x64"]


def attempt(ghapp: Ghapp, name: str) -> str | None:
    job = ghapp.kube.get("jobs", NAMESPACE, name)
    return None if job is None else str(job["metadata"]["annotations"]["ghapp/attempt"])


def runner_events(ghapp: Ghapp) -> list[dict[str, Any]]:
    return [e for e in ghapp.kube.objects("events", NAMESPACE) if e.get("reason") == "RunnerFailed"]


async def queue(ghapp: Ghapp) -> str:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    return f"ghapp-{job_id}"


async def test_an_image_pull_failure_gets_a_fresh_runner_then_ghapp_gives_up(
    ghapp_with: Callable[..., Awaitable[Ghapp]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ghapp = await ghapp_with(GHAPP_RUNNER_ATTEMPTS="2")
    name = await queue(ghapp)
    first = ghapp.kube.get("jobs", NAMESPACE, name)
    assert first is not None
    assert attempt(ghapp, name) == "1"
    assert len(ghapp.kube.pods_of(NAMESPACE, name)) == 1  # the emulator's Job controller made its Pod

    failed_pod = ghapp.kube.image_pull_failing(NAMESPACE, name, message='Back-off pulling image "bad:1"')
    await wait_for(lambda: attempt(ghapp, name) == "2", what="a fresh runner Job for the still-queued job")
    await ghapp.settle()
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="image_pull") == 1
    (event,) = runner_events(ghapp)
    assert event["involvedObject"]["uid"] == first["metadata"]["uid"]
    assert event["type"] == "Warning"
    assert (
        event["message"]
        == 'pool linux: image_pull: container runner: ImagePullBackOff: Back-off pulling image "bad:1"'
    )
    line = next(r for r in caplog.records if r.getMessage().startswith(f"runner {name} of pool linux failed"))
    assert line.getMessage().endswith(
        'image_pull: container runner: ImagePullBackOff: Back-off pulling image "bad:1"'
    )
    assert ghapp.kube.get("secrets", NAMESPACE, name) is not None  # the new runner has its credential

    second = ghapp.kube.get("jobs", NAMESPACE, name)
    assert second is not None
    # news of the failed Job's Pod that lingers (its owner's uid is the old one) is not the replacement's
    ghapp.services.pods.pod_changed("MODIFIED", failed_pod)
    await ghapp.settle()
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="image_pull") == 1
    assert attempt(ghapp, name) == "2"
    ghapp.kube.image_pull_failing(NAMESPACE, name)
    job_id = int(name.removeprefix("ghapp-"))
    await wait_for(lambda: job_id in ghapp.services.launcher.health.given_up, what="ghapp to give up")
    await ghapp.settle()
    assert "2 runner(s) failed, the last: image_pull" in ghapp.services.launcher.health.given_up[job_id]
    assert any("gave up starting runners for workflow job" in r.getMessage() for r in caplog.records)
    # bounded: no third runner, not even for a redelivered webhook
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "queued"))
    await ghapp.settle()
    third = ghapp.kube.get("jobs", NAMESPACE, name)
    assert third is not None
    assert third["metadata"]["uid"] == second["metadata"]["uid"]
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="image_pull") == 2


async def test_a_failed_runner_of_a_job_no_longer_queued_is_not_replaced(
    ghapp_with: Callable[..., Awaitable[Ghapp]],
) -> None:
    ghapp = await ghapp_with()
    name = await queue(ghapp)
    job_id = int(name.removeprefix("ghapp-"))
    ghapp.github.cancel_job(job_id)
    ghapp.kube.run_pod(NAMESPACE, name)
    ghapp.kube.exit_pod(NAMESPACE, name, exit_code=1)
    await wait_for(
        lambda: ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="runner_error") == 1,
        what="the failure counted",
    )
    await ghapp.settle()
    assert attempt(ghapp, name) == "1"


@pytest.mark.parametrize(
    ("kubelet", "reason"),
    [
        (lambda kube, name: kube.evict_pod(NAMESPACE, name), "killed"),
        (
            lambda kube, name: kube.evict_pod(NAMESPACE, name, reason="NodeLost", message="node gone"),
            "killed",
        ),
        (lambda kube, name: kube.exit_pod(NAMESPACE, name, exit_code=137, reason="OOMKilled"), "killed"),
        (lambda kube, name: kube.exit_pod(NAMESPACE, name, exit_code=1), "runner_error"),
        (
            lambda kube, name: kube.image_pull_failing(NAMESPACE, name, reason="InvalidImageName"),
            "image_pull",
        ),
    ],
)
async def test_each_failure_is_counted_by_its_reason(
    ghapp_with: Callable[..., Awaitable[Ghapp]], kubelet: Callable[[Any, str], Any], reason: str
) -> None:
    ghapp = await ghapp_with()
    name = await queue(ghapp)
    kubelet(ghapp.kube, name)
    await wait_for(lambda: attempt(ghapp, name) == "2", what="a replacement")
    await ghapp.settle()
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason=reason) == 1
    assert [e["message"].split(": ")[1] for e in runner_events(ghapp)] == [reason]


async def test_a_pod_unschedulable_past_the_pool_setting_fails(
    ghapp_with: Callable[..., Awaitable[Ghapp]], clock: ManualClock
) -> None:
    ghapp = await ghapp_with()
    name = await queue(ghapp)
    ghapp.kube.unschedulable(
        NAMESPACE,
        name,
        since=format_timestamp(clock.now()),
        message="0/3 nodes are available: 3 Insufficient cpu.",
    )
    await wait_for(lambda: len(ghapp.services.pods.waiting) == 1, what="the pod seen waiting")
    ghapp.services.pods.sweep()
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="unschedulable") == 0
    clock.advance(301)  # the pool's unschedulable_seconds (300 by default) have passed
    ghapp.services.pods.sweep()
    await wait_for(lambda: attempt(ghapp, name) == "2", what="a replacement")
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="unschedulable") == 1


async def test_exit_code_7_marks_the_pool_outdated_and_its_launches_back_off(
    ghapp_with: Callable[..., Awaitable[Ghapp]], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ghapp = await ghapp_with()
    name = await queue(ghapp)
    ghapp.kube.run_pod(NAMESPACE, name)
    ghapp.kube.exit_pod(NAMESPACE, name, exit_code=7)
    await wait_for(lambda: ghapp.metric("ghapp_pool_healthy", pool="linux") == 0, what="the pool unhealthy")
    state = ghapp.services.launcher.health.pools["linux"]
    assert (state.healthy, state.reason) == (False, "outdated")
    assert any(r.getMessage().startswith("pool linux is unhealthy") for r in caplog.records)
    assert ghapp.metric("ghapp_pool_healthy", pool="gpu") == 1
    # the replacement (and every other launch of the pool) waits its turn
    await wait_for(lambda: attempt(ghapp, name) == "2", what="a replacement, later")
    assert clock.now() - state.since >= BACKOFF_BASE  # since the pool turned unhealthy
    before = len(clock.sleeps)
    other = await queue(ghapp)
    assert BACKOFF_BASE in clock.sleeps[before:]  # the next launch waits a turn of its own
    assert attempt(ghapp, other) == "1"
    # `ghapp check` says so too, from the Events ghapp recorded
    results = await check.run_checks(
        ghapp.services.settings, kube_configuration=ghapp.kube.configuration(), clock=clock
    )
    failed = [r.line() for r in results if not r.ok and "pool" in r.what]
    assert failed == [
        f"FAIL  Kubernetes: pool linux can start runners in namespace {NAMESPACE}: its runners keep failing: "
        "outdated: the runner's version is deprecated, GitHub gives it no jobs (exit code 7 (Error)) "
        "(1 in a row in the last hour; see README, Troubleshooting)"
    ]
    # a runner of the pool that completes its job makes it healthy again
    ghapp.kube.run_pod(NAMESPACE, other)
    ghapp.kube.exit_pod(NAMESPACE, other, exit_code=0)
    await wait_for(lambda: ghapp.metric("ghapp_pool_healthy", pool="linux") == 1, what="the pool healthy")


async def test_a_missing_dedicated_service_account_makes_the_pool_unhealthy_at_start(
    ghapp_with: Callable[..., Awaitable[Ghapp]], caplog: pytest.LogCaptureFixture
) -> None:
    ghapp = await ghapp_with(GHAPP_RUNNER_SERVICE_ACCOUNT="ci-runner", GHAPP_RUNNER_ATTEMPTS="1")
    assert ghapp.metric("ghapp_pool_healthy", pool="linux") == 0
    assert any(
        f"ServiceAccount 'ci-runner' not found in namespace {NAMESPACE}" in r.getMessage()
        for r in caplog.records
    )
    # and the Job controller's FailedCreate is classified as such
    name = await queue(ghapp)
    job_id = int(name.removeprefix("ghapp-"))
    await wait_for(lambda: job_id in ghapp.services.launcher.health.given_up, what="ghapp to give up")
    assert ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="create_failed") == 1
    assert 'serviceaccount "ci-runner" not found' in ghapp.services.launcher.health.given_up[job_id]
