#!/usr/bin/env python3
"""Cost of the timeline bookkeeping (issue #13): CPU per workflow job and memory for N recent jobs.

    python bench/timeline.py [--jobs 10000] [--rounds 3]

Feeds `ghapp.timeline.Timeline` and `ghapp.usage.Usage` what one workflow job brings in a deployment: its
``queued``, ``in_progress`` and ``completed`` webhooks (parsed payloads, as the event handlers have them),
the runner Job created, and three runner Job changes from the inventory (created, pod running, finished).
Payloads are parsed before the clock starts: parsing is the webhook path's cost, not the bookkeeping's.

CPU: ``time.process_time()`` over all jobs, divided by the number of jobs (best of `--rounds`).
Memory: ``tracemalloc`` — bytes still allocated once `--jobs` timelines are kept (with the capacity set to
`--jobs`, so nothing is dropped) and the events that fed them are gone, and the peak (events included);
plus the status page's cost: building ``/status.json``'s
recent-jobs part and the 24 h / 7 d usage windows over that many jobs.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ghapp.inventory import RunnerJob
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob
from ghapp.timeline import Timeline
from ghapp.usage import DAY, WEEK, Usage

POOLS = ("linux", "gpu", "arm")
ACCOUNTS = tuple(f"org{n}" for n in range(20))


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def payload(job_id: int, action: str, *, t0: float) -> dict[str, object]:
    account = ACCOUNTS[job_id % len(ACCOUNTS)]
    started = action != "queued"
    return {
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": job_id // 4,
            "run_attempt": 1,
            "name": f"build ({job_id % 7})",
            "workflow_name": "CI",
            "labels": ["self-hosted", "linux", "x64"],
            "status": action,
            "conclusion": "success" if action == "completed" else None,
            "created_at": iso(t0),
            "started_at": iso(t0 + 20),
            "completed_at": iso(t0 + 200) if action == "completed" else None,
            "runner_id": job_id if started else None,
            "runner_name": f"ghapp-{job_id}" if started else None,
        },
        "repository": {
            "id": job_id % 500,
            "full_name": f"{account}/repo{job_id % 25}",
            "private": True,
            "visibility": "private",
            "owner": {"login": account, "type": "Organization"},
        },
        "installation": {"id": 1000 + job_id % len(ACCOUNTS)},
    }


def runner_job(job_id: int, *, t0: float, **status: object) -> RunnerJob:
    account = ACCOUNTS[job_id % len(ACCOUNTS)]
    values: dict[str, object] = {
        "name": f"ghapp-{job_id}",
        "namespace": "runners",
        "uid": str(job_id),
        "pool": POOLS[job_id % len(POOLS)],
        "installation_id": 1000 + job_id % len(ACCOUNTS),
        "workflow_job_id": job_id,
        "scope": f"org:{account}",
        "repository": f"{account}/repo{job_id % 25}",
        "created_at": t0 + 3,
        "finished": False,
        "failed": False,
        "deleting": False,
        "started_at": t0 + 4,
        **status,
    }
    return RunnerJob(**values)  # type: ignore[arg-type]


class JobEvents(NamedTuple):
    job_id: int
    start: float
    queued: WorkflowJob
    in_progress: WorkflowJob
    completed: WorkflowJob
    created: RunnerJob
    running: RunnerJob
    done: RunnerJob


def events(jobs: int, t0: float) -> list[JobEvents]:
    """Everything one job brings, for `jobs` jobs, parsed beforehand."""
    out: list[JobEvents] = []
    for n in range(jobs):
        job_id = 10_000_000 + n
        start = t0 + n
        created = runner_job(job_id, t0=start)
        running = runner_job(job_id, t0=start, ready=True)
        done = runner_job(job_id, t0=start, ready=True, finished=True, finished_at=start + 210)
        out.append(
            JobEvents(
                job_id,
                start,
                WorkflowJob.from_payload(payload(job_id, "queued", t0=start)),
                WorkflowJob.from_payload(payload(job_id, "in_progress", t0=start)),
                WorkflowJob.from_payload(payload(job_id, "completed", t0=start)),
                created,
                running,
                done,
            )
        )
    return out


def feed(timeline: Timeline, usage: Usage, batch: list[JobEvents]) -> None:
    for job_id, start, queued, in_progress, completed, created, running, done in batch:
        timeline.webhook(queued, received_at=start + 1)
        timeline.planned(job_id, pool=created.pool)
        timeline.runner_job_created(job_id, pool=created.pool, name=created.name, at=start + 3)
        for before, after, at in ((None, created, 3), (created, running, 12), (running, done, 211)):
            timeline.runner_job_changed(before, after, now=start + at)
            usage.runner_job_changed(before, after, now=start + at)
        timeline.webhook(in_progress, received_at=start + 20)
        timeline.webhook(completed, received_at=start + 200)


def build(jobs: int, t0: float) -> tuple[Timeline, Usage]:
    metrics = Metrics()
    pools: dict[str, str] = {}
    timeline = Timeline(capacity=jobs, metrics=metrics, pool_of_runner=pools.get)
    usage = Usage(metrics=metrics, since=t0, by_repository=False)
    return timeline, usage


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    t0 = 1_800_000_000.0
    batch = events(args.jobs, t0)

    cpu = []
    for _ in range(args.rounds):
        timeline, usage = build(args.jobs, t0)
        gc.collect()
        begin = time.process_time()
        feed(timeline, usage, batch)
        cpu.append(time.process_time() - begin)
    per_job_us = min(cpu) / args.jobs * 1e6

    # memory: what the timelines and runner times keep alive once the events themselves are gone (the
    # parsed payloads' strings they refer to included)
    del batch
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    timeline, usage = build(args.jobs, t0)
    feed(timeline, usage, events(args.jobs, t0))
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(timeline) == args.jobs

    now = t0 + args.jobs + 300
    begin = time.process_time()
    recent = [entry.as_dict() for entry in timeline.recent()[-25:]]
    day, week = usage.window(DAY, now=now), usage.window(WEEK, now=now)
    status_ms = (time.process_time() - begin) * 1e3
    assert recent
    assert day.rows
    assert week.rows

    print(
        f"python {platform.python_version()} on {platform.machine()}, {args.jobs} jobs, best of {args.rounds}"
    )
    print(f"CPU per job (3 webhooks, runner Job created, 3 Job changes): {per_job_us:.1f} µs")
    print(
        f"memory kept for {args.jobs} timelines + runner times: {(kept - base) / 2**20:.1f} MiB "
        f"({(kept - base) / args.jobs:.0f} B per job); peak {(peak - base) / 2**20:.1f} MiB"
    )
    print(
        f"status page part (25 recent jobs, 24 h and 7 d windows over {args.jobs} runner times): "
        f"{status_ms:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
