"""Pure: the Kubernetes Job and Secret for one runner, as plain dicts (no I/O, no client models)."""

from __future__ import annotations

import base64
import copy
from typing import Any, Final

from ghapp import config, kubeschema, podspec
from ghapp.config import Pool, Settings
from ghapp.errors import ConfigError
from ghapp.planner import RunnerPlan, RunnerScope, runner_name
from ghapp.sensitive import Secret

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
COMPONENT: Final = "app.kubernetes.io/component"
JOB_ID_LABEL: Final = "ghapp/workflow-job-id"
POOL_LABEL: Final = "ghapp/pool"
INSTALLATION_LABEL: Final = "ghapp/installation-id"
SCOPE_KIND_LABEL: Final = "ghapp/scope"
WARM_LABEL: Final = "ghapp/warm"
"""``"true"`` on a warm runner's Job, pod and Secret (its workflow-job-id label is ``0``)."""
REPOSITORY_ANNOTATION: Final = "ghapp/repository"
RUN_ID_ANNOTATION: Final = "ghapp/run-id"
SCOPE_ANNOTATION: Final = "ghapp/runner-scope"
RUNNER_NAME_ANNOTATION: Final = "ghapp/runner-name"
RUNNER_ID_ANNOTATION: Final = "ghapp/runner-id"
ATTEMPT_ANNOTATION: Final = "ghapp/attempt"
"""Which runner for its workflow job this is (1, 2, …): a failed runner is replaced a bounded number of
times."""
MANAGER: Final = "ghapp"
RUNNER_SELECTOR: Final = f"{MANAGED_BY}={MANAGER},{COMPONENT}=runner"
"""Label selector of every runner Job and Secret ghapp made."""

RUNNER_CONTAINER: Final = config.RUNNER_CONTAINER
DEFAULT_CONTAINER_ANNOTATION: Final = "kubectl.kubernetes.io/default-container"
TOKEN_KEY: Final = "token"
JITCONFIG_KEY: Final = "jitconfig"
RUNNER_HOME: Final = "/home/runner"
RUNNER_UID: Final = 1001
TOKEN_ENV: Final = "ACTIONS_RUNNER_INPUT_TOKEN"
JITCONFIG_ENV: Final = "ACTIONS_RUNNER_INPUT_JITCONFIG"
DEPRECATED_EXIT_CODE_ENV: Final = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE"
"""Set to 1: a runner whose version GitHub refuses as deprecated exits 7 (not 0), so its Job says so."""
RUNNER_SCRIPT: Final = (
    "set -eu\n"
    f"{RUNNER_HOME}/config.sh --unattended --ephemeral --disableupdate --no-default-labels\n"
    f"unset {TOKEN_ENV}\n"
    f"exec {RUNNER_HOME}/run.sh\n"
)
"""The runner's command. Options come from ACTIONS_RUNNER_INPUT_* variables; the token from the Secret.

Only ``config.sh`` needs the registration token: it is dropped before ``exec run.sh``, so the process that
then lives as PID 1 for the whole job (and everything it starts) never carries it — a job step could read
it from ``/proc/1/environ`` otherwise (same uid), and the token registers runners for the whole org/repo.
"""
JIT_COMMAND: Final = (f"{RUNNER_HOME}/run.sh",)
"""A JIT runner's command: ``run.sh`` reads its config from ACTIONS_RUNNER_INPUT_JITCONFIG (the Secret).

The config stays in ``run.sh``'s environment: the runner needs it there (or in its argv, which is worse) and
writes the same credentials to files in its home anyway; they belong to this one single-use runner only.
"""


def runner_labels(plan: RunnerPlan) -> dict[str, str]:
    """Labels shared by a runner's Job, its pod and its Secret."""
    labels = {
        MANAGED_BY: MANAGER,
        COMPONENT: "runner",
        JOB_ID_LABEL: str(plan.workflow_job_id),
        POOL_LABEL: plan.pool.name,
        INSTALLATION_LABEL: str(plan.installation_id),
        SCOPE_KIND_LABEL: plan.scope.kind,
    }
    if plan.warm:
        labels[WARM_LABEL] = "true"
    return labels


