"""The classifier of runner failures and the pools' health: pure, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from ghapp import failures
from ghapp.clock import parse_timestamp
from ghapp.failures import Failure
from ghapp.health import BACKOFF_BASE, Health

NOW = 1_800_000_000.0


def pod(
    *,
    phase: str = "Pending",
    runner: dict[str, Any] | None = None,
    sidecar: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    containers = [{"name": "runner", "state": runner}] if runner is not None else []
    if sidecar is not None:
        containers.append({"name": "docker", "state": sidecar})
    body: dict[str, Any] = {"phase": phase, "containerStatuses": containers, **status}
    if init is not None:
        body["initContainerStatuses"] = [{"name": "setup", "state": init}]
    return {"metadata": {"creationTimestamp": "2027-01-15T08:00:00Z"}, "status": body}


def reason_of(obj: dict[str, Any], *, now: float = NOW, after: float = 300.0) -> str | None:
    found = failures.classify_pod(obj, now=now, unschedulable_after=after)
    return found.reason if found else None


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        # fine
        (pod(), None),
        (pod(phase="Running", runner={"running": {}}), None),
        (pod(phase="Succeeded", runner={"terminated": {"exitCode": 0, "reason": "Completed"}}), None),
        (pod(runner={"waiting": {"reason": "ContainerCreating"}}), None),
        # the image
        (pod(runner={"waiting": {"reason": "ErrImagePull", "message": "not found"}}), "image_pull"),
        (pod(runner={"waiting": {"reason": "ImagePullBackOff"}}), "image_pull"),
        (pod(runner={"waiting": {"reason": "InvalidImageName"}}), "image_pull"),
        (pod(runner={"running": {}}, sidecar={"waiting": {"reason": "ImagePullBackOff"}}), "image_pull"),
        # killed by the cluster
        (pod(phase="Failed", reason="Evicted", message="low on memory"), "killed"),
        (pod(phase="Failed", reason="NodeLost"), "killed"),
        (pod(phase="Failed", reason="DeadlineExceeded"), "killed"),
        (pod(phase="Failed", runner={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), "killed"),
        (
            pod(phase="Running", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "x"}]),
            "killed",
        ),
        (pod(phase="Failed"), "killed"),
        # the runner
        (pod(phase="Failed", runner={"terminated": {"exitCode": 1, "reason": "Error"}}), "runner_error"),
        (pod(init={"terminated": {"exitCode": 2}}), "runner_error"),
        (pod(phase="Failed", runner={"terminated": {"exitCode": 7, "reason": "Error"}}), "outdated"),
    ],
)
def test_each_way_a_runner_pod_fails_has_one_reason(obj: dict[str, Any], reason: str | None) -> None:
    assert reason_of(obj) == reason


def test_a_pod_is_unschedulable_only_past_the_pool_setting() -> None:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient cpu.",
        "lastTransitionTime": "2027-01-15T08:00:00Z",
    }
    waiting = pod(conditions=[condition])
    start = parse_timestamp("2027-01-15T08:00:00Z")
    assert reason_of(waiting, now=start + 299, after=300) is None
    found = failures.classify_pod(waiting, now=start + 300, unschedulable_after=300)
    assert found == Failure(
        "unschedulable", "not scheduled for 300s: 0/3 nodes are available: 3 Insufficient cpu."
    )


def test_the_cluster_message_is_kept() -> None:
    found = failures.classify_pod(
        pod(runner={"waiting": {"reason": "ErrImagePull", "message": 'pull "x:1": not found'}}),
        now=NOW,
        unschedulable_after=300,
    )
    assert found == Failure("image_pull", 'container runner: ErrImagePull: pull "x:1": not found')
    exit7 = failures.classify_pod(
        pod(phase="Failed", runner={"terminated": {"exitCode": 7, "reason": "Error"}}),
        now=NOW,
        unschedulable_after=1,
    )
    assert exit7 is not None
    assert "exit code 7" in exit7.message


def test_job_and_event_failures() -> None:
    deadline = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
    }
    assert failures.classify_job(deadline) == Failure("killed", "DeadlineExceeded")
    backoff = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    }
    assert failures.classify_job(backoff) is None  # its pod says why
    event = {"reason": "FailedCreate", "message": 'pods "x" is forbidden: exceeded quota: q'}
    assert failures.classify_event(event) == Failure(
        "create_failed", 'pods "x" is forbidden: exceeded quota: q'
    )
    assert failures.classify_event({"reason": "SuccessfulCreate"}) is None


def test_a_pool_turns_unhealthy_after_the_same_failure_again_and_again() -> None:
    health = Health(["linux"])
    pull = Failure("image_pull", "ImagePullBackOff")
    assert not health.failed("linux", pull, now=NOW)
    assert not health.failed("linux", Failure("killed", "Evicted"), now=NOW)  # a different reason resets
    assert not health.failed("linux", pull, now=NOW)
    assert not health.failed("linux", pull, now=NOW)
    assert health.pools["linux"].healthy
    assert health.launch_delay("linux", now=NOW) == 0
    assert health.failed("linux", pull, now=NOW)  # the third in a row
    state = health.pools["linux"]
    assert (state.healthy, state.reason, state.streak) == (False, "image_pull", 3)
    # launches are spaced out, one per backoff interval: no storm
    assert [health.launch_delay("linux", now=NOW) for _ in range(3)] == [
        BACKOFF_BASE,
        2 * BACKOFF_BASE,
        3 * BACKOFF_BASE,
    ]
    # a runner that gets running clears a failure that happens before a runner starts
    assert health.progressed("linux", completed=False, now=NOW + 60)
    assert health.pools["linux"].healthy
    assert health.launch_delay("linux", now=NOW + 60) == 0


def test_one_outdated_runner_marks_the_pool_and_only_a_completed_runner_clears_it() -> None:
    health = Health(["linux"])
    assert health.failed("linux", Failure("outdated", "exit code 7"), now=NOW)
    assert not health.progressed("linux", completed=False, now=NOW)  # running is not enough
    assert not health.pools["linux"].healthy
    assert health.progressed("linux", completed=True, now=NOW)
    assert health.pools["linux"].healthy


def test_backoff_doubles_up_to_a_cap_and_given_up_jobs_are_bounded() -> None:
    health = Health(["linux"])
    for _ in range(20):
        health.failed("linux", Failure("runner_error", "exit code 1"), now=NOW)
    assert health.pools["linux"].backoff() == 600.0
    for job in range(10_005):
        health.give_up(job, "why")
    assert len(health.given_up) == 10_000
    assert 0 not in health.given_up
