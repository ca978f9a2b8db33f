"""deploy/: render the Kustomization, validate every manifest, hold it to what ghapp needs and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ghapp.config import load_settings
from ghapp.permissions import KUBERNETES_RULES
from ghapp.setup import CREDENTIAL_KEYS, SECRET_NAME

from .conftest import PRIVATE_KEY_PEM, WEBHOOK_SECRET, Ghapp
from .flows import full_flow
from .kustomize import Manifest, find, render
from .schema import validate

DEPLOY = Path(__file__).parents[1] / "deploy"
NAMESPACE = "ghapp"
SERVER_LABELS = {"app.kubernetes.io/name": "ghapp", "app.kubernetes.io/component": "server"}
HTTP_SHUTDOWN_SECONDS = 10  # `ghapp serve` gives the HTTP server this long after the launches' grace


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render(DEPLOY)


def role_permissions(role: Manifest) -> dict[tuple[str, str], frozenset[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in granted.items()}


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = find(manifests, "Deployment", "ghapp")["spec"]["template"]["spec"]
    return spec


def container(manifests: list[Manifest]) -> dict[str, Any]:
    (only,) = pod_spec(manifests)["containers"]
    assert isinstance(only, dict)
    return only


def env(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(manifests)["env"]}


def test_every_manifest_is_valid_and_in_the_namespace(manifests: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "Service",
            "PodDisruptionBudget",
        ]
    )
    for manifest in manifests:
        validate(manifest)
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["name"] == NAMESPACE
        else:
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["kind"]


def test_the_role_grants_exactly_the_rules_ghapp_declares(manifests: list[Manifest]) -> None:
    assert not [m for m in manifests if m["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = find(manifests, "Role", "ghapp")
    granted = role_permissions(role)
    assert granted == KUBERNETES_RULES
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field]
    binding = find(manifests, "RoleBinding", "ghapp")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ghapp"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ghapp", "namespace": NAMESPACE}]
    assert pod_spec(manifests)["serviceAccountName"] == "ghapp"


def test_runner_pods_get_a_service_account_without_token_or_rights(manifests: list[Manifest]) -> None:
    runner = find(manifests, "ServiceAccount", "ghapp-runner")
    assert runner["automountServiceAccountToken"] is False
    bound = [s["name"] for m in manifests if m["kind"].endswith("RoleBinding") for s in m["subjects"]]
    assert "ghapp-runner" not in bound


def test_the_deployment_is_locked_down(manifests: list[Manifest]) -> None:
    deployment = find(manifests, "Deployment", "ghapp")
    assert deployment["spec"]["replicas"] == 2
    pod = pod_spec(manifests)
    main = container(manifests)
    security = main["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    for kind in ("requests", "limits"):
        assert set(main["resources"][kind]) == {"cpu", "memory"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "admin", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert main["args"] == ["serve"]
    # a writable /tmp on a read-only root
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # spread over nodes, so a node failure keeps one replica
    spread = pod.get("topologySpreadConstraints") or []
    anti = (pod.get("affinity") or {}).get("podAntiAffinity")
    assert anti or any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread)
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == SERVER_LABELS
    # time to finish in-flight launches, then the HTTP server, before SIGKILL
    grace = float(env(manifests)["GHAPP_SHUTDOWN_GRACE_SECONDS"]["value"])
    assert pod["terminationGracePeriodSeconds"] > grace + HTTP_SHUTDOWN_SECONDS


def test_settings_come_from_the_credentials_secret_the_configmap_and_the_downward_api(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    """Lay out the pod's volumes in a directory, resolve its environment, and load ghapp's settings."""
    variables = env(manifests)
    assert variables["GHAPP_APP_ID"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "app-id"}
    assert variables["GHAPP_NAMESPACE"]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.namespace"}
    secret_data = {
        "app-id": "12345",
        "private-key": PRIVATE_KEY_PEM,
        "webhook-secret": WEBHOOK_SECRET,
        "client-id": "Iv23li0000012345",
        "client-secret": "c" * 40,
    }
    assert set(secret_data) == set(CREDENTIAL_KEYS)
    configmaps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    pod = pod_spec(manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    root = tmp_path / "pod"
    for mount in container(manifests)["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True)
        if "secret" in volume:
            assert volume["secret"]["secretName"] == SECRET_NAME
            assert volume["secret"]["defaultMode"] & 0o077 in (0, 0o040)  # owner (and fsGroup) only
            assert mount.get("readOnly") is True
            for item in volume["secret"]["items"]:
                (target / item["path"]).write_text(secret_data[item["key"]])
        elif "configMap" in volume:
            for key, value in configmaps[volume["configMap"]["name"]].items():
                (target / key).write_text(value)
    environ: dict[str, str] = {}
    for name, item in variables.items():
        if "value" in item:
            value = item["value"]
            environ[name] = str(root / value.lstrip("/")) if value.startswith("/") else value
        elif "secretKeyRef" in item["valueFrom"]:
            environ[name] = secret_data[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            environ[name] = NAMESPACE
    settings = load_settings(environ)
    settings.require_credentials()
    assert settings.namespace == NAMESPACE
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert [pool.name for pool in settings.pools] == ["linux"]
    assert (settings.port, settings.admin_port) == (8080, 9090)


def test_the_service_and_the_disruption_budget_select_the_pods(manifests: list[Manifest]) -> None:
    labels = find(manifests, "Deployment", "ghapp")["spec"]["template"]["metadata"]["labels"]
    service = find(manifests, "Service", "ghapp")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 80)
    container_ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert container_ports[port["targetPort"]] == 8080
    # the admin listener has a Service of its own, so that an Ingress for the webhook never reaches it
    admin = find(manifests, "Service", "ghapp-admin")
    assert admin["spec"]["selector"].items() <= labels.items()
    (port,) = admin["spec"]["ports"]
    assert (port["name"], port["port"], container_ports[port["targetPort"]]) == ("admin", 9090, 9090)
    budget = find(manifests, "PodDisruptionBudget", "ghapp")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_prometheus_overlay_adds_a_service_monitor(manifests: list[Manifest]) -> None:
    overlay = render(DEPLOY / "overlays" / "prometheus")
    monitors = [m for m in overlay if m["kind"] == "ServiceMonitor"]
    assert len(overlay) == len(manifests) + 2
    (rule,) = [m for m in overlay if m["kind"] == "PrometheusRule"]  # tests/test_observability.py checks it
    assert rule["metadata"]["namespace"] == NAMESPACE
    for manifest in overlay:
        if manifest["kind"] not in (
            "ServiceMonitor",
            "PrometheusRule",
        ):  # CRDs: no schema to check them against
            validate(manifest)
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    service = find(overlay, "Service", "ghapp-admin")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    public = find(overlay, "Service", "ghapp")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= public["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


RBAC_VERBS = {
    "get": "get",
    "list": "list",
    "watch": "watch",
    "create": "create",
    "update": "update",
    "patch": "patch",
    "delete": "delete",
    "deletecollection": "deletecollection",
}
"""The emulator's verb for a request → the RBAC verb that allows it."""


def api_group(path: str) -> str:
    parts = path.strip("/").split("/")
    return "" if parts[0] == "api" else parts[1]


async def test_the_role_allows_every_call_of_a_full_flow(manifests: list[Manifest], ghapp: Ghapp) -> None:
    role = find(manifests, "Role", "ghapp")
    ghapp.kube.rbac_rules = role["rules"]
    ghapp.kube.enforce_rbac = True  # the emulator now answers 403 to anything the Role does not allow
    await full_flow(ghapp)

    granted = role_permissions(role)
    used = {
        (api_group(r.path), r.resource, RBAC_VERBS[r.verb])
        for r in ghapp.kube.requests
        if r.resource != "selfsubjectaccessreviews"  # every authenticated user may create these
    }
    assert used  # the flow did talk to Kubernetes
    assert {(g, r, v) for g, r, v in used if v not in granted.get((g, r), frozenset())} == set()
    assert [(r.verb, r.path) for r in ghapp.kube.requests if r.status == 403] == []
    # and nothing more is granted than the code uses
    assert used == {(g, r, v) for (g, r), verbs in granted.items() for v in verbs}
