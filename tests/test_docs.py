"""The README documents every setting, pool field and metric the code has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from ghapp import check
from ghapp.cli import _parser
from ghapp.config import ENVIRONMENT_VARIABLES, Pool, load_settings
from ghapp.metrics import Metrics
from ghapp.permissions import GITHUB_PERMISSIONS
from ghapp.setup import check_options

from .conftest import APP_ID, WEBHOOK_SECRET
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE_POOLS = ROOT / "deploy" / "examples" / "my-ghapp" / "pools.yaml"


def test_every_environment_variable_is_documented() -> None:
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}" not in README]
    assert missing == []


def test_every_pool_field_is_documented() -> None:
    missing = [name for name in Pool.model_fields if f"{name}:" not in README and f"`{name}`" not in README]
    assert missing == []


def test_every_metric_is_documented() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {metric.name for metric in registry.collect()}
    missing = sorted(name for name in names if f"`{name}" not in README)
    assert names
    assert missing == []


def test_the_quick_start_commands_are_valid() -> None:
    """Every ghapp command of the README's org-wide quick start parses, and setup accepts its options."""
    section = README.split("### Org-wide quick start", 1)[1].split("\n### ", 1)[0]
    commands = [
        shlex.split(line.split("-- ", 1)[1] if " -- ghapp " in line else line)
        for line in section.splitlines()
        if line.startswith(("ghapp ", "kubectl -n ghapp exec deploy/ghapp -- ghapp "))
    ]
    assert [argv[1] for argv in commands] == ["setup", "check", "send-test-webhook", "send-test-webhook"]
    for argv in commands:
        args = _parser().parse_args(argv[1:])
        if args.command == "setup":
            check_options(org=args.org, webhook_url=args.webhook_url, port=args.port)
            assert args.org == "acme"


async def test_the_readmes_check_example_is_what_check_prints_for_that_deployment(tmp_path: Path) -> None:
    """README "Check the deployment": one organisation installation, deploy/'s namespaces and the example
    overlay's pools; its PASS lines and its count are what `ghapp check` reports there."""
    block = README.split("kubectl -n ghapp exec deploy/ghapp -- ghapp check\n```", 1)[1]
    example = block.split("```\n", 2)[1].splitlines()
    github = FakeGitHub(app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET)
    github.add_installation(
        installation_id=4242,
        account="acme",
        account_type="Organization",
        repositories=["webapp"],
        permissions=dict(GITHUB_PERMISSIONS),
    )
    github.webhook_url = "https://ghapp.acme.example/webhook"
    kube = KubeEmulator()
    await github.start()
    await kube.start()
    try:
        settings = load_settings(
            {
                "GHAPP_APP_ID": str(APP_ID),
                "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
                "GHAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "GHAPP_GITHUB_API_URL": github.api_url,
                "GHAPP_NAMESPACE": "ghapp-runners",
                "GHAPP_LEASE_NAMESPACE": "ghapp",
                "GHAPP_POOLS_FILE": str(EXAMPLE_POOLS),
                "GHAPP_ALLOWED_ACCOUNTS": "acme",
                "GHAPP_RUNNER_SERVICE_ACCOUNT": "ghapp-runner",
            }
        )
        kube.put_object(
            "serviceaccounts", {"metadata": {"name": "ghapp-runner", "namespace": "ghapp-runners"}}
        )
        results = await check.run_checks(settings, kube_configuration=kube.configuration())
    finally:
        await kube.close()
        await github.close()
    printed = check.report(results).splitlines()
    assert example[-1] == printed[-1]  # "all N checks passed"
    shown = [line for line in example[:-1] if line != "…"]
    for line in shown:
        pattern = re.escape(line).replace("…", ".*")
        for variable in (
            r"/etc/ghapp/pools/pools\.yaml",
            r"https://api\.github\.com",
            r"https://10\.0\.0\.1:443",
        ):
            pattern = pattern.replace(variable, ".*")
        pattern = re.sub(r"App\\ acme\\-runners\\ \\\(id.*?\\\)", ".*", pattern)  # the App's name, id, owner
        pattern = pattern.replace(r"14,\ none\ failed", ".*")  # no deliveries in the fake's log yet
        assert [p for p in printed if re.fullmatch(pattern, p)], line
