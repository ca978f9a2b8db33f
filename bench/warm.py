#!/usr/bin/env python3
"""Warm pools benchmark (issue #15): queued → job started, warm vs cold, for 1 and 50 jobs.

    python bench/warm.py [--pod-start 2.0] [--assign 0.2] [--reconcile 0.5] [--json]

ghapp runs in this process (its services and HTTP server, as the tests start it) against the fake GitHub
(``tests/fakes/github.py``) and the Kubernetes emulator (``tests/fakes/kube.py``), on the real clock. Two
simulated actors stand in for what the fakes cannot do:

- **the kubelet and the runner**: a runner Job's runner registers (online, idle) `--pod-start` seconds after
  the Job was created (pod scheduled, image pulled, ``config.sh``: tens of seconds to minutes in real
  clusters; scaled down here so a run takes seconds);
- **GitHub's assignment**: a queued job goes to an idle matching runner `--assign` seconds after both exist;
  the ``in_progress`` webhook is then delivered to ghapp.

The leader's reconcile pass runs every `--reconcile` seconds (60 s by default in a deployment: only the
refill after a burst waits for it, never a job that finds a warm runner). A warm scenario first waits until
the buffer is idle, then queues the jobs at once (their ``queued`` webhooks delivered, so cold runners are
launched for them as well); "started" is when GitHub gives the job to a runner.
"""

# ruff: noqa: E402  (the repository root goes on sys.path before the tests' modules are imported)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ghapp.clock import SystemClock
from ghapp.config import load_settings
from tests.conftest import (
    APP_ID,
    NAMESPACE,
    ORG_INSTALLATION,
    WEBHOOK_SECRET,
    new_github,
    start_ghapp,
    write_pools,
)
from tests.fakes.kube import KubeEmulator
from tests.keys import PRIVATE_KEY_PEM

LABELS = ["self-hosted", "linux", "x64"]
SCOPE = "org:acme"


class World:
    """The simulated kubelet + runner, and GitHub's assignment of queued jobs to idle runners."""

    def __init__(self, github: Any, kube: KubeEmulator, *, pod_start: float, assign: float) -> None:
        self.github = github
        self.kube = kube
        self.pod_start = pod_start
        self.assign = assign
        self.job_seen: dict[str, float] = {}  # runner Job → when first seen
        self.online_at: dict[str, float] = {}  # runner → when it came online (idle)
        self.queued_at: dict[int, float] = {}
        self.started_at: dict[int, float] = {}

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            registered = {r["name"] for r in self.github.runners(SCOPE)}
            for job in self.kube.objects("jobs", NAMESPACE):
                name = job["metadata"]["name"]
                if job["metadata"].get("deletionTimestamp"):
                    continue
                seen = self.job_seen.setdefault(name, now)
                if name not in registered and name not in self.online_at and now - seen >= self.pod_start:
                    self.github.register_runner(scope=SCOPE, name=name, labels=LABELS)
                    self.online_at[name] = now
            idle = sorted(
                (self.online_at.get(r["name"], now), r["name"])
                for r in self.github.runners(SCOPE)
                if r["status"] == "online" and not r["busy"]
            )
            waiting = sorted(
                (at, job_id) for job_id, at in self.queued_at.items() if job_id not in self.started_at
            )
            for (online, runner), (queued, job_id) in zip(idle, waiting, strict=False):
                if now - max(online, queued) >= self.assign:
                    self.github.start_job(job_id, runner_name=runner)
                    self.started_at[job_id] = now
                    await self.github.deliver(
                        "workflow_job", self.github.workflow_job_payload(job_id, "in_progress")
                    )
            await asyncio.sleep(0.02)

    def idle(self) -> int:
        return sum(1 for r in self.github.runners(SCOPE) if r["status"] == "online" and not r["busy"])


