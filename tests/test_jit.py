"""JIT pools end to end: signed webhooks in, generate-jitconfig on the fake GitHub, the emulator."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ghapp.clock import ManualClock

from .conftest import NAMESPACE, ORG_INSTALLATION, OTHER_ORG_INSTALLATION, USER_INSTALLATION, Ghapp

JIT_POOLS = """
pools:
  - name: jit
    mode: jit
    labels: [self-hosted, linux, x64]
    runner_group: Builders
  - name: plain
    mode: jit
    labels: [self-hosted, linux, arm64]
  - name: lost
    mode: jit
    labels: [self-hosted, linux, lost]
    runner_group: Nope
"""
JIT = ["self-hosted", "linux", "x64"]
PLAIN = ["self-hosted", "linux", "arm64"]
LOST = ["self-hosted", "linux", "lost"]


@pytest.fixture
def pools_file(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(JIT_POOLS)
    return path


def jitconfig(secret: dict[str, object]) -> str:
    data = secret["data"]
    assert isinstance(data, dict)
    assert set(data) == {"jitconfig"}
    return base64.b64decode(data["jitconfig"]).decode()


def bare_job(name: str, runner_id: int, **metadata: str) -> dict[str, object]:
    """A runner Job as a launch (of this replica or another) creates it, reduced to what matters here."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"ghapp/runner-id": str(runner_id)},
            **metadata,
        },
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}},
    }


def runner_env(job: dict[str, object]) -> dict[str, dict[str, object]]:
    (container,) = job["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    return {item["name"]: item for item in container["env"]}


async def test_jit_pool_end_to_end(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ghapp.github.add_runner_group(org="acme", group_id=7, name="builders")  # names compare case-insensitively
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=JIT)
    await ghapp.settle()

    name = f"ghapp-{job_id}"
    generated = ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/generate-jitconfig")
    assert [c.status for c in generated] == [201]
    assert not ghapp.github.calls_to("POST", r".*/registration-token")
    (runner,) = ghapp.github.runners("org:acme")
    assert runner["name"] == name
    assert runner["runner_group_id"] == 7
    assert [label["name"] for label in runner["labels"]] == JIT

    (job,) = ghapp.runner_jobs()
    (secret,) = ghapp.runner_secrets()
    config = jitconfig(secret)
    assert ghapp.github.runner_for_jitconfig(config) == runner  # the Secret holds this runner's config
    assert job["metadata"]["annotations"]["ghapp/runner-id"] == str(runner["id"])
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/home/runner/run.sh"]
    env = runner_env(job)
    assert env["ACTIONS_RUNNER_INPUT_JITCONFIG"]["valueFrom"] == {
        "secretKeyRef": {"name": name, "key": "jitconfig"}
    }
    assert "ACTIONS_RUNNER_INPUT_TOKEN" not in env
    # the config is in the Secret only: not in the Job, not in any log line
    assert config not in json.dumps(job)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert config not in logged

    # a redelivery registers nothing and writes nothing
    writes = len(ghapp.kube.writes())
    assert writes == 2
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "queued"))
    await ghapp.settle()
    assert len(ghapp.github.calls_to("POST", r".*/generate-jitconfig")) == 1
    assert len(ghapp.kube.writes()) == writes


async def test_repository_runners_join_the_default_group(ghapp: Ghapp) -> None:
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=JIT)
    await ghapp.settle()
    assert [c.status for c in ghapp.github.calls_to("POST", r"/repos/alice/tools/.*/generate-jitconfig")] == [
        201
    ]
    assert not ghapp.github.calls_to("GET", r".*/runner-groups")
    (runner,) = ghapp.github.runners("repo:alice/tools")
    assert runner["runner_group_id"] == 1
    assert len(ghapp.runner_jobs()) == 1


async def test_runner_groups_are_looked_up_once_per_org(ghapp: Ghapp) -> None:
    for group_id in range(2, 130):  # more than one page of groups
        ghapp.github.add_runner_group(org="acme", group_id=group_id, name=f"group-{group_id}")
    ghapp.github.add_runner_group(org="acme", group_id=500, name="Builders")
    ghapp.github.add_runner_group(org="globex", group_id=9, name="Builders")
    for _ in range(6):
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=JIT)
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=JIT)
    await ghapp.settle()

    acme = ghapp.github.calls_to("GET", r"/orgs/acme/actions/runner-groups")
    assert [c.query.get("page") for c in acme] == ["1", "2"]  # one paginated lookup for six jobs
    assert len(ghapp.github.calls_to("GET", r"/orgs/globex/actions/runner-groups")) == 1
    assert {r["runner_group_id"] for r in ghapp.github.runners("org:acme")} == {500}
    assert {r["runner_group_id"] for r in ghapp.github.runners("org:globex")} == {9}
    assert len(ghapp.runner_jobs()) == 7


async def test_unknown_runner_group_starts_nothing_and_says_so_once(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LOST)
    await ghapp.settle()

    assert ghapp.runner_jobs() == []
    assert ghapp.runner_secrets() == []
    assert not ghapp.github.calls_to("POST", r".*/generate-jitconfig")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'Nope'" in errors[0].getMessage()
    assert "acme" in errors[0].getMessage()
    assert "runner_group" in errors[0].getMessage()
    metrics = ghapp.services.metrics.registry
    assert metrics.get_sample_value("ghapp_jobs_skipped_total", {"reason": "unknown-runner-group"}) == 3
    # other pools keep working
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1


