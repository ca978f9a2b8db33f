"""``ghapp check`` against the fake GitHub and the Kubernetes emulator, in process and as a command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s

from ghapp import check
from ghapp.clock import ManualClock
from ghapp.config import Settings, load_settings, unknown_variables
from ghapp.github import HookConfig
from ghapp.permissions import GITHUB_PERMISSIONS, KUBERNETES_RULES

from .conftest import NAMESPACE, ORG_INSTALLATION, USER_INSTALLATION, WEBHOOK_SECRET, Ghapp
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .keys import PRIVATE_KEY_PEM
from .kubeconfig import write_kubeconfig


@pytest.fixture(autouse=True)
def webhook_url(github: FakeGitHub) -> str:
    """The App's webhook URL, as a deployment sets it (GitHub can reach it: https, a public name)."""
    github.webhook_url = "https://ghapp.acme.dev/webhook"
    return github.webhook_url


def role_rules(rules: dict[tuple[str, str], frozenset[str]]) -> list[dict[str, list[str]]]:
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in rules.items()
    ]


def lines(results: list[check.Result], *, ok: bool) -> list[str]:
    return [r.line() for r in results if r.ok is ok]


async def test_everything_passes_against_a_good_deployment(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator
) -> None:
    kube.rbac_rules = role_rules(KUBERNETES_RULES)
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    assert lines(results, ok=False) == []
    text = check.report(results)
    assert text.endswith(f"all {len(results)} checks passed\n")
    assert "PASS  GitHub: installation 4242 (Organization acme): has what ghapp needs" in text
    assert "PASS  GitHub: installation 5151 (User alice)" in text
    assert "PASS  GitHub: webhook URL: https://ghapp.acme.dev/webhook" in text
    assert "PASS  GitHub: the App subscribes to workflow_job events" in text
    assert "PASS  GitHub: webhook deliveries in the last 24 h: none" in text
    for (group, resource), verbs in KUBERNETES_RULES.items():
        qualified = f"{resource}.{group}" if group else resource
        for verb in verbs:
            assert f"PASS  Kubernetes: may {verb} {qualified} in namespace {NAMESPACE}" in text
    reviews = [r for r in kube.requests if r.resource == "selfsubjectaccessreviews"]
    assert len(reviews) == sum(len(v) for v in KUBERNETES_RULES.values())
    assert kube.writes() == []  # a check changes nothing


async def test_a_missing_github_permission_fails(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator
) -> None:
    settings = load_settings({**environ, "GHAPP_ALLOWED_ACCOUNTS": "*"})
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
        empty.webhook_url = "https://ghapp.acme.dev/webhook"
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


async def test_installations_the_account_rule_turns_away_fail(
    environ: dict[str, str], kube: KubeEmulator
) -> None:
    settings = load_settings({**environ, "GHAPP_ALLOWED_ACCOUNTS": "globex"})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    failed = {r.what: r.detail for r in results if not r.ok}
    assert set(failed) == {
        f"GitHub: installation {ORG_INSTALLATION} (Organization acme)",
        f"GitHub: installation {USER_INSTALLATION} (User alice)",
    }
    assert failed[f"GitHub: installation {ORG_INSTALLATION} (Organization acme)"] == (
        "every job will be refused: account acme is not in GHAPP_ALLOWED_ACCOUNTS; add acme to "
        "GHAPP_ALLOWED_ACCOUNTS (comma-separated) or uninstall the App there"
    )
    assert any(r.ok and r.what.endswith("(Organization globex)") for r in results)


async def test_with_no_allowed_accounts_only_the_app_owner_passes(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator
) -> None:
    github.add_installation(
        installation_id=9090, account="ghapp-owner", account_type="Organization", repositories=["ci"]
    )
    settings = load_settings({**environ, "GHAPP_ALLOWED_ACCOUNTS": ""})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    installations = {r.what: r for r in results if r.what.startswith("GitHub: installation ")}
    assert installations["GitHub: installation 9090 (Organization ghapp-owner)"].ok
    refused = [r for r in installations.values() if not r.ok]
    assert len(refused) == 3
    assert all("is not the App's owner (ghapp-owner)" in r.detail for r in refused)


async def test_an_account_no_pool_covers_fails(
    environ: dict[str, str], kube: KubeEmulator, tmp_path: Path
) -> None:
    pools = tmp_path / "scoped.yaml"
    pools.write_text(
        "pools:\n"
        "  - {name: acme, labels: [self-hosted], organizations: [acme]}\n"
        "  - {name: tools, labels: [self-hosted], repositories: ['ali*/tools']}\n"
    )
    settings = load_settings({**environ, "GHAPP_POOLS_FILE": str(pools)})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    (failure,) = [r for r in results if not r.ok]
    assert failure.what == "GitHub: installation 6161 (Organization globex)"
    assert failure.detail == (
        f"every job will be refused: no pool's organizations / repositories cover account globex "
        f"(pools file {pools})"
    )


