"""Two replicas against one cluster: both take webhooks, one leads the reconciler, the other takes over."""

from __future__ import annotations

import asyncio
import json

from ghapp.clock import SystemClock
from ghapp.config import Settings

from .conftest import ORG_INSTALLATION, USER_INSTALLATION, Ghapp, start_ghapp, wait_for
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .test_service import signed_headers

LINUX = ["self-hosted", "linux", "x64"]


async def replica(settings: Settings, github: FakeGitHub, kube: KubeEmulator, name: str) -> Ghapp:
    replica_settings = settings.model_copy(
        update={"identity": name, "lease_duration_seconds": 1.0, "reconcile_interval_seconds": 1.0}
    )
    return await start_ghapp(replica_settings, github, kube, reconcile=True, clock=SystemClock())


async def test_one_leader_both_serve_no_duplicates_and_takeover(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator
) -> None:
    a = await replica(settings, github, kube, "replica-a")
    b = await replica(settings, github, kube, "replica-b")
    both_led = False

    async def watch_leaders() -> None:
        nonlocal both_led
        while True:
            both_led = both_led or (a.services.elector.is_leader and b.services.elector.is_leader)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_leaders())
    try:
        await wait_for(lambda: a.services.elector.is_leader or b.services.elector.is_leader, what="a leader")
        leader, follower = (a, b) if a.services.elector.is_leader else (b, a)

        # both replicas take webhooks; the same job sent to both still gets one runner
        jobs = [
            github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
            for _ in range(10)
        ]
        for job in jobs:
            body = json.dumps(github.workflow_job_payload(job["id"], "queued")).encode()
            for target in (a, b):
                response = await target.post(body, signed_headers(body))
                assert response.status == 202
        await asyncio.gather(a.settle(), b.settle())
        assert sorted(j["metadata"]["name"] for j in a.runner_jobs()) == sorted(
            f"ghapp-{j['id']}" for j in jobs
        )
        assert len(a.runner_secrets()) == 10

        # the leader goes away without a word (a crash): the other takes over once the lease runs out
        await leader.services.background.drain(grace=0)
        await wait_for(lambda: follower.services.elector.is_leader, within=5, what="takeover after expiry")
        assert follower.metric("ghapp_leader") == 1

        # and the new leader reconciles: a job whose webhook was lost gets a runner
        lost = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await wait_for(
            lambda: any(j["metadata"]["name"] == f"ghapp-{lost['id']}" for j in a.runner_jobs()),
            within=10,
            what="the new leader's reconcile pass",
        )
        assert not both_led
    finally:
        watcher.cancel()
        await a.stop()
        await b.stop()


async def test_graceful_stop_hands_the_lease_over_at_once(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator
) -> None:
    long_lease = settings.model_copy(update={"lease_duration_seconds": 30.0})
    a = await replica(long_lease, github, kube, "replica-a")
    await wait_for(lambda: a.services.elector.is_leader, what="a leads")
    b = await start_ghapp(
        long_lease.model_copy(update={"identity": "replica-b", "lease_duration_seconds": 3.0}),
        github,
        kube,
        reconcile=True,
        clock=SystemClock(),
    )
    try:
        await github.deliver("ping", {"zen": "x"})  # unrelated traffic is fine
        await a.stop()  # SIGTERM path: releases the lease
        # b retries every second (3 s lease / 3): it need not wait out a's 30 s lease
        await wait_for(lambda: b.services.elector.is_leader, within=5, what="b leads after a's release")
        await b.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
        await b.settle()
        assert len(b.runner_jobs()) == 1
    finally:
        await a.stop()
        await b.stop()
