"""Pure: why a runner failed, from its Pod's and Job's status and the Job's Events — a small, closed set.

Every way a runner fails before or while it runs comes out as one `Failure`: its `Reason` and the cluster's
own words. One place (`ghapp.recovery`) turns a reason into an action; logs, metrics, Events, ``ghapp check``
and the status page all show the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from ghapp.clock import parse_timestamp
from ghapp.config import RUNNER_CONTAINER

Reason = Literal["create_failed", "image_pull", "unschedulable", "killed", "runner_error", "outdated"]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)
"""Every failure reason, in the order a runner meets them."""

OUTDATED_EXIT_CODE: Final = 7
"""``run.sh``'s exit code for a runner whose version GitHub no longer serves (with
``ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1``; without it the runner exits 0)."""
IMAGE_PULL: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
)
"""Container waiting reasons of an image that cannot be pulled."""
KILLED: Final = frozenset(
    {"Evicted", "NodeLost", "Preempting", "Shutdown", "Terminated", "NodeShutdown", "DeadlineExceeded"}
)
"""Pod (or Job) status reasons of a pod the cluster stopped: eviction, node loss, preemption, node
shutdown, an active deadline."""
FAILED_CREATE: Final = "FailedCreate"
"""The Job controller's Event reason when the API server refuses the Job's Pod."""
EVENT_REASON: Final = "RunnerFailed"
"""The reason of the Events ghapp records on a failed runner's Job (the failure reason is in the message)."""
EVENT_MESSAGE_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one runner failed: the reason, and what the cluster said (never a secret: status text only)."""

    reason: Reason
    message: str


def classify_pod(pod: dict[str, Any], *, now: float, unschedulable_after: float) -> Failure | None:
    """The failure a runner Pod shows, or None while it is fine (or still within its time to schedule)."""
    status = pod.get("status") or {}
    said = _words(status.get("reason"), status.get("message"))
    if status.get("reason") in KILLED:
        return Failure("killed", said)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return Failure("killed", _words(condition.get("reason"), condition.get("message")))
    containers = status.get("containerStatuses") or []
    runner = next((c for c in containers if c.get("name") == RUNNER_CONTAINER), None)
    terminated = ((runner or {}).get("state") or {}).get("terminated")
    if terminated:
        failure = _exited(terminated)
        if failure is not None:
            return failure
    for init in status.get("initContainerStatuses") or []:
        exited = (init.get("state") or {}).get("terminated") or {}
        if exited.get("exitCode") not in (0, None):
            return Failure("runner_error", f"init container {init.get('name')}: {_exit_words(exited)}")
    for container in [*(status.get("initContainerStatuses") or []), *containers]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL:
            said = _words(waiting["reason"], waiting.get("message"))
            return Failure("image_pull", f"container {container.get('name')}: {said}")
    if status.get("phase") == "Pending":
        return _unschedulable(pod, now=now, after=unschedulable_after)
    if status.get("phase") == "Failed":
        return Failure("killed", said if said != "-" else "the pod failed without a container exit")
    return None


def classify_job(job: dict[str, Any]) -> Failure | None:
    """A failure only the Job shows: the Job controller stopped it (``activeDeadlineSeconds``)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        failed = condition.get("type") == "Failed" and condition.get("status") == "True"
        if failed and condition.get("reason") in KILLED:
            return Failure("killed", _words(condition.get("reason"), condition.get("message")))
    return None


def classify_event(event: dict[str, Any]) -> Failure | None:
    """A Job's ``FailedCreate`` Event: the API server refused its Pod (ServiceAccount missing, PodSecurity,
    ResourceQuota, an admission webhook)."""
    if event.get("reason") != FAILED_CREATE:
        return None
    return Failure("create_failed", str(event.get("message") or FAILED_CREATE))


def event_message(pool: str, failure: Failure) -> str:
    """The message of ghapp's Event on a failed runner's Job: ``pool P: REASON: the cluster's words``."""
    return f"pool {pool}: {failure.reason}: {failure.message}"[:EVENT_MESSAGE_LIMIT]


def from_event_message(pool: str, message: str) -> Failure | None:
    """The failure an `event_message` of `pool` records, or None (another pool's, or not ghapp's)."""
    prefix = f"pool {pool}: "
    reason, _, words = message.removeprefix(prefix).partition(": ")
    if not message.startswith(prefix) or reason not in REASONS:
        return None
    return Failure(reason, words)


def missing_service_account(*, namespace: str, account: str) -> Failure:
    """A pool names a dedicated runner ServiceAccount its namespace lacks: every runner Pod is refused."""
    return Failure(
        "create_failed",
        f"ServiceAccount {account!r} not found in namespace {namespace}: every runner pod would be "
        f"refused; create it (kubectl -n {namespace} create serviceaccount {account}) or drop the setting "
        "that names it",
    )


def running(pod: dict[str, Any]) -> bool:
    """True once the runner container runs: the pod was created, scheduled and its image pulled."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == RUNNER_CONTAINER and (container.get("state") or {}).get("running"):
            return True
    return False


def _exited(terminated: dict[str, Any]) -> Failure | None:
    if terminated.get("reason") == "OOMKilled":
        return Failure("killed", _exit_words(terminated))
    code = terminated.get("exitCode")
    if code == OUTDATED_EXIT_CODE:
        said = _exit_words(terminated)
        return Failure("outdated", f"the runner's version is deprecated, GitHub gives it no jobs ({said})")
    if code not in (0, None):
        return Failure("runner_error", _exit_words(terminated))
    return None


def _unschedulable(pod: dict[str, Any], *, now: float, after: float) -> Failure | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            metadata = pod.get("metadata") or {}
            since = condition.get("lastTransitionTime") or metadata.get("creationTimestamp")
            waited = now - parse_timestamp(since) if isinstance(since, str) else 0.0
            if waited >= after:
                said = condition.get("message") or "no node fits"
                return Failure("unschedulable", f"not scheduled for {waited:.0f}s: {said}")
    return None


def _exit_words(terminated: dict[str, Any]) -> str:
    text = f"exit code {terminated.get('exitCode')}"
    if terminated.get("reason"):
        text += f" ({terminated['reason']})"
    if terminated.get("message"):
        text += f": {terminated['message']}"
    return text


def _words(reason: Any, message: Any) -> str:
    parts = [str(p) for p in (reason, message) if p]
    return ": ".join(parts) or "-"
