"""Chaos: lost webhooks, failing APIs and restarts, and still exactly one runner per queued job."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from ghapp.clock import ManualClock
from ghapp.config import load_settings

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    OTHER_ORG_INSTALLATION,
    USER_INSTALLATION,
    Ghapp,
    start_ghapp,
    write_pools,
)
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator

JOBS = 500
REPOSITORIES = [
    (ORG_INSTALLATION, "acme/webapp"),
    (ORG_INSTALLATION, "acme/api"),
    (USER_INSTALLATION, "alice/tools"),
    (OTHER_ORG_INSTALLATION, "globex/site"),
]
LINUX = ["self-hosted", "linux", "x64"]


async def test_chaos_converges_to_one_runner_per_queued_job(
    environ: dict[str, str], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock, tmp_path: Path
) -> None:
    rng = random.Random(7)
    pools = write_pools(tmp_path / "pools.yaml", max_runners=1000)
    settings = load_settings({**environ, "GHAPP_POOLS_FILE": str(pools)})
    github.error_rate = 0.10
    github.secondary_limit_rate = 0.03
    kube.error_rate = 0.10

    ghapp: Ghapp = await start_ghapp(settings, github, kube, clock=clock)
    restarts = 0
    queued: list[int] = []
    for i in range(JOBS):
        if i in (JOBS // 3, 2 * JOBS // 3):  # stop and start again in the middle, webhooks keep coming
            await ghapp.stop()
            for _ in range(10):
                installation, repository = rng.choice(REPOSITORIES)
                job = github.queue_job(installation_id=installation, repository=repository, labels=LINUX)
                queued.append(job["id"])
                refused = await github.deliver(
                    "workflow_job", github.workflow_job_payload(job["id"], "queued")
                )
                assert not refused.ok  # nobody listening
            ghapp = await start_ghapp(settings, github, kube, clock=clock)
            restarts += 1
        installation, repository = rng.choice(REPOSITORIES)
        job = github.queue_job(installation_id=installation, repository=repository, labels=LINUX)
        queued.append(job["id"])
        await github.deliver(
            "workflow_job", github.workflow_job_payload(job["id"], "queued"), fail=rng.random() < 0.2
        )
    await ghapp.settle()

    failed_deliveries = sum(1 for d in github.deliveries if not d.ok)
    started = time.monotonic()
    passes = 0
    expected = {f"ghapp-{job_id}" for job_id in queued}
    while passes < 10:
        await ghapp.services.reconciler.reconcile_once()
        await github.drain()
        await ghapp.settle()
        passes += 1
        jobs = {job["metadata"]["name"] for job in kube.objects("jobs", NAMESPACE)}
        secrets = {secret["metadata"]["name"] for secret in kube.objects("secrets", NAMESPACE)}
        if jobs == expected and secrets == expected:
            break
    converge_seconds = time.monotonic() - started
    await ghapp.stop()

    jobs = kube.objects("jobs", NAMESPACE)
    secrets = kube.objects("secrets", NAMESPACE)
    per_workflow_job = Counter(job["metadata"]["labels"]["ghapp/workflow-job-id"] for job in jobs)
    duplicates = sum(count - 1 for count in per_workflow_job.values())
    job_uids = {job["metadata"]["uid"] for job in jobs}
    print(
        f"\nchaos: {len(queued)} queued jobs; {failed_deliveries} failed webhook deliveries; "
        f"{sum(1 for c in github.calls if c.status >= 500)} GitHub 5xx and "
        f"{sum(1 for c in github.calls if c.status in (403, 429))} secondary-limit answers "
        f"of {len(github.calls)} calls; "
        f"{sum(1 for r in kube.requests if r.status >= 500)} Kubernetes 5xx of {len(kube.requests)} "
        f"requests; {restarts} restarts; "
        f"converged after {passes} reconcile passes in {converge_seconds:.1f}s; "
        f"{len(jobs)} runner Jobs, {duplicates} duplicates"
    )
    assert restarts == 2
    assert failed_deliveries > 0.15 * JOBS
    assert {job["metadata"]["name"] for job in jobs} == expected  # every queued job has a runner Job
    assert duplicates == 0
    assert {secret["metadata"]["name"] for secret in secrets} == expected
    for secret in secrets:  # no Secret without its Job
        assert {ref["uid"] for ref in secret["metadata"]["ownerReferences"]} <= job_uids