def runner_annotations(plan: RunnerPlan) -> dict[str, str]:
    """Facts about the runner that do not fit label values (slashes, length)."""
    return {
        REPOSITORY_ANNOTATION: plan.repository,
        RUN_ID_ANNOTATION: str(plan.run_id),
        SCOPE_ANNOTATION: plan.scope.key,
        RUNNER_NAME_ANNOTATION: plan.name,
        ATTEMPT_ANNOTATION: str(plan.attempt),
    }


def credential_key(pool: Pool) -> str:
    """The key of the runner Secret that holds the pool's credential (registration token or JIT config)."""
    return JITCONFIG_KEY if pool.mode == "jit" else TOKEN_KEY


def _runner_env(plan: RunnerPlan) -> list[dict[str, Any]]:
    from_secret = {"secretKeyRef": {"name": plan.name, "key": credential_key(plan.pool)}}
    deprecated_exit_code = {"name": DEPRECATED_EXIT_CODE_ENV, "value": "1"}
    if plan.pool.mode == "jit":
        # name, labels, group, URL and work folder are inside the JIT config
        return [deprecated_exit_code, {"name": JITCONFIG_ENV, "valueFrom": from_secret}]
    env: list[dict[str, Any]] = [
        deprecated_exit_code,
        {"name": "ACTIONS_RUNNER_INPUT_URL", "value": plan.runner_url},
        {"name": "ACTIONS_RUNNER_INPUT_NAME", "value": plan.name},
        {"name": "ACTIONS_RUNNER_INPUT_LABELS", "value": ",".join(plan.pool.labels)},
        {"name": "ACTIONS_RUNNER_INPUT_WORK", "value": "_work"},
    ]
    if plan.scope.kind == "org" and plan.pool.runner_group:
        env.append({"name": "ACTIONS_RUNNER_INPUT_RUNNERGROUP", "value": plan.pool.runner_group})
    env.append({"name": TOKEN_ENV, "valueFrom": from_secret})
    return env


def runner_job(plan: RunnerPlan, *, runner_id: int | None = None) -> dict[str, Any]:
    """The Kubernetes Job that runs one ephemeral runner for `plan`.

    The credential is not in it: the runner reads it from the Secret named like the Job. `runner_id` (JIT
    mode: GitHub's id of the runner the JIT config registers) is recorded as an annotation for cleanup.
    """
    annotations = runner_annotations(plan)
    if runner_id is not None:
        annotations[RUNNER_ID_ANNOTATION] = str(runner_id)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": plan.pool.ttl_seconds_after_finished,
    }
    if plan.pool.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = plan.pool.active_deadline_seconds
    spec["template"] = pod_template(plan)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": runner_labels(plan),
            "annotations": annotations,
        },
        "spec": spec,
    }


def pod_template(plan: RunnerPlan) -> dict[str, Any]:
    """The pool's ``PodTemplateSpec`` with ghapp's runner container merged in.

    ghapp adds its labels to the template's, owns the runner container's command, appends its ``env`` to
    the container's own (the pool's ``env`` in between), and fills in what the template leaves out: the
    image (the pool's ``image``), the working directory and the hardening defaults of `_harden`. Every
    other field of the template is kept as written.
    """
    template = copy.deepcopy(plan.pool.template or {})
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **runner_labels(plan)}
    metadata["annotations"] = {
        DEFAULT_CONTAINER_ANNOTATION: RUNNER_CONTAINER,
        **(metadata.get("annotations") or {}),
    }
    spec = template.setdefault("spec", {})
    spec["restartPolicy"] = "Never"
    containers = spec.setdefault("containers", [])
    runner = next((c for c in containers if c.get("name") == RUNNER_CONTAINER), None)
    if runner is None:
        runner = {"name": RUNNER_CONTAINER}
        containers.append(runner)
    runner.setdefault("image", plan.pool.image)
    runner.setdefault("workingDir", RUNNER_HOME)
    runner["command"] = list(JIT_COMMAND) if plan.pool.mode == "jit" else ["/bin/bash", "-c", RUNNER_SCRIPT]
    runner["env"] = [*(runner.get("env") or []), *copy.deepcopy(list(plan.pool.env)), *_runner_env(plan)]
    _harden(spec, service_account=plan.service_account)
    return template