async def test_a_bad_webhook_configuration_fails(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator
) -> None:
    github.webhook_url = "https://ghapp.example.com/webhook"  # ghapp setup's placeholder
    github.hook_content_type = "form"
    github.webhook_secret = ""
    github.events = ["installation"]
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    failed = {r.what: r.detail for r in results if not r.ok}
    assert set(failed) == {
        "GitHub: webhook URL",
        "GitHub: webhook content type is json",
        "GitHub: webhook secret is set",
        "GitHub: the App subscribes to workflow_job events",
    }
    assert failed["GitHub: webhook URL"].startswith(
        "https://ghapp.example.com/webhook is a placeholder; set it"
    )
    assert failed["GitHub: webhook content type is json"].startswith("it is form; ")
    assert "(401)" in failed["GitHub: webhook secret is set"]
    assert failed["GitHub: the App subscribes to workflow_job events"].startswith(
        "it subscribes to installation; tick 'Workflow job'"
    )
    assert github.calls_to("GET", "/app/hook/config")[0].status == 200


@pytest.mark.parametrize(
    ("url", "api_url", "label", "detail"),
    [
        ("", "https://api.github.com", "FAIL", "not set, so GitHub sends nothing"),
        ("ftp://ci.acme.dev/webhook", "https://api.github.com", "FAIL", "is not an http(s) URL"),
        ("https://127.0.0.1:8080/webhook", "https://api.github.com", "FAIL", "loopback address"),
        ("http://localhost:8080/webhook", "https://api.github.com", "FAIL", "loopback address"),
        ("http://localhost:8080/webhook", "http://localhost:3000/api/v3", "WARN", "plain http"),
        ("http://ci.acme.dev/webhook", "https://api.github.com", "WARN", "plain http"),
        ("https://ci.acme.dev/webhook", "https://api.github.com", "PASS", "https://ci.acme.dev/webhook"),
    ],
)
def test_webhook_url_rules(url: str, api_url: str, label: str, detail: str) -> None:
    config = HookConfig(url=url, content_type="json", secret_set=True, insecure_ssl=False)
    (url_result, *_) = check.hook_config_results(config, settings_url="S", api_url=api_url)
    assert url_result.label == label
    assert detail in url_result.detail


def test_disabled_tls_verification_warns() -> None:
    config = HookConfig(
        url="https://ci.acme.dev/hook", content_type="json", secret_set=True, insecure_ssl=True
    )
    results = check.hook_config_results(config, settings_url="S", api_url="https://api.github.com")
    assert [r.label for r in results] == ["PASS", "PASS", "PASS", "WARN"]
    assert check.report(results).endswith("\nall 4 checks passed, 1 with a warning\n")


async def test_failed_deliveries_are_reported(
    ghapp_with: Callable[..., Awaitable[Ghapp]],
    environ: dict[str, str],
    kube: KubeEmulator,
    clock: ManualClock,
) -> None:
    settings = load_settings(environ)
    wrong = await ghapp_with(GHAPP_WEBHOOK_SECRET="not-the-apps-secret")
    await wrong.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["self-hosted"])
    assert [d.status_code for d in wrong.github.deliveries] == [401]
    results = await check.run_checks(settings, kube_configuration=kube.configuration(), clock=clock)
    (deliveries,) = [r for r in results if r.what == "GitHub: webhook deliveries in the last 24 h"]
    assert deliveries.label == "FAIL"
    assert deliveries.detail.startswith("1 of 1 failed; newest failure: workflow_job.queued at ")
    assert "Invalid HTTP Response: 401 (HTTP 401)" in deliveries.detail
    assert "GHAPP_WEBHOOK_SECRET differs" in deliveries.detail

    right = await ghapp_with()  # the secret fixed: the newest delivery succeeds
    await right.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["self-hosted"])
    await right.settle()
    results = await check.run_checks(settings, kube_configuration=kube.configuration(), clock=clock)
    (deliveries,) = [r for r in results if r.what == "GitHub: webhook deliveries in the last 24 h"]
    assert deliveries.label == "WARN"
    assert deliveries.detail.startswith("1 of 2 failed; ")
    assert deliveries.detail.endswith("succeeded")

    clock.advance(25 * 3600)  # a day later the failure is history
    results = await check.run_checks(settings, kube_configuration=kube.configuration(), clock=clock)
    (deliveries,) = [r for r in results if r.what == "GitHub: webhook deliveries in the last 24 h"]
    assert (deliveries.label, deliveries.detail) == (
        "PASS",
        "none (no workflow job queued, or webhooks are not reaching GitHub's log)",
    )


