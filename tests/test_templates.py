"""Pool templates, per-pool settings and their validation at load (pure), plus `ghapp render` of them."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from ghapp import manifests, planner, podspec, policy
from ghapp.cli import SAMPLE_PAYLOAD, main
from ghapp.config import Settings, load_settings
from ghapp.errors import ConfigError
from ghapp.models import WorkflowJob

from .conftest import ORG_INSTALLATION, start_ghapp
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .schema import validate

SAMPLE: dict[str, Any] = json.loads(SAMPLE_PAYLOAD.read_text())
FACTS = policy.Facts(app_owner="acme")  # the sample's account owns the App

TEMPLATED = """
pools:
  - name: docker
    mode: jit
    labels: [self-hosted, linux, x64]
    image: ghcr.io/actions/actions-runner:2.330.0
    namespace: ci-docker
    ttl_seconds_after_finished: 60
    active_deadline_seconds: 7200
    env:
      - {name: DOCKER_HOST, value: "tcp://localhost:2375"}
      - name: NODE_NAME
        valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    template:
      metadata:
        labels: {team: platform}
        annotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: "false"}
      spec:
        serviceAccountName: docker-runner
        priorityClassName: ci
        nodeSelector: {kubernetes.io/arch: amd64}
        tolerations:
          - {key: dedicated, operator: Equal, value: ci, effect: NoSchedule}
        affinity:
          nodeAffinity:
            requiredDuringSchedulingIgnoredDuringExecution:
              nodeSelectorTerms:
                - matchExpressions: [{key: pool, operator: In, values: [ci]}]
        securityContext: {fsGroup: 1001}
        volumes:
          - {name: work, emptyDir: {}}
          - {name: docker-certs, emptyDir: {}}
        containers:
          - name: dind
            image: docker:27-dind
            env: [{name: DOCKER_TLS_CERTDIR, value: ""}]
            securityContext: {privileged: true, runAsUser: 0}
            volumeMounts: [{name: work, mountPath: /home/runner/_work}]
          - name: runner
            env: [{name: RUNNER_DEBUG, value: "1"}]
            resources:
              requests: {cpu: "2", memory: 4Gi}
              limits: {memory: 8Gi}
            volumeMounts: [{name: work, mountPath: /home/runner/_work}]
