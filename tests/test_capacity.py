"""Capacity per pool and overall, fairness across installations, restart at capacity, and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from ghapp.clock import ManualClock
from ghapp.config import Settings, load_settings
from ghapp.limiter import FairQueue

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    OTHER_ORG_INSTALLATION,
    USER_INSTALLATION,
    Ghapp,
    start_ghapp,
    wait_for,
    write_pools,
)
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator

LINUX = ["self-hosted", "linux", "x64"]


def active_jobs(ghapp: Ghapp) -> list[str]:
    return [
        job["metadata"]["name"]
        for job in ghapp.runner_jobs()
        if not (job.get("status") or {}).get("succeeded") and not (job.get("status") or {}).get("failed")
    ]


@pytest.fixture
def small_settings(environ: dict[str, str], tmp_path: Path) -> Settings:
    return load_settings(
        {**environ, "GHAPP_POOLS_FILE": str(write_pools(tmp_path / "p.yaml", max_runners=5))}
    )


@pytest.fixture
async def small(
    small_settings: Settings, github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> AsyncIterator[Ghapp]:
    running = await start_ghapp(small_settings, github, kube, clock=clock)
    yield running
    await running.stop()


async def finish_one(ghapp: Ghapp, name: str) -> None:
    """The runner ran its job: the emulator marks the Job complete; wait until ghapp has seen it."""
    ghapp.kube.finish_job(NAMESPACE, name)
    await wait_for(lambda: not ghapp.services.inventory.jobs[name].active, what=f"{name} seen finished")
    await ghapp.settle()


def test_fair_queue_round_robin_and_weights() -> None:
    queue: FairQueue[str, str] = FairQueue(weight=lambda key: 2 if key == "b" else 1)
    for i in range(3):
        queue.push("a", f"a{i}")
    queue.push("b", "b0")
    queue.push("b", "b1")
    queue.push("b", "b2")
    queue.push("c", "c0")
    order = [queue.pop() for _ in range(7)]
    assert order == ["a0", "b0", "b1", "c0", "a1", "b2", "a2"]
    assert queue.pop() is None
    queue.push("a", "x")
    queue.push("a", "y")
    assert queue.remove(lambda item: item == "x") == 1
    assert len(queue) == 1


async def test_pool_limit_holds_and_every_job_runs(small: Ghapp) -> None:
    job_ids = [
        await small.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(50)
    ]
    await small.settle()
    assert len(active_jobs(small)) == 5
    assert small.metric("ghapp_queue_length", pool="linux") == 45
    most = 5
    while len(small.runner_jobs()) < 50:
        await finish_one(small, sorted(active_jobs(small))[0])
        most = max(most, len(active_jobs(small)))
        assert len(active_jobs(small)) <= 5
    assert most == 5
    assert {job["metadata"]["name"] for job in small.runner_jobs()} == {f"ghapp-{i}" for i in job_ids}
    assert small.metric("ghapp_queue_length", pool="linux") == 0
    # each launch was exactly one Job and one Secret
    creates = [w for w in small.kube.writes() if w.verb == "create" and w.resource in ("jobs", "secrets")]
    assert len(creates) == 100


async def test_one_installation_cannot_starve_another(small: Ghapp) -> None:
    for _ in range(100):
        await small.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await small.settle()
    lonely = await small.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await small.settle()
    assert f"ghapp-{lonely}" not in active_jobs(small)  # the pool is full: it waits
    freed = 0
    while f"ghapp-{lonely}" not in active_jobs(small) and freed < 5:
        await finish_one(small, sorted(active_jobs(small))[0])
        freed += 1
    assert f"ghapp-{lonely}" in active_jobs(small)
    assert freed <= 2  # served within the next two free slots, not after 95 others


async def test_global_limit_across_pools(ghapp_with: Callable[..., Awaitable[Ghapp]]) -> None:
    ghapp = await ghapp_with(GHAPP_MAX_RUNNERS="3")
    for _ in range(4):
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=[*LINUX, "gpu"])
    await ghapp.settle()
    assert len(active_jobs(ghapp)) == 3


async def test_cancelled_waiting_job_leaves_the_queue(small: Ghapp) -> None:
    ids = [
        await small.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(7)
    ]
    await small.settle()
    waiting = ids[-1]
    small.github.cancel_job(waiting)
    await small.github.deliver("workflow_job", small.github.workflow_job_payload(waiting, "completed"))
    await small.settle()
    assert small.metric("ghapp_queue_length", pool="linux") == 1
    for name in sorted(active_jobs(small))[:2]:
        await finish_one(small, name)
    assert f"ghapp-{waiting}" not in {job["metadata"]["name"] for job in small.runner_jobs()}


async def test_restart_at_capacity_recounts_from_the_cluster(
    small_settings: Settings, github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> None:
    first = await start_ghapp(small_settings, github, kube, clock=clock)
    for _ in range(12):
        await first.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await first.settle()
    assert len(active_jobs(first)) == 5
    await first.stop()  # the 7 waiting jobs were only in memory: they are lost with the process

    second = await start_ghapp(small_settings, github, kube, clock=clock)
    try:
        assert len(second.services.inventory.active()) == 5  # rebuilt from a list before serving
        report = await second.services.reconciler.reconcile_once()  # finds the 7 still queued in GitHub
        await second.settle()
        assert report.queued_seen == 12
        assert len(active_jobs(second)) == 5  # does not exceed the limit
        assert second.metric("ghapp_queue_length", pool="linux") == 7
        await finish_one(second, sorted(active_jobs(second))[0])
        await finish_one(second, sorted(active_jobs(second))[0])
        assert len(active_jobs(second)) == 5  # and does not under-fill it
        assert second.metric("ghapp_queue_length", pool="linux") == 5
    finally:
        await second.stop()


async def test_metrics_move_in_a_flow(ghapp: Ghapp) -> None:
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=["windows"])
    await ghapp.github.deliver("ping", {"zen": "Design for failure."})
    await ghapp.settle()
    async with aiohttp.ClientSession() as session:
        async with session.get(ghapp.admin.make_url("/metrics")) as response:
            assert response.status == 200
            text = await response.text()
        async with session.get(ghapp.server.make_url("/metrics")) as response:
            assert response.status == 404  # not on the public (webhook) listener
    for name in (
        "ghapp_webhook_deliveries_total",
        "ghapp_runners_launched_total",
        "ghapp_launch_seconds_bucket",
        "ghapp_queue_length",
        "ghapp_runner_jobs",
        "ghapp_github_requests_total",
        "ghapp_github_rate_limit_remaining",
        "ghapp_kubernetes_requests_total",
        "ghapp_jobs_skipped_total",
    ):
        assert name in text, name
    assert (
        ghapp.metric(
            "ghapp_webhook_deliveries_total", event="workflow_job", action="queued", outcome="accepted"
        )
        == 2
    )
    assert ghapp.metric("ghapp_webhook_deliveries_total", event="ping", action="", outcome="pong") == 1
    assert ghapp.metric("ghapp_runners_launched_total", pool="linux", outcome="created") == 1
    assert ghapp.metric("ghapp_launch_seconds_count", pool="linux") == 1
    assert ghapp.metric("ghapp_runner_jobs", pool="linux", state="active") == 1
    assert ghapp.metric("ghapp_jobs_skipped_total", reason="no-matching-pool") == 1
    assert (
        ghapp.metric(
            "ghapp_github_requests_total",
            endpoint="/orgs/{org}/actions/runners/registration-token",
            status="201",
        )
        == 1
    )
    assert 0 < ghapp.metric("ghapp_github_rate_limit_remaining", installation=str(ORG_INSTALLATION)) < 5000
    assert ghapp.metric("ghapp_kubernetes_requests_total", verb="create", resource="jobs", status="201") == 1
    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []
    assert ghapp.metric("ghapp_reconcile_passes_total", outcome="ok") == 1
    assert "token" not in text.lower().replace("registration-token", "").replace("access_tokens", "")
