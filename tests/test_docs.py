"""The README documents every setting, pool field and metric the code has."""

from __future__ import annotations

import shlex
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from ghapp.cli import _parser
from ghapp.config import ENVIRONMENT_VARIABLES, Pool
from ghapp.metrics import Metrics
from ghapp.setup import check_options

README = (Path(__file__).parent.parent / "README.md").read_text()


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
