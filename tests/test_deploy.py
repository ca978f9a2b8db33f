"""deploy/: every kustomization rendered by the real ``kubectl kustomize``, every manifest validated, and the
base held to what ghapp needs and no more. (Applying them to a real API server: test_deploy_cluster.py.)"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from ghapp.config import Settings, load_settings
from ghapp.permissions import KUBERNETES_RULES, LEASE_RULES, RUNNER_RULES
from ghapp.setup import CREDENTIAL_KEYS, SECRET_NAME

from .conftest import PRIVATE_KEY_PEM, WEBHOOK_SECRET, Ghapp
from .flows import full_flow
from .rendered import BASE, CUSTOM_RESOURCES, DEPLOY, KUSTOMIZATIONS, Manifest, find, named, render
from .schema import validate

SERVER_NAMESPACE = "ghapp"
RUNNER_NAMESPACE = "ghapp-runners"
SERVER_LABELS = {"app.kubernetes.io/name": "ghapp", "app.kubernetes.io/component": "server"}
HTTP_SHUTDOWN_SECONDS = 10  # `ghapp serve` gives the HTTP server this long after the launches' grace
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"})


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render(BASE)


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


def settings_configmap(manifests: list[Manifest]) -> dict[str, str]:
    """The data of the ConfigMap the Deployment takes its settings from (``envFrom``)."""
    (source,) = container(manifests)["envFrom"]
    data: dict[str, str] = find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


# -- every kustomization ---------------------------------------------------------------------------------


def test_every_kustomization_is_found() -> None:
    found = {str(path.relative_to(DEPLOY)) for path in KUSTOMIZATIONS}
    assert found == {
        "base",
        "overlays/prometheus",
        "examples/my-ghapp",
        "examples/ingress",
        "examples/gateway",
    }
    # nothing else in deploy/ holds manifests a kustomization leaves out
    listed: set[Path] = set()
    for directory in KUSTOMIZATIONS:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed |= {(directory / entry).resolve() for entry in kustomization.get("resources", [])}
        for generator in kustomization.get("configMapGenerator", []):
            listed |= {(directory / entry).resolve() for entry in generator.get("files", [])}
            listed |= {(directory / entry).resolve() for entry in generator.get("envs", [])}
    files = {p.resolve() for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files - listed == set()


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_renders_valid_manifests_in_ghapps_namespaces(directory: Path) -> None:
    manifests = render(directory)
    assert manifests
    ids = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in manifests]
    assert len(ids) == len(set(ids))
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_RESOURCES:
            continue  # no Kubernetes schema: checked against their CRDs in test_deploy_cluster.py
        validate(manifest)
        if manifest["kind"] in CLUSTER_SCOPED:
            assert manifest["kind"] == "Namespace"  # no ClusterRole, no ClusterRoleBinding, no CRD
            assert manifest["metadata"]["name"] in (SERVER_NAMESPACE, RUNNER_NAMESPACE)
        else:
            assert manifest["metadata"]["namespace"] in (SERVER_NAMESPACE, RUNNER_NAMESPACE), manifest["kind"]
    # an overlay keeps the base whole: the same objects (generated ConfigMaps by their generator's name)
    assert {identity(m) for m in render(BASE)} <= {identity(m) for m in manifests}


def identity(manifest: Manifest) -> tuple[str, str, str]:
    """Kind, namespace and name; a generated ConfigMap by its generator's name (without the hash)."""
    name = manifest["metadata"]["name"]
    if manifest["kind"] == "ConfigMap":
        name = name.rpartition("-")[0]
    return manifest["kind"], manifest["metadata"].get("namespace", ""), name


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_gives_ghapp_settings_it_can_start_with(directory: Path, tmp_path: Path) -> None:
    settings = pod_settings(render(directory), tmp_path)
    settings.require_credentials()
    assert settings.namespace == RUNNER_NAMESPACE
    assert settings.lease_ns == SERVER_NAMESPACE
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert (settings.port, settings.admin_port) == (8080, 9090)
    assert settings.log_format == "json"