async def test_leftover_offline_runner_is_replaced_once_past_the_grace_not_renamed(
    ghapp: Ghapp, clock: ManualClock
) -> None:
    # An earlier attempt registered the runner, then died before creating the Job.
    old = ghapp.github.register_runner(
        scope="org:acme", name="ghapp-555", labels=PLAIN, status="offline", busy=False
    )
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN, job_id=555)
    await ghapp.settle()
    # seen for the first time just now, it may be another replica's, about to get its Job: left alone
    assert not ghapp.github.calls_to("DELETE", r".*")
    assert ghapp.runner_jobs() == []

    clock.advance(ghapp.services.settings.orphan_grace_seconds)
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(555, "queued"))
    await ghapp.settle()
    generated = ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/generate-jitconfig")
    assert [c.status for c in generated] == [409, 409, 201]
    lookups = ghapp.github.calls_to("GET", r"/orgs/acme/actions/runners")
    assert [lookup.query["name"] for lookup in lookups] == ["ghapp-555", "ghapp-555"]
    assert [c.path for c in ghapp.github.calls_to("DELETE", r".*")] == [
        f"/orgs/acme/actions/runners/{old['id']}"
    ]
    (runner,) = ghapp.github.runners("org:acme")
    assert runner["name"] == "ghapp-555"
    assert runner["id"] != old["id"]
    (job,) = ghapp.runner_jobs()
    assert job["metadata"]["annotations"]["ghapp/runner-id"] == str(runner["id"])
    (secret,) = ghapp.runner_secrets()
    assert ghapp.github.runner_for_jitconfig(jitconfig(secret)) == runner


async def test_a_runner_another_replica_just_registered_is_left_to_it(ghapp: Ghapp) -> None:
    # Replica A registered ghapp-559 and is about to create its Job when this replica's launch of the same
    # job meets the taken name: the runner is offline, idle and has no Job yet, yet must not be replaced.
    theirs = ghapp.github.register_runner(scope="org:acme", name="ghapp-559", labels=PLAIN, status="offline")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN, job_id=559)
    await ghapp.settle()
    assert not ghapp.github.calls_to("DELETE", r".*")
    assert ghapp.github.runners("org:acme") == [theirs]
    assert ghapp.runner_jobs() == []  # nothing here: A's Job is coming
    # A's Job appears; the reconciler's later attempt here finds it and leaves it
    ghapp.kube.put_object("jobs", bare_job("ghapp-559", theirs["id"]))
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(559, "queued"))
    await ghapp.settle()
    assert not ghapp.github.calls_to("DELETE", r".*")
    assert ghapp.github.runners("org:acme") == [theirs]


@pytest.mark.parametrize(("status", "busy"), [("online", True), ("online", False)])
async def test_live_runner_with_the_name_is_left_alone(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture, status: str, busy: bool
) -> None:
    caplog.set_level(logging.INFO)
    ghapp.github.register_runner(scope="org:acme", name="ghapp-556", labels=PLAIN, status=status, busy=busy)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN, job_id=556)
    await ghapp.settle()

    assert not ghapp.github.calls_to("DELETE", r".*")
    assert [r["name"] for r in ghapp.github.runners("org:acme")] == ["ghapp-556"]  # no second runner
    assert ghapp.runner_jobs() == []
    assert any("ghapp-556 exists in GitHub" in r.getMessage() for r in caplog.records)
    launched = ghapp.services.metrics.registry.get_sample_value(
        "ghapp_runners_launched_total", {"pool": "plain", "outcome": "failed"}
    )
    assert launched == 1


async def test_job_left_without_secret_is_replaced(ghapp: Ghapp, clock: ManualClock) -> None:
    # An earlier attempt registered runner ghapp-557 and created its Job, then died before the Secret.
    old = ghapp.github.register_runner(scope="org:acme", name="ghapp-557", labels=PLAIN, status="offline")
    an_hour_ago = datetime.fromtimestamp(clock.now() - 3600, UTC).isoformat()
    stale = ghapp.kube.put_object(
        "jobs",
        bare_job("ghapp-557", old["id"], creationTimestamp=an_hour_ago),  # past the grace: dead
    )
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN, job_id=557)
    await ghapp.settle()
    assert ghapp.runner_jobs() == []  # the dead attempt's Job went; its runner, seen just now, waits
    clock.advance(ghapp.services.settings.orphan_grace_seconds)
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(557, "queued"))
    await ghapp.settle()

    (runner,) = ghapp.github.runners("org:acme")
    assert runner["id"] != old["id"]
    (job,) = ghapp.runner_jobs()
    assert job["metadata"]["uid"] != stale["metadata"]["uid"]
    assert job["metadata"]["annotations"]["ghapp/runner-id"] == str(runner["id"])
    (secret,) = ghapp.runner_secrets()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert ghapp.github.runner_for_jitconfig(jitconfig(secret)) == runner


async def test_another_replicas_launch_of_the_same_job_is_left_to_win(ghapp: Ghapp) -> None:
    # Replica A registered ghapp-558 and created its Job just after this replica looked for the Job:
    # the first lookup here answers 404, the Job exists when the name turns out to be taken.
    theirs = ghapp.github.register_runner(scope="org:acme", name="ghapp-558", labels=PLAIN, status="offline")
    job = ghapp.kube.put_object("jobs", bare_job("ghapp-558", theirs["id"]))
    ghapp.kube.fail_next(1, status=404, verb="get", resource="jobs")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PLAIN, job_id=558)
    await ghapp.settle()

    assert not ghapp.github.calls_to("DELETE", r".*")  # replica A's runner is left alone
    assert [c.status for c in ghapp.github.calls_to("POST", r".*/generate-jitconfig")] == [409]
    assert ghapp.github.runners("org:acme") == [theirs]
    (still,) = ghapp.runner_jobs()
    assert still["metadata"]["uid"] == job["metadata"]["uid"]
    launched = ghapp.services.metrics.registry.get_sample_value(
        "ghapp_runners_launched_total", {"pool": "plain", "outcome": "exists"}
    )
    assert launched == 1
