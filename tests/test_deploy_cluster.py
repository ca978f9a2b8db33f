"""deploy/ on a real API server: the README's install steps with the real ``kubectl apply -k``, every
kustomization applied, and what ghapp's ServiceAccount may and may not do, proven with its own token.

`kubectl apply -k deploy/…` creates cluster-scoped objects (the namespaces ``ghapp`` and ``ghapp-runners``)
under fixed names, so these tests get a control plane of their own (``../shared/k8s``) instead of sharing
the session's: two test runs at once cannot trip over each other.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ghapp import check
from ghapp.clock import ManualClock

from . import realcluster
from .conftest import APP_ID, ORG_INSTALLATION, PRIVATE_KEY_PEM, WEBHOOK_SECRET, start_ghapp
from .fakes.github import FakeGitHub
from .realcluster import Cluster, eventually
from .rendered import CUSTOM_RESOURCES, DEPLOY, KUSTOMIZATIONS, render
from .test_deploy import RUNNER_NAMESPACE, SERVER_NAMESPACE, pod_settings

CRDS = Path(__file__).parent / "crds" / "minimal.yaml"
LINUX = ["self-hosted", "linux", "x64"]


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane for this module alone (see the module's docstring)."""
    if not (realcluster.SHARED_K8S / "up").is_file():
        if realcluster.required():
            pytest.fail("GHAPP_REQUIRE_REAL_CLUSTER is set but ../shared/k8s/up is missing")
        pytest.skip("no ../shared/k8s to start a control plane with")  # ok-skip
    folder = tmp_path_factory.mktemp("k8s-deploy")
    try:
        kubeconfig = realcluster.start_shared(folder)
    except RuntimeError:  # `up` gives up on a slow start under load (it stops what it started): once more
        kubeconfig = realcluster.start_shared(folder)
    try:
        cluster = Cluster(kubeconfig=kubeconfig)
        cluster.kubectl("apply", "-f", str(CRDS))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
        yield cluster
    finally:
        realcluster.stop_shared(folder)


def token_kubeconfig(cluster: Cluster, *, service_account: str, namespace: str, path: Path) -> Cluster:
    """A kubeconfig that authenticates as `service_account` with a TokenRequest token, as its pod would."""
    token = cluster.kubectl("-n", namespace, "create", "token", service_account).stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    (entry,) = admin["clusters"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": entry["cluster"]}],
                "users": [{"name": service_account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": service_account}}],
                "current-context": "c",
            }
        )
    )
    return Cluster(kubeconfig=path)


def can_i(cluster: Cluster, verb: str, resource: str, namespace: str) -> bool:
    """The API server's answer (SelfSubjectAccessReview) for the kubeconfig's own credentials."""
    done = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def install_like_the_readme(cluster: Cluster, root: Path) -> Path:
    """README "Install": the namespace and the credentials Secret by hand, then the user's overlay made
    from deploy/examples/my-ghapp (in a copy of deploy/), applied with ``kubectl apply -k``."""
    deploy = root / "deploy"
    shutil.copytree(DEPLOY, deploy)
    shutil.copytree(deploy / "examples" / "my-ghapp", deploy / "overlays" / "mine")
    key = root / "your-app.private-key.pem"
    key.write_text(PRIVATE_KEY_PEM)
    cluster.kubectl("create", "namespace", SERVER_NAMESPACE, check=False)  # exists if another test applied
    cluster.kubectl(
        "-n",
        SERVER_NAMESPACE,
        "create",
        "secret",
        "generic",
        "ghapp-credentials",
        f"--from-literal=app-id={APP_ID}",
        f"--from-file=private-key={key}",
        f"--from-literal=webhook-secret={WEBHOOK_SECRET}",
        check=False,  # exists if another test made it
    )
    cluster.kubectl("-n", SERVER_NAMESPACE, "get", "secret", "ghapp-credentials")
    cluster.kubectl("apply", "-k", str(deploy / "overlays" / "mine"))
    return deploy / "overlays" / "mine"