async def test_each_pool_is_dry_run_and_a_missing_dedicated_service_account_fails(
    environ: dict[str, str], kube: KubeEmulator
) -> None:
    kube.rbac_rules = role_rules(KUBERNETES_RULES)
    settings = load_settings({**environ, "GHAPP_RUNNER_SERVICE_ACCOUNT": "ci-runner"})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    failed = lines(results, ok=False)
    assert len(failed) == 2  # both pools
    assert failed[0].startswith(f"FAIL  Kubernetes: pool linux can start runners in namespace {NAMESPACE}: ")
    assert f"ServiceAccount 'ci-runner' not found in namespace {NAMESPACE}" in failed[0]

    kube.put_object("serviceaccounts", {"metadata": {"name": "ci-runner", "namespace": NAMESPACE}})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    assert lines(results, ok=False) == []
    assert f"PASS  Kubernetes: pool gpu can start runners in namespace {NAMESPACE}" in lines(results, ok=True)
    dry_runs = [r for r in kube.requests if r.query.get("dryRun") == "All"]
    assert sorted(r.resource for r in dry_runs) == ["jobs", "jobs", "secrets", "secrets"]
    assert kube.writes() == [r for r in kube.writes() if r.resource == "serviceaccounts"]  # nothing else


async def test_a_pool_the_api_server_refuses_fails_with_its_message(
    settings: Settings, kube: KubeEmulator
) -> None:
    kube.fail_next(1, status=403, verb="create", resource="jobs")
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    (failed,) = lines(results, ok=False)
    assert failed.startswith("FAIL  Kubernetes: pool linux can start runners in namespace runners: ")
    assert "the API server refuses its Job: injected fault (HTTP 403)" in failed


async def test_probable_mistakes_in_the_settings_warn(
    environ: dict[str, str], kube: KubeEmulator, tmp_path: Path
) -> None:
    sample = {k: v for k, v in environ.items() if k != "GHAPP_POOLS_FILE"}
    settings = load_settings(sample)
    unknown = unknown_variables({**sample, "GHAPP_POOL_FILE": str(tmp_path / "pools.yaml")})
    results = await check.run_checks(
        settings, kube_configuration=kube.configuration(), unknown_variables=unknown
    )
    warnings = [r.line() for r in results if r.label == "WARN"]
    assert warnings == [
        f"WARN  settings: pools file: {settings.pools_file} is the sample bundled with ghapp; set "
        "GHAPP_POOLS_FILE to your own",
        "WARN  settings: unknown variable: GHAPP_POOL_FILE (did you mean GHAPP_POOLS_FILE?) is ignored",
    ]
    assert all(r.ok for r in results)  # warnings do not fail the check
    assert check.report(results).endswith(", 2 with a warning\n")


async def test_the_command_warns_about_a_typo_even_when_settings_fail(
    environ: dict[str, str], kube: KubeEmulator, tmp_path: Path
) -> None:
    status, out = await run_command(
        {**environ, "GHAPP_MAX_RUNNERS": "many", "GHAPP_LOG_LEVL": "DEBUG"}, kube, tmp_path
    )
    assert status == 1
    assert out.splitlines()[:2] == [
        "FAIL  settings: invalid settings: GHAPP_MAX_RUNNERS: should be a whole number, found text",
        "WARN  settings: unknown variable: GHAPP_LOG_LEVL (did you mean GHAPP_LOG_LEVEL?) is ignored",
    ]


async def test_the_lease_is_checked_in_its_own_namespace_and_runner_rights_where_runners_live(
    environ: dict[str, str], kube: KubeEmulator
) -> None:
    settings = load_settings({**environ, "GHAPP_LEASE_NAMESPACE": "ghapp"})
    results = await check.run_checks(settings, kube_configuration=kube.configuration())
    kubernetes = [r.what for r in results if r.what.startswith("Kubernetes: may ")]
    leases = [what for what in kubernetes if "leases" in what]
    assert sorted(leases) == sorted(
        f"Kubernetes: may {verb} leases.coordination.k8s.io in namespace ghapp"
        for verb in KUBERNETES_RULES[("coordination.k8s.io", "leases")]
    )
    others = [what for what in kubernetes if "leases" not in what]
    assert others
    assert all(what.endswith(f"in namespace {NAMESPACE}") for what in others)
