"""The Grafana dashboard and the Prometheus alert rules in deploy/: every query uses metrics a running ghapp
really exports, every expression is valid PromQL (promtool), and the alerts fire when they should
(``promtool test rules`` on scripted series)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .conftest import Ghapp

PROMETHEUS = Path(__file__).parent.parent / "deploy" / "overlays" / "prometheus"
DASHBOARD = PROMETHEUS / "grafana-dashboard.json"
RULES = PROMETHEUS / "prometheusrule.yaml"
METRIC = re.compile(r"\bghapp_[a-z0-9_]+")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1d", "$__interval": "1m", "$pool": ".*"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return found


def exported(metrics_text: str) -> set[str]:
    """Every sample name a /metrics page can have, from its ``# TYPE`` lines."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


async def live_metrics(ghapp: Ghapp) -> set[str]:
    async with aiohttp.ClientSession() as session, session.get(ghapp.admin.make_url("/metrics")) as response:
        assert response.status == 200
        return exported(await response.text())


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def rule_groups() -> dict[str, Any]:
    rule = yaml.safe_load(RULES.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule_groups()["groups"] for r in group["rules"]}


async def test_every_dashboard_query_uses_metrics_ghapp_exports(ghapp: Ghapp) -> None:
    names = await live_metrics(ghapp)
    queries = dashboard_queries()
    used = {name for query in queries for name in METRIC.findall(query)}
    assert len(queries) >= 15
    assert used - names == set()
    # the numbers the issue asks for are all on it
    assert {
        "ghapp_job_queued_to_started_seconds_bucket",
        "ghapp_job_queued_to_runner_job_seconds_bucket",
        "ghapp_job_runner_job_to_pod_running_seconds_bucket",
        "ghapp_job_duration_seconds_bucket",
        "ghapp_runner_seconds_total",
        "ghapp_queue_length",
        "ghapp_pool_healthy",
        "ghapp_runner_failures_total",
    } <= used


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool checks PromQL as recording rules (Grafana's variables replaced by values)."""
    rules = []
    for index, query in enumerate(dashboard_queries()):
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"ghapp:dashboard_query_{index}", "expr": query})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ghapp"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"  # whatever the user's Prometheus is called
            assert panel["targets"]


async def test_the_alert_rules_use_metrics_ghapp_exports(ghapp: Ghapp) -> None:
    names = await live_metrics(ghapp)
    used = {name for rule in alerts().values() for name in METRIC.findall(rule["expr"])}
    assert used
    assert used - names == set()


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    rules = alerts()
    assert set(rules) == {
        "GhappNoWebhooks",
        "GhappJobsWaitingForCapacity",
        "GhappJobsWaitLong",
        "GhappPoolUnhealthy",
        "GhappRunnerOutdated",
        "GhappPoolLaunchesFailing",
        "GhappRunnerJobsFailing",
        "GhappReconcileFailing",
        "GhappRateLimitNearlySpent",
        "GhappScanFallingBehind",
        "GhappLeaderMissing",
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups()))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def expected(alert: str, **labels: str) -> dict[str, Any]:
    """The alert as promtool should see it firing: its labels and its annotations rendered with `labels`
    (the templates used here only name labels)."""
    rule = alerts()[alert]
    annotations = {}
    for key, template in rule["annotations"].items():
        text = template
        for name, value in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", value)
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


@pytest.mark.parametrize(
    ("alert", "series", "fires_at", "labels"),
    [
        # no lease holder anywhere
        ("GhappLeaderMissing", {'ghapp_leader{pod="a"}': "0x20", 'ghapp_leader{pod="b"}': "0x20"}, "10m", {}),
        # webhooks stop (the counter is flat) while jobs wait
        (
            "GhappNoWebhooks",
            {
                'ghapp_webhook_deliveries_total{event="workflow_job",outcome="accepted"}': "5x40",
                'ghapp_queue_length{pool="linux"}': "2x40",
            },
            "30m",
            {},
        ),
        # a leader whose passes all fail
        (
            "GhappReconcileFailing",
            {
                'ghapp_leader{pod="a"}': "1x60",
                'ghapp_reconcile_passes_total{outcome="failed"}': "0+1x60",
                'ghapp_reconcile_passes_total{outcome="ok"}': "3x60",
            },
            "45m",
            {},
        ),
        # a pool marked unhealthy on one replica (the other has not seen its failures)
        (
            "GhappPoolUnhealthy",
            {
                'ghapp_pool_healthy{pool="gpu",pod="a"}': "0x20",
                'ghapp_pool_healthy{pool="linux",pod="a"}': "1x20",
            },
            "10m",
            {"pool": "gpu"},
        ),
        # a runner exits with code 7: at once
        (
            "GhappRunnerOutdated",
            {'ghapp_runner_failures_total{pool="linux",reason="outdated"}': "0 0 0 1x20"},
            "5m",
            {"pool": "linux"},
        ),
        # the leader's passes leave repositories of one installation waiting for hours; a former leader's
        # last value (pod b) is no alert
        (
            "GhappScanFallingBehind",
            {
                'ghapp_leader{pod="a"}': "1x300",
                'ghapp_leader{pod="b"}': "0x300",
                'ghapp_scan_repositories_waiting{installation="42",pod="a"}': "120x300",
                'ghapp_scan_repositories_waiting{installation="43",pod="a"}': "0x300",
                'ghapp_scan_repositories_waiting{installation="43",pod="b"}': "70x300",
            },
            "4h",
            {"installation": "42"},
        ),
        # every launch of a pool fails
        (
            "GhappPoolLaunchesFailing",
            {
                'ghapp_runners_launched_total{pool="gpu",outcome="failed"}': "0+1x40",
                'ghapp_runners_launched_total{pool="gpu",outcome="created"}': "4x40",
                'ghapp_runners_launched_total{pool="linux",outcome="created"}': "0+1x40",
            },
            "30m",
            {"pool": "gpu"},
        ),
    ],
)
def test_alerts_fire_when_they_should(
    alert: str, series: dict[str, str], fires_at: str, labels: dict[str, str], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": alert, "exp_alerts": []},  # not at once: `for`
                    {"eval_time": fires_at, "alertname": alert, "exp_alerts": [expected(alert, **labels)]},
                ],
            }
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_healthy_ghapp_raises_no_alert(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    healthy = {
        'ghapp_leader{pod="a"}': "1x60",
        'ghapp_leader{pod="b"}': "0x60",
        'ghapp_webhook_deliveries_total{event="workflow_job",outcome="accepted"}': "0+3x60",
        'ghapp_queue_length{pool="linux"}': "0x60",
        'ghapp_reconcile_passes_total{outcome="ok"}': "0+1x60",
        'ghapp_runners_launched_total{pool="linux",outcome="created"}': "0+3x60",
        'ghapp_github_rate_limit_remaining{installation="42"}': "4900-10x60",
        'ghapp_runner_jobs{pool="linux",state="failed"}': "0x60",
        'ghapp_pool_healthy{pool="linux"}': "1x60",
        'ghapp_runner_failures_total{pool="linux",reason="image_pull"}': "0 1 1x58",
        'ghapp_job_queued_to_started_seconds_bucket{pool="linux",le="60"}': "0+3x60",
        'ghapp_job_queued_to_started_seconds_bucket{pool="linux",le="+Inf"}': "0+3x60",
        'ghapp_scan_repositories_waiting{installation="42",pod="a"}': "0x60",
    }
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in healthy.items()],
                "alert_rule_test": [
                    {"eval_time": "55m", "alertname": name, "exp_alerts": []} for name in sorted(alerts())
                ],
            }
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