async def test_the_readmes_install_runs_ghapp_with_exactly_the_rights_it_needs(
    own_cluster: Cluster, github: FakeGitHub, tmp_path: Path, clock: ManualClock
) -> None:
    overlay = install_like_the_readme(own_cluster, tmp_path)
    deployment = await own_cluster.get("deployment", "ghapp", SERVER_NAMESPACE)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ghapp"

    # ghapp, configured as its pod would be, authenticating with its ServiceAccount's token
    as_ghapp = token_kubeconfig(
        own_cluster, service_account="ghapp", namespace=SERVER_NAMESPACE, path=tmp_path / "kc"
    )
    settings = pod_settings(render(overlay), tmp_path, GHAPP_GITHUB_API_URL=github.api_url)
    ghapp = await start_ghapp(settings, github, as_ghapp, clock=clock)
    try:
        job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await ghapp.settle()
        assert ghapp.metric("ghapp_runners_launched_total", pool="linux", outcome="created") == 1
        name = f"ghapp-{job_id}"
        assert await own_cluster.get("job", name, RUNNER_NAMESPACE) is not None
        assert await own_cluster.get("secret", name, RUNNER_NAMESPACE) is not None

        # the Job controller's pod passes the runner namespace's Pod Security "restricted" admission
        async def runner_pod() -> list[dict[str, Any]]:
            return await own_cluster.objects("pods", RUNNER_NAMESPACE, selector=f"job-name={name}")

        (pod,) = await eventually(runner_pod, what="the runner pod admitted")
        assert pod["spec"]["serviceAccountName"] == "ghapp-runner"
        assert pod["spec"]["automountServiceAccountToken"] is False

        # the reconciler's Lease, beside ghapp
        assert await ghapp.services.elector.campaign_once() is True
        lease = await own_cluster.get("lease", settings.lease_name, SERVER_NAMESPACE)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == settings.identity

        # `ghapp check` with the same credentials: every permission in every namespace
        results = await check.run_checks(settings, kube_configuration=await as_ghapp.configuration())
        kubernetes = [r for r in results if r.what.startswith("Kubernetes: ")]
        assert [r.line() for r in kubernetes if not r.ok] == []
        assert any(f"in namespace {SERVER_NAMESPACE}" in r.what for r in kubernetes)
        assert any(f"in namespace {RUNNER_NAMESPACE}" in r.what for r in kubernetes)
    finally:
        await ghapp.stop()

    # what the token may not do: read its own credentials or any Secret beside it, touch anything there
    # but the Lease, or anything in another namespace
    forbidden = as_ghapp.kubectl("-n", SERVER_NAMESPACE, "get", "secret", "ghapp-credentials", check=False)
    assert forbidden.returncode != 0
    assert "Forbidden" in forbidden.stderr
    for verb, resource, namespace in (
        ("get", "secrets", SERVER_NAMESPACE),
        ("list", "secrets", SERVER_NAMESPACE),
        ("create", "jobs.batch", SERVER_NAMESPACE),
        ("get", "configmaps", SERVER_NAMESPACE),
        ("update", "deployments.apps", SERVER_NAMESPACE),
        ("create", "leases.coordination.k8s.io", RUNNER_NAMESPACE),
        ("create", "pods", RUNNER_NAMESPACE),
        ("update", "secrets", RUNNER_NAMESPACE),
        ("list", "secrets", "kube-system"),
        ("create", "jobs.batch", "default"),
        ("list", "namespaces", ""),
    ):
        assert not can_i(as_ghapp, verb, resource, namespace), (verb, resource, namespace)
    for verb, resource, namespace in (
        ("create", "jobs.batch", RUNNER_NAMESPACE),
        ("get", "secrets", RUNNER_NAMESPACE),
        ("update", "leases.coordination.k8s.io", SERVER_NAMESPACE),
    ):
        assert can_i(as_ghapp, verb, resource, namespace), (verb, resource, namespace)

    # runner pods' ServiceAccount: no rights at all (and no token mounted, above)
    as_runner = token_kubeconfig(
        own_cluster, service_account="ghapp-runner", namespace=RUNNER_NAMESPACE, path=tmp_path / "runner-kc"
    )
    for verb, resource, namespace in (
        ("get", "secrets", RUNNER_NAMESPACE),
        ("list", "pods", RUNNER_NAMESPACE),
        ("get", "leases.coordination.k8s.io", SERVER_NAMESPACE),
        ("create", "jobs.batch", RUNNER_NAMESPACE),
    ):
        assert not can_i(as_runner, verb, resource, namespace), (verb, resource, namespace)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_applies_to_a_real_api_server(own_cluster: Cluster, directory: Path) -> None:
    """`kubectl apply -k` (the API server validates and stores every object; custom resources against the
    CRD stand-ins in tests/crds/, unknown fields refused by kubectl's schema check, nothing pruned)."""
    applied = own_cluster.kubectl("apply", "-k", str(directory), check=False)
    assert applied.returncode == 0, applied.stderr
    listed = json.loads(own_cluster.kubectl("get", "-k", str(directory), "-o", "json").stdout)
    stored = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in listed["items"]}
    for manifest in render(directory):
        metadata = manifest["metadata"]
        found = stored[(manifest["kind"], metadata.get("namespace"), metadata["name"])]
        if manifest["kind"] in CUSTOM_RESOURCES:
            assert found["spec"] == manifest["spec"]  # every field known to the schema: none pruned
        if manifest["kind"] == "ConfigMap":
            assert found["data"] == manifest["data"]
    assert len(stored) == len(render(directory))


def test_kubectl_refuses_a_custom_resource_field_the_schema_lacks(own_cluster: Cluster) -> None:
    """The stand-in CRDs make a mistake visible (so the test above could fail)."""
    (route,) = [m for m in render(DEPLOY / "examples" / "gateway") if m["kind"] == "HTTPRoute"]
    route["spec"]["rules"][0]["matches"][0]["methods"] = ["POST"]  # a plausible typo
    refused = own_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(route), check=False
    )
    assert refused.returncode != 0
    assert "unknown field" in refused.stderr
