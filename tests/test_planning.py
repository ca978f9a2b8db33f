"""Pure modules: payload parsing, pool matching, scope choice, manifests (validated against the schemas)."""

import base64
import copy
import json
from typing import Any

import pytest

from ghapp import manifests, planner, policy
from ghapp.cli import SAMPLE_PAYLOAD
from ghapp.config import Pool, load_settings
from ghapp.errors import InvalidPayload
from ghapp.models import WorkflowJob
from ghapp.sensitive import Secret

from .schema import validate

SAMPLE: dict[str, Any] = json.loads(SAMPLE_PAYLOAD.read_text())
FACTS = policy.Facts(app_owner="acme")  # the sample's account owns the App


def payload(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SAMPLE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = data
        for part in parents:
            target = target[part]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return data


def test_parse_sample() -> None:
    job = WorkflowJob.from_payload(SAMPLE)
    assert job.id == 29679449
    assert job.labels == ("self-hosted", "linux", "x64")
    assert job.repository.full_name == "acme/webapp"
    assert job.repository.owner_type == "Organization"
    assert job.installation_id == 4242


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"installation": None}, "installation.id"),
        ({"workflow_job": None}, "workflow_job"),
        ({"workflow_job__id": "12"}, "workflow_job.id"),
        ({"workflow_job__labels": "self-hosted"}, "workflow_job.labels"),
        ({"repository__owner__type": "Bot"}, "repository.owner.type"),
        ({"repository__full_name": None}, "repository.full_name"),
    ],
)
def test_unusable_payloads_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload, match=field.replace(".", r"\.")):
        WorkflowJob.from_payload(payload(**changes))


POOLS = (
    Pool(name="gpu", labels=("self-hosted", "linux", "x64", "gpu")),
    Pool(name="linux", labels=("self-hosted", "Linux", "X64")),
)


@pytest.mark.parametrize(
    ("labels", "pool"),
    [
        (["self-hosted", "linux", "x64"], "gpu"),  # first matching pool in file order wins
        (["SELF-HOSTED", "gpu"], "gpu"),  # case-insensitive
        (["linux"], "gpu"),
        (["self-hosted", "arm64"], None),  # a label no pool has
        ([], None),
    ],
)
def test_match_pool(labels: list[str], pool: str | None) -> None:
    found = planner.match_pool(labels, POOLS)
    assert (found.name if found else None) == pool


def test_match_pool_prefers_file_order() -> None:
    reordered = (POOLS[1], POOLS[0])
    found = planner.match_pool(["self-hosted", "linux"], reordered)
    assert found is not None
    assert found.name == "linux"


def test_plan_for_org_repo() -> None:
    settings = load_settings({}, namespace="runners")
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=FACTS)
    assert isinstance(result, planner.RunnerPlan)
    assert result.scope == planner.RunnerScope(kind="org", owner="acme")
    assert result.scope.api_path == "/orgs/acme"
    assert result.runner_url == "https://github.com/acme"
    assert result.name == "ghapp-29679449"
    assert result.namespace == "runners"


def test_plan_for_user_repo_on_ghes() -> None:
    settings = load_settings({}, github_api_url="https://ghe.example.com/api/v3", allowed_accounts="alice")
    user_payload = payload(
        repository__owner__type="User",
        repository__owner__login="alice",
        repository__full_name="alice/tools",
        repository__name="tools",
    )
    result = planner.plan(WorkflowJob.from_payload(user_payload), settings, facts=FACTS)
    assert isinstance(result, planner.RunnerPlan)
    assert result.scope.api_path == "/repos/alice/tools"
    assert result.runner_url == "https://ghe.example.com/alice/tools"


def test_plan_skips_unmatched_labels() -> None:
    result = planner.plan(
        WorkflowJob.from_payload(payload(workflow_job__labels=["ubuntu-latest"])),
        load_settings({}),
        facts=FACTS,
    )
    assert isinstance(result, planner.Skip)
    assert "ubuntu-latest" in result.reason


def _plan(**changes: Any) -> planner.RunnerPlan:
    result = planner.plan(WorkflowJob.from_payload(payload(**changes)), load_settings({}), facts=FACTS)
    assert isinstance(result, planner.RunnerPlan)
    return result


def test_job_manifest_is_valid_and_carries_no_credential() -> None:
    plan = _plan()
    job = manifests.runner_job(plan)
    validate(job)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 300
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghapp"
    assert job["metadata"]["labels"]["ghapp/workflow-job-id"] == "29679449"
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["ACTIONS_RUNNER_INPUT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": plan.name,
        "key": "token",
    }
    assert env["ACTIONS_RUNNER_INPUT_URL"]["value"] == "https://github.com/acme"
    assert env["ACTIONS_RUNNER_INPUT_LABELS"]["value"] == "self-hosted,linux,x64"
    assert "--ephemeral" in container["command"][-1]
    assert "run.sh" in container["command"][-1]


def test_secret_manifest_is_valid_and_owned_by_the_job() -> None:
    plan = _plan()
    secret = manifests.runner_secret(plan, credential=Secret("AABBCC-registration"), job_uid="0f4c1c7e-uid")
    validate(secret)
    assert base64.b64decode(secret["data"]["token"]).decode() == "AABBCC-registration"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": plan.name,
        "uid": "0f4c1c7e-uid",
        "controller": True,
        "blockOwnerDeletion": False,
    }
    assert secret["immutable"] is True


def test_names_stay_within_kubernetes_limits() -> None:
    plan = _plan(workflow_job__id=2**63 - 1)
    job = manifests.runner_job(plan)
    validate(job)
    assert len(job["metadata"]["name"]) <= 63
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63


def test_secret_repr_hides_the_value() -> None:
    secret = Secret("ghs_verysecret")
    assert "ghs_verysecret" not in repr(secret)
    assert "ghs_verysecret" not in f"{secret} {secret!s} {secret!r}"
    assert secret.reveal() == "ghs_verysecret"
