"""``ghapp check`` against the fake GitHub and the Kubernetes emulator, in process and as a command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s

from ghapp import check
from ghapp.config import Settings, load_settings
from ghapp.permissions import GITHUB_PERMISSIONS, KUBERNETES_RULES

from .conftest import NAMESPACE, ORG_INSTALLATION, USER_INSTALLATION, WEBHOOK_SECRET
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .keys import PRIVATE_KEY_PEM
from .kubeconfig import write_kubeconfig


def role_rules(rules: dict[tuple[str, str], frozenset[str]]) -> list[dict[str, list[str]]]:
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in rules.items()
    ]


def lines(results: list[check.Result], *, ok: bool) -> list[str]:
    return [r.line() for r in results if r.ok is ok]


async def test_everything_passes_against_a_good_deployment(settings: Settings, kube: KubeEmulator) -> None:
    kube.rbac_rules = role_rules(KUBERNETES_RULES)
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    assert lines(results, ok=False) == []
    text = check.report(results)
    assert text.endswith(f"all {len(results)} checks passed\n")
    assert "PASS  GitHub: installation 4242 (Organization acme): has what ghapp needs" in text
    assert "PASS  GitHub: installation 5151 (User alice)" in text
    for (group, resource), verbs in KUBERNETES_RULES.items():
        qualified = f"{resource}.{group}" if group else resource
        for verb in verbs:
            assert f"PASS  Kubernetes: may {verb} {qualified} in namespace {NAMESPACE}" in text
    reviews = [r for r in kube.requests if r.resource == "selfsubjectaccessreviews"]
    assert len(reviews) == sum(len(v) for v in KUBERNETES_RULES.values())
    assert kube.writes() == []  # a check changes nothing


async def test_a_missing_github_permission_fails(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator
) -> None:
    without_runners = {k: v for k, v in GITHUB_PERMISSIONS.items() if k != "organization_self_hosted_runners"}
    github.add_installation(
        installation_id=7070,
        account="initech",
        account_type="Organization",
        repositories=["tps"],
        permissions=without_runners,
    )
    github.add_installation(
        installation_id=8080,
        account="bob",
        account_type="User",
        repositories=["dotfiles"],
        permissions={**GITHUB_PERMISSIONS, "administration": "read"},
    )
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    failed = lines(results, ok=False)
    assert failed == [
        "FAIL  GitHub: installation 7070 (Organization initech): lacks organization_self_hosted_runners: "
        "write (has none): grant it in the App's permissions, then accept the new permissions on the "
        "installation",
        "FAIL  GitHub: installation 8080 (User bob): lacks administration: write (has read): grant it in the "
        "App's permissions, then accept the new permissions on the installation",
    ]
    assert "2 failed" in check.report(results)


def test_what_each_kind_of_installation_needs() -> None:
    org = check.needed_permissions("Organization")
    user = check.needed_permissions("User")
    assert org["organization_self_hosted_runners"] == "write"
    assert "administration" not in org
    assert user["administration"] == "write"
    assert "organization_self_hosted_runners" not in user
    assert org.keys() | user.keys() == GITHUB_PERMISSIONS.keys()
    assert check.missing_permissions({"actions": "write", "metadata": "read"}, {"actions": "read"}) == []
    assert check.missing_permissions({"actions": "admin"}, {"actions": "write"}) == []
    assert check.missing_permissions({}, {"metadata": "read"}) == ["metadata: read (has none)"]


async def test_rbac_denied_names_the_verb_and_resource(settings: Settings, kube: KubeEmulator) -> None:
    rules = dict(KUBERNETES_RULES)
    rules[("", "secrets")] = rules[("", "secrets")] - {"delete"}
    del rules[("coordination.k8s.io", "leases")]
    kube.rbac_rules = role_rules(rules)
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    failed = [r.what for r in results if not r.ok]
    assert sorted(failed) == sorted(
        [
            f"Kubernetes: may not {verb} leases.coordination.k8s.io in namespace {NAMESPACE}"
            for verb in KUBERNETES_RULES[("coordination.k8s.io", "leases")]
        ]
        + [f"Kubernetes: may not delete secrets in namespace {NAMESPACE}"]
    )
    assert all("Role" in r.detail for r in results if not r.ok)


async def test_a_key_github_does_not_accept_fails(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = load_settings({**environ, "GHAPP_PRIVATE_KEY": pem})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    (failure,) = [r for r in results if not r.ok]
    assert failure.what.startswith("GitHub: ")
    assert "accepts the App's JWT" in failure.what
    assert "401" in failure.detail
    assert "GHAPP_APP_ID" in failure.detail
    assert not any(r.what.startswith("GitHub: installation") for r in results)
    assert github.calls_to("GET", "/app")[0].status == 401
    assert pem.splitlines()[1] not in check.report(results)


async def test_no_installations_and_no_cluster_fail(environ: dict[str, str], tmp_path: Path) -> None:
    empty = FakeGitHub(app_id=12345, public_key_pem=_public_pem(), webhook_secret=WEBHOOK_SECRET)
    await empty.start()
    try:
        settings = load_settings({**environ, "GHAPP_GITHUB_API_URL": empty.api_url})
        gone = KubeEmulator()
        await gone.start()
        configuration = gone.configuration()
        await gone.close()  # nothing listens there any more
        results = await check.run_checks(settings, kube_configuration=configuration)
    finally:
        await empty.close()
    failed = {r.what: r.detail for r in results if not r.ok}
    assert failed["GitHub: installations"].startswith("none; install the App at ")
    assert failed["GitHub: installations"].endswith("/installations/new")
    assert f"Kubernetes: API server {configuration.host} answers" in failed
    assert len(failed) == 2


def _public_pem() -> bytes:
    from .keys import PUBLIC_KEY_PEM

    return PUBLIC_KEY_PEM


async def run_command(environ: dict[str, str], kube: KubeEmulator, tmp_path: Path) -> tuple[int, str]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=kube.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "check",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environ, "KUBECONFIG": str(kubeconfig)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_command_exits_0_only_when_all_pass(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator, tmp_path: Path
) -> None:
    status, out = await run_command(environ, kube, tmp_path)
    assert status == 0, out
    assert "FAIL" not in out
    assert f"PASS  GitHub: installation {ORG_INSTALLATION} (Organization acme)" in out
    assert f"PASS  GitHub: installation {USER_INSTALLATION} (User alice)" in out
    assert "checks passed" in out
    for secret in (WEBHOOK_SECRET, PRIVATE_KEY_PEM.splitlines()[1]):
        assert secret not in out

    kube.rbac_rules = role_rules({k: v for k, v in KUBERNETES_RULES.items() if k[1] != "secrets"})
    status, out = await run_command(environ, kube, tmp_path)
    assert status == 1
    assert f"FAIL  Kubernetes: may not list secrets in namespace {NAMESPACE}" in out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"GHAPP_POOLS_FILE": "/nonexistent/pools.yaml"}, "FAIL  settings: GHAPP_POOLS_FILE"),
        ({"GHAPP_WEBHOOK_SECRET": ""}, "FAIL  credentials: missing required settings: GHAPP_WEBHOOK_SECRET"),
    ],
    ids=["bad-pools-file", "no-webhook-secret"],
)
async def test_the_command_reports_bad_settings(
    environ: dict[str, str],
    kube: KubeEmulator,
    tmp_path: Path,
    change: dict[str, str],
    expected: str,
) -> None:
    status, out = await run_command({**environ, **change}, kube, tmp_path)
    assert status == 1
    assert expected in out


async def test_kubernetes_configuration_is_used_as_given(settings: Settings, kube: KubeEmulator) -> None:
    configuration = k8s.Configuration()
    configuration.host = kube.url
    results = await check.run_checks(settings, kube_configuration=configuration)
    assert all(r.ok for r in results)


async def test_a_pool_namespace_is_checked_for_runner_objects(
    environ: dict[str, str], kube: KubeEmulator, tmp_path: Path
) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("pools:\n  - {name: other, labels: [self-hosted, linux], namespace: ci-other}\n")
    settings = load_settings({**environ, "GHAPP_POOLS_FILE": str(pools)})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    lines = [r.line() for r in results]
    assert [r.line() for r in results if not r.ok] == []
    for verb in ("create", "delete", "get", "list", "watch"):
        assert any(f"may {verb} jobs.batch in namespace ci-other" in line for line in lines), verb
    assert not any("leases" in line and "ci-other" in line for line in lines)  # the Lease stays home
    assert any(f"may update leases.coordination.k8s.io in namespace {NAMESPACE}" in line for line in lines)