"""


def settings_from(tmp_path: Path, document: str, **overrides: Any) -> Settings:
    path = tmp_path / "pools.yaml"
    path.write_text(textwrap.dedent(document))
    return load_settings({"GHAPP_POOLS_FILE": str(path), "GHAPP_NAMESPACE": "runners"}, **overrides)


def plan_for(settings: Settings) -> planner.RunnerPlan:
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=FACTS)
    assert isinstance(result, planner.RunnerPlan)
    return result


def test_template_is_merged_and_nothing_of_it_is_dropped(tmp_path: Path) -> None:
    plan = plan_for(settings_from(tmp_path, TEMPLATED))
    job = manifests.runner_job(plan, runner_id=42)
    validate(job)

    assert job["metadata"]["namespace"] == "ci-docker"
    assert job["metadata"]["annotations"]["ghapp/runner-id"] == "42"
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "platform"
    assert template["metadata"]["labels"]["ghapp/pool"] == "docker"  # ghapp's labels are added
    assert template["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    pod = template["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["affinity"]["nodeAffinity"]
    assert pod["serviceAccountName"] == "docker-runner"
    assert pod["priorityClassName"] == "ci"
    assert [v["name"] for v in pod["volumes"]] == ["work", "docker-certs"]
    assert pod["securityContext"]["fsGroup"] == 1001
    assert pod["restartPolicy"] == "Never"

    dind, runner = pod["containers"]
    assert dind["name"] == "dind"
    assert dind["image"] == "docker:27-dind"
    # the sidecar's explicit relaxation is honoured: privileged, root, no hardening added over it
    assert dind["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert "command" not in dind

    assert runner["image"] == "ghcr.io/actions/actions-runner:2.330.0"  # from the pool's image
    assert runner["command"] == ["/home/runner/run.sh"]
    assert runner["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert runner["volumeMounts"] == [{"name": "work", "mountPath": "/home/runner/_work"}]
    # the template's env, then the pool's, then ghapp's (the credential from the Secret)
    assert [e["name"] for e in runner["env"]] == [
        "RUNNER_DEBUG",
        "DOCKER_HOST",
        "NODE_NAME",
        "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE",
        "ACTIONS_RUNNER_INPUT_JITCONFIG",
    ]
    assert runner["env"][-1]["valueFrom"]["secretKeyRef"] == {"name": plan.name, "key": "jitconfig"}
    assert runner["securityContext"]["runAsNonRoot"] is True
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False


def test_template_runner_image_wins_over_the_pool_image(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        """
        pools:
          - name: custom
            labels: [self-hosted, linux, x64]
            template:
              spec:
                containers: [{name: runner, image: "registry.example/runner:1"}]
        """,
    )
    job = manifests.runner_job(plan_for(settings))
    validate(job)
    (runner,) = job["spec"]["template"]["spec"]["containers"]
    assert runner["image"] == "registry.example/runner:1"
    assert job["metadata"]["namespace"] == "runners"  # GHAPP_NAMESPACE unless the pool says otherwise


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (
            "template: {spec: {containers: [{name: runner, resources: {limits: {cpu: [1]}}}]}}",
            "pool 'p': template.spec.containers[0].resources.limits.cpu: is not a valid value",
        ),
        (
            "template: {spec: {nodeSelectr: {a: b}}}",
            "pool 'p': template.spec: Additional properties are not allowed ('nodeSelectr' was unexpected)",
        ),
        (
            "template: {spec: {tolerations: {key: a}}}",
            "pool 'p': template.spec.tolerations: must be of type array",
        ),
        (
            "env: [{name: A, value: b}, {name: B, valu: c}]",
            "pool 'p': env[1]: Additional properties are not allowed ('valu' was unexpected)",
        ),
        (
            "template: {spec: {restartPolicy: Always}}",
            "pool 'p': template.spec.restartPolicy: runner pods never restart",
        ),
        (
            "template: {spec: {containers: [{name: runner, command: [sh]}]}}",
            "pool 'p': template.spec.containers[0].command is set by ghapp",
        ),
        (
            "env: [{name: ACTIONS_RUNNER_INPUT_TOKEN, value: x}]",
            "pool 'p': env[0]: ACTIONS_RUNNER_INPUT_* variables are set by ghapp",
        ),
        ("mode: pat", "pool 'p' (pools.0.mode): Input should be"),
        ("namespace: Not_OK", "pool 'p' (pools.0.namespace): namespace must be a DNS label"),
        ("active_deadline_seconds: 0", "pools.0.active_deadline_seconds"),
        # what the schema allows and the API server refuses: every launch would fail
        (
            "template: {spec: {containers: [{name: runner}, {name: docker}]}}",
            "pool 'p': template.spec.containers[1].image: is required",
        ),
        (
            "template: {spec: {containers: [{name: runner, image: ''}]}}",
            "pool 'p': template.spec.containers[0].image: is required",
        ),
        (
            "template: {spec: {containers: [{name: runner, image: a}, {name: runner, image: b}]}}",
            "pool 'p': template.spec.containers[1].name: duplicate container name (also "
            "spec.template.spec.containers[0])",
        ),
        (
            "template: {spec: {containers: [{name: runner, resources: {requests: {cpu: lots}}}]}}",
            "pool 'p': template.spec.containers[0].resources.requests.cpu: is not a quantity",
        ),
        (
            "template: {spec: {containers: [{name: runner, resources: "
            "{requests: {memory: 2Gi}, limits: {memory: 1Gi}}}]}}",
            "pool 'p': template.spec.containers[0].resources.requests.memory: must be at most its limit",
        ),
        (
            "template: {spec: {initContainers: [{name: init, image: a, volumeMounts: "
            "[{name: work, mountPath: /w}]}]}}",
            "pool 'p': template.spec.initContainers[0].volumeMounts[0].name: names no volume of the pod",
        ),
    ],
)
def test_bad_pool_settings_name_the_pool_and_field(tmp_path: Path, pool: str, expected: str) -> None:
    document = f"pools:\n  - name: p\n    labels: [a]\n    {pool}\n"
    with pytest.raises(ConfigError) as error:
        settings_from(tmp_path, document)
    assert str(error.value).startswith("GHAPP_POOLS_FILE: ")
    assert expected in str(error.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("2", "2"), ("1Gi", str(2**30)), ("1e3", "1000"), ("1.5k", "1500"), ("10u", "0.00001")],
)
def test_quantities_parse_like_the_api_server(text: str, value: str) -> None:
    assert podspec.quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["lots", "1 Gi", "1GB", "", "1.2.3", "Gi"])
def test_what_is_not_a_quantity(text: str) -> None:
    assert podspec.quantity(text) is None


def test_render_shows_the_jit_placeholder_and_the_merged_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(TEMPLATED)
    assert main(["render", "--pools", str(path), "--pool", "docker"]) == 0
    out = capsys.readouterr().out
    assert "generate-jitconfig" in out
    secret, job = yaml.safe_load_all(out)
    assert secret["stringData"] == {"jitconfig": "<encoded-jit-config>"}
    assert job["metadata"]["annotations"]["ghapp/runner-id"] == "<runner id from generate-jitconfig>"
    validate(job)
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["dind", "runner"]


def test_render_names_an_unknown_pool(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--pool", "nope"]) == 2
    assert "--pool: no pool named 'nope'" in capsys.readouterr().err


async def test_pool_namespace_is_where_its_runners_go(
    tmp_path: Path, environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator
) -> None:
    path = tmp_path / "namespaced.yaml"
    path.write_text("pools:\n  - {name: ns, labels: [self-hosted, linux, x64], namespace: ci-other}\n")
    ghapp = await start_ghapp(load_settings({**environ, "GHAPP_POOLS_FILE": str(path)}), github, kube)
    try:
        await ghapp.queue(
            installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["self-hosted", "linux", "x64"]
        )
        await ghapp.settle()
        assert len(kube.objects("jobs", "ci-other")) == 1
        assert len(kube.objects("secrets", "ci-other")) == 1
        assert ghapp.runner_jobs() == []  # nothing in GHAPP_NAMESPACE
    finally:
        await ghapp.server.close()


def test_the_documented_example_pools_file_loads_and_validates(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "docs" / "pools-example.yaml"
    settings = load_settings({"GHAPP_POOLS_FILE": str(example)})  # every pool's Job is validated at load
    assert [pool.mode for pool in settings.pools] == ["registration-token", "registration-token", "jit"]
    docker = settings.pools[-1]
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=FACTS, pool=docker)
    assert isinstance(result, planner.RunnerPlan)
    validate(manifests.runner_job(result, runner_id=1))