async def scenario(
    *, jobs: int, min_idle: int, pod_start: float, assign: float, reconcile: float
) -> dict[str, Any]:
    clock = SystemClock()
    github = new_github(clock=clock)  # type: ignore[arg-type]  # it only calls clock.now()
    await github.start()
    kube = KubeEmulator()
    await kube.start()
    folder = Path(tempfile.mkdtemp(prefix="ghapp-warm-bench-"))
    pools = write_pools(
        folder / "pools.yaml", max_runners=200, warm=[{"organization": "acme", "min_idle": min_idle}]
    )
    settings = load_settings(
        {
            "GHAPP_APP_ID": str(APP_ID),
            "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
            "GHAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GHAPP_GITHUB_API_URL": github.api_url,
            "GHAPP_NAMESPACE": NAMESPACE,
            "GHAPP_POOLS_FILE": str(pools),
            "GHAPP_ALLOWED_ACCOUNTS": "acme",
            "GHAPP_LOG_LEVEL": "ERROR",
            "GHAPP_IDLE_GRACE_SECONDS": "3600",
        }
    )
    ghapp = await start_ghapp(settings, github, kube, clock=clock)
    world = World(github, kube, pod_start=pod_start, assign=assign)
    tasks = [asyncio.create_task(world.run())]

    async def reconciling() -> None:
        while True:
            await ghapp.services.reconciler.reconcile_once()
            await asyncio.sleep(reconcile)

    tasks.append(asyncio.create_task(reconciling()))
    try:
        deadline = time.monotonic() + 60
        while world.idle() < min_idle:  # the buffer fills first
            if time.monotonic() > deadline:
                raise TimeoutError("the warm buffer did not fill")
            await asyncio.sleep(0.02)
        queued = []
        for _ in range(jobs):
            job = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LABELS)
            world.queued_at[int(job["id"])] = time.monotonic()
            queued.append(int(job["id"]))
        await asyncio.gather(
            *(github.deliver("workflow_job", github.workflow_job_payload(j, "queued")) for j in queued)
        )
        deadline = time.monotonic() + 120
        while len(world.started_at) < jobs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(world.started_at)} of {jobs} jobs started")
            await asyncio.sleep(0.02)
        waits = sorted(world.started_at[j] - world.queued_at[j] for j in queued)
        # the buffer refills after the burst (at the next reconcile passes)
        refill_from = time.monotonic()
        refilled = None
        while time.monotonic() - refill_from < pod_start + 4 * reconcile + 5:
            if world.idle() >= min_idle:
                refilled = time.monotonic() - refill_from
                break
            await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ghapp.stop()
        await ghapp.services.close()
        await kube.close()
        await github.close()
    return {
        "jobs": jobs,
        "min_idle": min_idle,
        "p50": statistics.median(waits),
        "max": waits[-1],
        "warm_hits": sum(1 for w in waits if w < pod_start),
        "refilled_after": refilled,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pod-start", type=float, default=2.0, help="simulated Job → runner online (s)")
    parser.add_argument("--assign", type=float, default=0.2, help="simulated idle runner → job assigned (s)")
    parser.add_argument("--reconcile", type=float, default=0.5, help="reconcile pass interval (s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = []
    for jobs, min_idle in ((1, 0), (1, 1), (50, 0), (50, 10), (50, 50)):
        rows.append(
            await scenario(
                jobs=jobs,
                min_idle=min_idle,
                pod_start=args.pod_start,
                assign=args.assign,
                reconcile=args.reconcile,
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"simulated pod start {args.pod_start} s, assignment {args.assign} s, reconcile {args.reconcile} s")
    print("| jobs | min_idle | queued → started p50 (s) | max (s) | on a warm runner | refilled after (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        refill = (
            "—"
            if row["min_idle"] == 0
            else f"{row['refilled_after']:.2f}"
            if row["refilled_after"] is not None
            else "no"
        )
        figures = f"{row['p50']:.2f} | {row['max']:.2f} | {row['warm_hits']} | {refill}"
        print(f"| {row['jobs']} | {row['min_idle']} | {figures} |")


if __name__ == "__main__":
    asyncio.run(main())
