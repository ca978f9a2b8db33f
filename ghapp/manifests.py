"""Pure: the Kubernetes Job and Secret for one runner, as plain dicts (no I/O, no client models)."""

from __future__ import annotations

import base64
from typing import Any, Final

from ghapp.planner import RunnerPlan
from ghapp.sensitive import Secret

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
COMPONENT: Final = "app.kubernetes.io/component"
JOB_ID_LABEL: Final = "ghapp/workflow-job-id"
POOL_LABEL: Final = "ghapp/pool"
INSTALLATION_LABEL: Final = "ghapp/installation-id"
SCOPE_KIND_LABEL: Final = "ghapp/scope"
REPOSITORY_ANNOTATION: Final = "ghapp/repository"
RUN_ID_ANNOTATION: Final = "ghapp/run-id"
SCOPE_ANNOTATION: Final = "ghapp/runner-scope"
RUNNER_NAME_ANNOTATION: Final = "ghapp/runner-name"
RUNNER_ID_ANNOTATION: Final = "ghapp/runner-id"
MANAGER: Final = "ghapp"
RUNNER_SELECTOR: Final = f"{MANAGED_BY}={MANAGER},{COMPONENT}=runner"
"""Label selector of every runner Job and Secret ghapp made."""

RUNNER_CONTAINER: Final = "runner"
TOKEN_KEY: Final = "token"
RUNNER_HOME: Final = "/home/runner"
RUNNER_UID: Final = 1001
RUNNER_SCRIPT: Final = (
    "set -eu\n"
    f"{RUNNER_HOME}/config.sh --unattended --ephemeral --disableupdate --no-default-labels\n"
    f"exec {RUNNER_HOME}/run.sh\n"
)
"""The runner's command. Options come from ACTIONS_RUNNER_INPUT_* variables; the token from the Secret."""


def runner_labels(plan: RunnerPlan) -> dict[str, str]:
    """Labels shared by a runner's Job, its pod and its Secret."""
    return {
        MANAGED_BY: MANAGER,
        COMPONENT: "runner",
        JOB_ID_LABEL: str(plan.workflow_job_id),
        POOL_LABEL: plan.pool.name,
        INSTALLATION_LABEL: str(plan.installation_id),
        SCOPE_KIND_LABEL: plan.scope.kind,
    }


def runner_annotations(plan: RunnerPlan) -> dict[str, str]:
    """Facts about the runner that do not fit label values (slashes, length)."""
    return {
        REPOSITORY_ANNOTATION: plan.repository,
        RUN_ID_ANNOTATION: str(plan.run_id),
        SCOPE_ANNOTATION: plan.scope.key,
        RUNNER_NAME_ANNOTATION: plan.name,
    }


def _runner_env(plan: RunnerPlan) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "ACTIONS_RUNNER_INPUT_URL", "value": plan.runner_url},
        {"name": "ACTIONS_RUNNER_INPUT_NAME", "value": plan.name},
        {"name": "ACTIONS_RUNNER_INPUT_LABELS", "value": ",".join(plan.pool.labels)},
        {"name": "ACTIONS_RUNNER_INPUT_WORK", "value": "_work"},
    ]
    if plan.scope.kind == "org" and plan.pool.runner_group:
        env.append({"name": "ACTIONS_RUNNER_INPUT_RUNNERGROUP", "value": plan.pool.runner_group})
    env.append(
        {
            "name": "ACTIONS_RUNNER_INPUT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": plan.name, "key": TOKEN_KEY}},
        }
    )
    return env


def runner_job(plan: RunnerPlan) -> dict[str, Any]:
    """The Kubernetes Job that runs one ephemeral runner for `plan`.

    The registration credential is not in it: the runner reads it from the Secret named like the Job.
    """
    labels = runner_labels(plan)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": labels,
            "annotations": runner_annotations(plan),
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": plan.pool.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUNNER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": RUNNER_CONTAINER,
                            "image": plan.pool.image,
                            "workingDir": RUNNER_HOME,
                            "command": ["/bin/bash", "-c", RUNNER_SCRIPT],
                            "env": _runner_env(plan),
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def runner_secret(plan: RunnerPlan, *, credential: Secret, job_uid: str) -> dict[str, Any]:
    """The Secret that holds `credential` for `plan`'s runner, owned by (and deleted with) its Job."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": runner_labels(plan),
            "annotations": runner_annotations(plan),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": plan.name,
                    "uid": job_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {TOKEN_KEY: base64.b64encode(credential.reveal().encode()).decode()},
    }
