"""The README documents every setting, pool field and metric the code has."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from ghapp.config import ENVIRONMENT_VARIABLES, Pool
from ghapp.metrics import Metrics

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