# -- the base -------------------------------------------------------------------------------------------


def test_the_base_has_two_namespaces_ghapps_own_and_the_runners(manifests: list[Manifest]) -> None:
    assert sorted(m["kind"] for m in manifests) == sorted(
        [
            *["Namespace"] * 2,
            *["ServiceAccount"] * 2,
            *["Role", "RoleBinding"] * 2,
            *["ConfigMap"] * 2,
            "Deployment",
            "Service",
            "Service",
            "PodDisruptionBudget",
            *["NetworkPolicy"] * 2,
        ]
    )
    where = {(m["kind"], m["metadata"]["name"]): m["metadata"].get("namespace") for m in manifests}
    assert where[("Deployment", "ghapp")] == SERVER_NAMESPACE
    assert where[("ServiceAccount", "ghapp")] == SERVER_NAMESPACE
    assert where[("ServiceAccount", "ghapp-runner")] == RUNNER_NAMESPACE
    for namespace in (SERVER_NAMESPACE, RUNNER_NAMESPACE):
        labels = find(manifests, "Namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_roles_grant_exactly_the_rules_ghapp_declares_where_it_needs_them(
    manifests: list[Manifest],
) -> None:
    assert not [m for m in manifests if m["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {m["metadata"]["namespace"]: m for m in manifests if m["kind"] == "Role"}
    assert set(roles) == {SERVER_NAMESPACE, RUNNER_NAMESPACE}
    # launching and cleaning up in the runners' namespace; only the Lease in ghapp's own (no Secrets there:
    # the credentials reach the pod through the kubelet)
    assert role_permissions(roles[RUNNER_NAMESPACE]) == RUNNER_RULES
    assert role_permissions(roles[SERVER_NAMESPACE]) == LEASE_RULES
    assert {**RUNNER_RULES, **LEASE_RULES} == KUBERNETES_RULES
    for role in roles.values():
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert len(bindings) == 2
    for binding in bindings:
        role = roles[binding["metadata"]["namespace"]]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ghapp", "namespace": SERVER_NAMESPACE}
        ]
    assert pod_spec(manifests)["serviceAccountName"] == "ghapp"


def test_runner_pods_get_a_service_account_without_token_or_rights(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    runner = find(manifests, "ServiceAccount", "ghapp-runner")
    assert runner["automountServiceAccountToken"] is False
    assert runner["metadata"]["namespace"] == RUNNER_NAMESPACE
    bound = [s["name"] for m in manifests if m["kind"].endswith("RoleBinding") for s in m["subjects"]]
    assert "ghapp-runner" not in bound
    assert pod_settings(manifests, tmp_path).runner_service_account == "ghapp-runner"


def test_the_deployment_is_locked_down(manifests: list[Manifest], tmp_path: Path) -> None:
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
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread)
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == SERVER_LABELS
    # the pod's own settings do not point ghapp at its own namespace for runners
    assert pod_settings(manifests, tmp_path).namespace != deployment["metadata"]["namespace"]


def test_a_rolling_update_keeps_serving_until_the_endpoints_are_gone(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    """preStop delays SIGTERM while kube-proxy and Ingress controllers drop the terminating pod; then ghapp
    turns unready and drains within the grace period (issue 10 item 15)."""
    deployment = find(manifests, "Deployment", "ghapp")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0  # a new pod is ready before an old one stops
    pre_stop = container(manifests)["lifecycle"]["preStop"]
    assert set(pre_stop) == {"exec"}  # Kubernetes 1.24 has no `sleep` action
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep"
    delay = float(command[1])
    assert 3 <= delay <= 15
    grace = pod_settings(manifests, tmp_path).shutdown_grace_seconds
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > delay + grace + HTTP_SHUTDOWN_SECONDS
    # the readiness probe notices a shutdown within the delay, for whatever still probes it
    probe = container(manifests)["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 2 * delay


def test_the_image_has_the_sleep_the_pre_stop_hook_runs() -> None:
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    final = [line for line in dockerfile.splitlines() if line.startswith("FROM ")][-1]
    # python:*-slim is Debian with coreutils (/bin/sleep); an image without a shell or coreutils
    # (distroless, scratch) would need a different preStop
    image = final.split()[1]
    assert image.startswith("python:")
    assert image.endswith("-slim")


def pod_settings(manifests: list[Manifest], root: Path, **overrides: str) -> Settings:
    """Lay out the pod's volumes under `root`, resolve its environment as the kubelet would (ConfigMap
    ``envFrom`` first, ``env`` over it; the downward API for a pod in ghapp's namespace), and load ghapp's
    settings from it (with `overrides` of some variables, e.g. to point it at the fake GitHub)."""
    variables = env(manifests)
    assert variables["GHAPP_APP_ID"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "app-id"}
    secret_data = {
        "app-id": "12345",
        "private-key": PRIVATE_KEY_PEM,
        "webhook-secret": WEBHOOK_SECRET,
        "client-id": "Iv23li0000012345",
        "client-secret": "c" * 40,
    }
    assert set(secret_data) == set(CREDENTIAL_KEYS)
    configmaps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    deployment = find(manifests, "Deployment", "ghapp")
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    pod_root = root / "pod"
    for mount in container(manifests)["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = pod_root / mount["mountPath"].lstrip("/")
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
    environ: dict[str, str] = dict(settings_configmap(manifests))
    fields = {"metadata.namespace": deployment["metadata"]["namespace"], "metadata.name": "ghapp-7d9f-x2"}
    for name, item in variables.items():
        if "value" in item:
            value = item["value"]
            environ[name] = str(pod_root / value.lstrip("/")) if value.startswith("/") else value
        elif "secretKeyRef" in item["valueFrom"]:
            environ[name] = secret_data[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            environ[name] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    for name, value in environ.items():
        if value.startswith("/etc/") or value.startswith("/var/"):
            raise AssertionError(f"{name}={value} is not on a volume the pod mounts")
    return load_settings({**environ, **overrides})


def test_settings_come_from_the_credentials_secret_the_configmaps_and_the_downward_api(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    settings = pod_settings(manifests, tmp_path)
    assert [pool.name for pool in settings.pools] == ["linux"]
    assert (settings.port, settings.admin_port) == (8080, 9090)
    assert settings.identity == "ghapp-7d9f-x2"
    assert settings.lease_ns == SERVER_NAMESPACE
    assert settings.runner_namespaces == (RUNNER_NAMESPACE,)
    # the pools and settings ConfigMaps are generated: a change is a new name, so the Deployment rolls out
    assert named(manifests, "ConfigMap", "ghapp-pools")["metadata"]["namespace"] == SERVER_NAMESPACE
    assert named(manifests, "ConfigMap", "ghapp-settings")["metadata"]["namespace"] == SERVER_NAMESPACE


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


# -- NetworkPolicies (no network plugin here: their meaning is evaluated by the rules of the API) -----------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions in deploy/
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_admits(
    peer: dict[str, Any], *, ip: str, namespace: dict[str, str] | None, pod: dict[str, str] | None
) -> bool:
    """Whether a NetworkPolicyPeer admits a destination (or source): an address, and — for a pod — the
    labels of its namespace and its own. `policy_namespace` selectors without a namespaceSelector are left
    out: deploy/ does not use them."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    assert "namespaceSelector" in peer, peer
    if namespace is None or pod is None:
        return False
    return _selects(peer["namespaceSelector"], namespace) and _selects(peer.get("podSelector", {}), pod)


def _ports_admit(ports: list[dict[str, Any]] | None, port: int | str, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def egress_allowed(
    policy: Manifest,
    *,
    ip: str,
    port: int,
    protocol: str = "TCP",
    namespace: dict[str, str] | None = None,
    pod: dict[str, str] | None = None,
) -> bool:
    assert "Egress" in policy["spec"]["policyTypes"]
    return any(
        _ports_admit(rule.get("ports"), port, protocol)
        and any(_peer_admits(peer, ip=ip, namespace=namespace, pod=pod) for peer in rule.get("to", []))
        for rule in policy["spec"].get("egress", [])
    )


def ingress_allowed(
    policy: Manifest,
    *,
    port: int | str,
    ip: str,
    namespace: dict[str, str] | None,
    pod: dict[str, str] | None,
) -> bool:
    assert "Ingress" in policy["spec"]["policyTypes"]
    return any(
        _ports_admit(rule.get("ports"), port, "TCP")
        and (
            "from" not in rule
            or any(_peer_admits(peer, ip=ip, namespace=namespace, pod=pod) for peer in rule["from"])
        )
        for rule in policy["spec"].get("ingress", [])
    )


def test_runner_pods_reach_dns_and_the_internet_but_nothing_inside(manifests: list[Manifest]) -> None:
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    (runners,) = [p for p in policies if p["metadata"]["namespace"] == RUNNER_NAMESPACE]
    assert runners["spec"]["podSelector"] == {}  # every pod in the runner namespace
    assert set(runners["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert runners["spec"]["ingress"] == []  # nothing connects to a runner
    kube_system = {"kubernetes.io/metadata.name": "kube-system"}
    ghapp_ns = {"kubernetes.io/metadata.name": SERVER_NAMESPACE}
    dns_pod = {"k8s-app": "kube-dns"}
    assert egress_allowed(
        runners, ip="10.96.0.10", port=53, protocol="UDP", namespace=kube_system, pod=dns_pod
    )
    assert egress_allowed(
        runners, ip="10.96.0.10", port=53, protocol="TCP", namespace=kube_system, pod=dns_pod
    )
    for internet in ("140.82.112.3", "185.199.108.133", "2606:50c0:8000::154"):  # github.com, its CDN
        assert egress_allowed(runners, ip=internet, port=443)
    denied = [
        ("169.254.169.254", 80, None, None),  # cloud metadata (AWS, GCP, Azure)
        ("fd00:ec2::254", 80, None, None),  # AWS's IPv6 metadata address
        ("10.96.0.1", 443, None, None),  # the API server's Service
        ("172.20.0.1", 443, None, None),
        ("192.168.49.2", 6443, None, None),  # a node's API server
        ("10.244.1.7", 8080, ghapp_ns, SERVER_LABELS),  # ghapp's webhook port
        ("10.244.1.7", 9090, ghapp_ns, SERVER_LABELS),  # ghapp's admin port
        ("100.64.3.9", 8080, ghapp_ns, SERVER_LABELS),  # pods in the shared address space
        ("10.244.2.3", 53, kube_system, {"k8s-app": "other"}),  # DNS is only the cluster's DNS pods
    ]
    for ip, port, namespace, pod in denied:
        assert not egress_allowed(runners, ip=ip, port=port, namespace=namespace, pod=pod), ip


def test_ghapp_takes_webhooks_from_anywhere_and_admin_requests_from_monitoring_only(
    manifests: list[Manifest],
) -> None:
    (policy,) = [
        m
        for m in manifests
        if m["kind"] == "NetworkPolicy" and m["metadata"]["namespace"] == SERVER_NAMESPACE
    ]
    pod_labels = find(manifests, "Deployment", "ghapp")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], pod_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # ghapp's own egress: GitHub and the API server
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    webhook_port = find(manifests, "Service", "ghapp")["spec"]["ports"][0]["targetPort"]
    assert webhook_port in ports
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    runners = {"kubernetes.io/metadata.name": RUNNER_NAMESPACE}
    for source in (("140.82.112.3", None, None), ("10.244.5.5", runners, {}), ("10.244.6.6", monitoring, {})):
        ip, namespace, pod = source
        assert ingress_allowed(policy, port=webhook_port, ip=ip, namespace=namespace, pod=pod)
    assert "admin" in ports  # the admin listener's port, named as the policy names it
    assert ingress_allowed(policy, port="admin", ip="10.244.6.6", namespace=monitoring, pod={})
    for ip, namespace in (("140.82.112.3", None), ("10.244.5.5", runners)):
        assert not ingress_allowed(policy, port="admin", ip=ip, namespace=namespace, pod={})
    assert not ingress_allowed(policy, port=22, ip="140.82.112.3", namespace=None, pod=None)


# -- overlays and examples ------------------------------------------------------------------------------


def test_the_prometheus_overlay_adds_a_service_monitor(manifests: list[Manifest]) -> None:
    overlay = render(DEPLOY / "overlays" / "prometheus")
    assert len(overlay) == len(manifests) + 2
    (rule,) = [m for m in overlay if m["kind"] == "PrometheusRule"]  # tests/test_observability.py checks it
    assert rule["metadata"]["namespace"] == SERVER_NAMESPACE
    monitor = find(overlay, "ServiceMonitor", "ghapp")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == SERVER_NAMESPACE
    service = find(overlay, "Service", "ghapp-admin")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    public = find(overlay, "Service", "ghapp")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= public["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_the_ingress_example_exposes_only_the_webhook() -> None:
    overlay = render(DEPLOY / "examples" / "ingress")
    ingress = find(overlay, "Ingress", "ghapp-webhook", SERVER_NAMESPACE)
    assert "defaultBackend" not in ingress["spec"]
    service = find(overlay, "Service", "ghapp")
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/webhook", "Exact")]
    backend = paths[0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert {tls["secretName"] for tls in ingress["spec"]["tls"]}  # HTTPS: GitHub sends the payload in it


def test_the_gateway_example_routes_only_post_webhook() -> None:
    overlay = render(DEPLOY / "examples" / "gateway")
    route = find(overlay, "HTTPRoute", "ghapp-webhook", SERVER_NAMESPACE)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    service = find(overlay, "Service", "ghapp")
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/webhook"}, "method": "POST"}]
    (backend,) = rule["backendRefs"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"] in {p["port"] for p in service["spec"]["ports"]}
    assert route["spec"]["parentRefs"]


def test_the_example_overlay_sets_the_image_pools_and_settings(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    mine = render(DEPLOY / "examples" / "my-ghapp")
    assert container(mine)["image"] == "registry.example.org/platform/ghapp:0.1.0"
    assert container(manifests)["image"] == "ghcr.io/example/ghapp:0.1.0"  # the base's placeholder
    settings = pod_settings(mine, tmp_path)
    assert settings.allowed_accounts == ("acme", "acme-labs")
    assert settings.max_runners == 50
    assert [pool.name for pool in settings.pools] == ["linux", "linux-large"]
    # merged, not replaced: the base's settings stay
    assert settings.namespace == RUNNER_NAMESPACE
    # a change of pools or settings is a new ConfigMap name in the Deployment: it rolls out by itself
    for prefix in ("ghapp-pools", "ghapp-settings"):
        assert (
            named(mine, "ConfigMap", prefix)["metadata"]["name"]
            != named(manifests, "ConfigMap", prefix)["metadata"]["name"]
        )


# -- the Roles against the calls of a full flow (on the emulator; the real API server: test_deploy_cluster) --

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


async def test_the_roles_allow_every_call_of_a_full_flow(manifests: list[Manifest], ghapp: Ghapp) -> None:
    rules = [rule for m in manifests if m["kind"] == "Role" for rule in m["rules"]]
    ghapp.kube.rbac_rules = rules  # the emulator has one namespace: both Roles' rules together
    ghapp.kube.enforce_rbac = True  # the emulator now answers 403 to anything the Roles do not allow
    await full_flow(ghapp)

    granted = {
        key: verbs for m in manifests if m["kind"] == "Role" for key, verbs in role_permissions(m).items()
    }
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