def _harden(spec: dict[str, Any], *, service_account: str) -> None:
    """Fill in the hardening defaults a template leaves out (a field the template sets is kept).

    Pod: the runner ServiceAccount (the pool's ``service_account``, else GHAPP_RUNNER_SERVICE_ACCOUNT, else
    the namespace's ``default``) without its token, no service links,
    uid 1001, seccomp ``RuntimeDefault``. Every container:
    ``runAsNonRoot`` (unless the template makes it run as uid 0), and unless the template makes it
    ``privileged``: no privilege escalation, all capabilities dropped.
    """
    spec.setdefault("serviceAccountName", service_account)
    spec.setdefault("automountServiceAccountToken", False)
    spec.setdefault("enableServiceLinks", False)
    pod_security = spec.setdefault("securityContext", {})
    pod_security.setdefault("runAsUser", RUNNER_UID)
    pod_security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        security = container.setdefault("securityContext", {})
        uid = security.get("runAsUser", pod_security.get("runAsUser"))
        if "runAsNonRoot" not in security and "runAsNonRoot" not in pod_security and uid != 0:
            security["runAsNonRoot"] = True
        if security.get("privileged") is not True:
            security.setdefault("allowPrivilegeEscalation", False)
            security.setdefault("capabilities", {"drop": ["ALL"]})


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
        "data": {credential_key(plan.pool): base64.b64encode(credential.reveal().encode()).decode()},
    }


def sample_plan(settings: Settings, pool: Pool) -> RunnerPlan:
    """A plan for an imaginary job of `pool` (largest job id), to render and check the pool's Job."""
    scope = RunnerScope(kind="org", owner="example")
    return RunnerPlan(
        workflow_job_id=2**63 - 1,
        run_id=1,
        installation_id=1,
        repository="example/example",
        pool=pool,
        scope=scope,
        name=runner_name(prefix=settings.runner_prefix, workflow_job_id=2**63 - 1),
        namespace=pool.namespace or settings.namespace,
        runner_url=scope.url(settings.web_url),
        service_account=pool.service_account
        or settings.runner_service_account
        or config.DEFAULT_SERVICE_ACCOUNT,
    )


def dedicated_service_account(job: dict[str, Any]) -> str | None:
    """The ServiceAccount a runner Job's pods run as, unless it is the namespace's ``default`` one (which
    every namespace has); a dedicated account must be made by hand, so it is verified."""
    account = job["spec"]["template"]["spec"].get("serviceAccountName") or config.DEFAULT_SERVICE_ACCOUNT
    return None if account == config.DEFAULT_SERVICE_ACCOUNT else str(account)


def check_pools(settings: Settings) -> None:
    """Render a runner Job for every pool and check it against the Kubernetes schema, then for what the API
    server would refuse beyond the schema (`ghapp.podspec`: images, container names, quantities, mounts).

    Raises `ConfigError` naming the pool and the field of its pools-file entry, e.g.
    ``GHAPP_POOLS_FILE: pool 'x': template.spec.containers[0].resources: ...``.
    """
    for pool in settings.pools:
        job = runner_job(sample_plan(settings, pool), runner_id=1)
        found = kubeschema.problems(job) or podspec.problems(
            job["spec"]["template"]["spec"], at=("spec", "template", "spec")
        )
        if found:
            raise ConfigError(
                f"GHAPP_POOLS_FILE: {settings.pools_file}: pool {pool.name!r}: "
                + "; ".join(f"{_pool_field(pool, path)}: {problem}" for path, problem in found)
            )


def _pool_field(pool: Pool, path: tuple[str | int, ...]) -> str:
    """The pools-file field that a path in the rendered Job comes from."""
    if path[:2] != ("spec", "template"):
        return "Job " + kubeschema.dotted(path)
    rest = path[2:]
    containers = ((pool.template or {}).get("spec") or {}).get("containers") or []
    runner = next((i for i, c in enumerate(containers) if c.get("name") == RUNNER_CONTAINER), len(containers))
    if len(rest) >= 5 and rest[:4] == ("spec", "containers", runner, "env") and isinstance(rest[4], int):
        user_env = len(containers[runner].get("env") or []) if runner < len(containers) else 0
        if user_env <= rest[4] < user_env + len(pool.env):
            return kubeschema.dotted((f"env[{rest[4] - user_env}]", *rest[5:]))
    return kubeschema.dotted(("template", *rest))
