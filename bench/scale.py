#!/usr/bin/env python3
"""Scale benchmark (issue #14): what ghapp's steady state costs as the organisation grows.

    python bench/scale.py                       # the whole matrix (see MATRIX), one run each
    python bench/scale.py --repos 1000 --installations 1 --runners 1000 --runs 3

Per configuration the fake GitHub (``tests/fakes/github.py``) holds R repositories over I installations
(organisations), 10 % of them active, and J runner Jobs spread over the active repositories: each Job has
its Secret in the Kubernetes emulator (``tests/fakes/kube.py``), its runner registered, online and busy, and
its workflow job in progress (one job per run: the most runs, and jobs listings, per runner). Nothing
changes: this is the steady state whose cost should not grow with the organisation.

ghapp runs as deployed, ``python -m ghapp serve`` in a subprocess (as in ``bench/burst.py``, whose helpers
this reuses), twice per configuration:

1. ``GHAPP_RECONCILE_INTERVAL_SECONDS=3600`` (one pass at start, then none): the watch phase — the bench
   marks K Jobs failed in the emulator (K MODIFIED watch events) and waits until ghapp's
   ``ghapp_runner_jobs{state="failed"}`` shows all K; CPU per event is ghapp's CPU over that span less its
   idle rate. Then webhooks at ``--rate`` deliveries/s for ``--webhook-seconds``: delivery → Job latency.
   The jobs those webhooks queued are then completed and their Jobs removed (the steady organisation again).
2. ``GHAPP_RECONCILE_INTERVAL_SECONDS=1``: passes back to back. The first lists everything and fills the
   conditional-request cache (its counted requests: the restart cost); passes go on until one leaves no
   repository waiting (``ghapp_scan_repositories_waiting``) and at least ``--warmup`` have run; then
   ``--passes`` passes are measured: GitHub requests
   per pass, counted against a rate limit (any status but 304) and 304s, per installation; pass time
   (``ghapp_reconcile_pass_seconds``); ghapp CPU seconds per pass (/proc/PID/stat); RSS.

Each phase starts in a fresh rate-limit window of ``--github-limit`` requests per installation.
Per hour is **extrapolated** from the measured passes: the default interval is 60 s, so an hour of steady
state is 60 passes, plus one installation token per installation per hour (tokens live an hour). Nothing is
asserted on wall time; the machine is shared, so CPU seconds (resource usage) are reported next to it.
"""

# ruff: noqa: E402  (the repository root goes on sys.path before the tests' fakes are imported)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import aiohttp
from burst import (
    APP_ID,
    LABELS,
    NAMESPACE,
    PUBLIC_KEY_PEM,
    WEBHOOK_SECRET,
    FakeGitHub,
    TimedKube,
    World,
    free_port,
    machine,
    machine_busy_seconds,
    percentile,
    proc_cpu_seconds,
    proc_memory_mb,
    sign,
    start_ghapp,
    stop_process,
    write_files,
)

from ghapp import manifests

MATRIX = [
    # (repositories, installations, runner Jobs)
    (100, 1, 1000),
    (1000, 1, 1000),
    (10_000, 1, 1000),
    (10_000, 1, 5000),
    (1000, 50, 1000),
    (10_000, 50, 5000),
]
PASSES_PER_HOUR = 60  # GHAPP_RECONCILE_INTERVAL_SECONDS' default
BUDGET = 5000  # an installation's requests per hour (GitHub's minimum)
POOL = "bench"

# issue #14's targets
STEADY_SHARE_TARGET = 0.10  # of a 5,000/h budget, 1,000 active repositories, one installation
RSS_TARGET_MB = 250.0
EVENT_CPU_TARGET_MS = 1.0
WEBHOOK_P99_TARGET_S = 1.0


@dataclass(frozen=True)
class Setup:
    repos: int
    installations: int
    runners: int

    @property
    def name(self) -> str:
        return f"{self.repos} repos · {self.installations} inst · {self.runners} Jobs"


def accounts(installations: int) -> list[tuple[int, str]]:
    return [(7000 + i, f"org-{i}") for i in range(installations)]


def populate(setup: Setup, github: FakeGitHub, kube: TimedKube) -> list[str]:
    """The organisation: repositories, the active tenth, and a busy runner and its Job per in-progress job.

    Returns the names of the runner Jobs.
    """
    accts = accounts(setup.installations)
    repos = [(accts[r % len(accts)], f"repo-{r:05d}") for r in range(setup.repos)]
    for installation_id, login in accts:
        github.add_installation(
            installation_id=installation_id,
            account=login,
            account_type="Organization",
            repositories=[name for (iid, _), name in repos if iid == installation_id],
        )
    active = repos[:: max(1, round(1 / 0.1))]
    names = []
    for n in range(setup.runners):
        (installation_id, login), repo = active[n % len(active)]
        repository = f"{login}/{repo}"
        job = github.queue_job(installation_id=installation_id, repository=repository, labels=LABELS)
        name = f"ghapp-{job['id']}"
        github.register_runner(scope=f"org:{login}", name=name, labels=LABELS)
        github.start_job(int(job["id"]), runner_name=name)
        stored = kube.put_object("jobs", runner_job(name, job, installation_id, repository, login))
        kube.put_object("secrets", runner_secret(name, stored["metadata"]["uid"]))
        names.append(name)
    return names


def runner_job(name: str, job: dict[str, Any], installation_id: int, repository: str, login: str) -> Any:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                manifests.JOB_ID_LABEL: str(job["id"]),
                manifests.POOL_LABEL: POOL,
                manifests.INSTALLATION_LABEL: str(installation_id),
                manifests.SCOPE_KIND_LABEL: "org",
                manifests.MANAGED_BY: manifests.MANAGER,
                manifests.COMPONENT: "runner",
            },
            "annotations": {
                manifests.REPOSITORY_ANNOTATION: repository,
                manifests.RUN_ID_ANNOTATION: str(job["run_id"]),
                manifests.SCOPE_ANNOTATION: f"org:{login}",
                manifests.RUNNER_NAME_ANNOTATION: name,
            },
        },
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "runner", "image": "runner"}]}
            }
        },
        "status": {"active": 1},
    }


def runner_secret(name: str, job_uid: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {manifests.MANAGED_BY: manifests.MANAGER, manifests.COMPONENT: "runner"},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid, "controller": True}
            ],
        },
        "data": {},
    }


async def metrics(session: aiohttp.ClientSession, port: str) -> dict[str, float]:
    """ghapp's /metrics as {'name{labels}': value}."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


async def wait_metric(
    session: aiohttp.ClientSession, port: str, key: str, at_least: float, *, deadline_s: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        found = await metrics(session, port)
        if found.get(key, 0.0) >= at_least:
            return found
        if loop.time() > deadline:
            raise SystemExit(f"{key} did not reach {at_least} within {deadline_s}s (is {found.get(key)})")
        await asyncio.sleep(0.05)


PASSES_OK = 'ghapp_reconcile_passes_total{outcome="ok"}'
PASSES_FAILED = 'ghapp_reconcile_passes_total{outcome="failed"}'


def passes(found: dict[str, float]) -> float:
    return found.get(PASSES_OK, 0.0) + found.get(PASSES_FAILED, 0.0)


async def world_for(setup: Setup, args: argparse.Namespace) -> tuple[World, list[str]]:
    github = FakeGitHub(app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET)
    await github.start()
    kube = TimedKube()
    await kube.start()
    names = populate(setup, github, kube)
    burst_args = argparse.Namespace(
        max_runners=None, jobs=setup.runners * 2, log_level="WARNING", start_timeout=args.start_timeout
    )
    world = World(
        args=burst_args, tmp=Path(tempfile.mkdtemp(prefix="ghapp-scale-")), github=github, kube=kube
    )
    write_files(world)
    world.environ["GHAPP_ADMIN_PORT"] = str(free_port())
    if args.scan_concurrency is not None:
        world.environ["GHAPP_SCAN_CONCURRENCY"] = str(args.scan_concurrency)
    if args.cache_entries is not None:
        world.environ["GHAPP_GITHUB_CACHE_ENTRIES"] = str(args.cache_entries)
    return world, names


def fresh_rate_windows(world: World, setup: Setup, args: argparse.Namespace) -> None:
    """Each phase starts in a fresh rate-limit window of `args.github_limit` requests per installation."""
    for installation_id, _ in accounts(setup.installations):
        world.github.set_rate_limit(
            installation_id=installation_id,
            remaining=args.github_limit,
            reset_in=3600,
            limit=args.github_limit,
        )


async def watch_and_webhooks(
    world: World, setup: Setup, names: list[str], args: argparse.Namespace, made: list[int]
) -> dict[str, Any]:
    """Phase 1: watch events, then webhooks at a steady rate, with no reconcile pass in the way; the jobs
    the webhooks queued go into `made`."""
    world.environ["GHAPP_RECONCILE_INTERVAL_SECONDS"] = "3600"
    fresh_rate_windows(world, setup, args)
    process = await start_ghapp(world, world.tmp / "ghapp-watch.log")
    port = world.environ["GHAPP_ADMIN_PORT"]
    result: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await wait_metric(session, port, PASSES_OK, 1, deadline_s=args.pass_timeout)
            before = proc_cpu_seconds(process.pid)
            await asyncio.sleep(2.0)
            idle_rate = (proc_cpu_seconds(process.pid) - before) / 2.0
            marked = names[: args.watch_events]
            key = f'ghapp_runner_jobs{{pool="{POOL}",state="failed"}}'
            start, cpu0 = time.monotonic(), proc_cpu_seconds(process.pid)
            for name in marked:
                world.kube.set_job_status(NAMESPACE, name, {"failed": 1})
            await wait_metric(session, port, key, len(marked), deadline_s=120)
            span, cpu = time.monotonic() - start, proc_cpu_seconds(process.pid) - cpu0
            result["watch"] = {
                "events": len(marked),
                "seconds": span,
                "events_per_s": len(marked) / span,
                "cpu_ms_per_event": max(0.0, cpu - idle_rate * span) / len(marked) * 1000,
                "idle_cpu_per_s": idle_rate,
            }
            result["webhooks"] = await send_webhooks(world, session, args, made)
        result["memory_mb"] = proc_memory_mb(process.pid)
    finally:
        await stop_process(process)
    return result


async def send_webhooks(
    world: World, session: aiohttp.ClientSession, args: argparse.Namespace, made: list[int]
) -> Any:
    """Queued jobs' webhooks at `args.rate` per second; delivery → runner Job seconds. The jobs queued go
    into `made`."""
    installation_id, login = accounts(1)[0]
    sent: dict[str, float] = {}
    url = f"http://127.0.0.1:{world.environ['GHAPP_PORT']}/webhook"
    count = int(args.rate * args.webhook_seconds)
    bodies = []
    for _ in range(count):
        job = world.github.queue_job(
            installation_id=installation_id, repository=f"{login}/repo-00000", labels=LABELS
        )
        body = json.dumps(world.github.workflow_job_payload(job["id"], "queued")).encode()
        bodies.append((f"ghapp-{job['id']}", body))
        made.append(int(job["id"]))

    async def post(name: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body),
        }
        sent[name] = time.monotonic()
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()

    tasks = []
    start = time.monotonic()
    for n, (name, body) in enumerate(bodies):
        await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
        tasks.append(asyncio.create_task(post(name, body)))
    await asyncio.gather(*tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    created = world.kube.created["jobs"]
    while True:  # poll with a deadline, as bench/burst.py does
        if all(name in created for name in sent) or loop.time() > deadline:
            break
        await asyncio.sleep(0.01)
    latencies = [created[name] - at for name, at in sent.items() if name in created]
    return {
        "deliveries": count,
        "rate": args.rate,
        "jobs_made": len(latencies),
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
    }


async def steady(world: World, setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 2: reconcile passes back to back over an organisation where nothing changes."""
    world.environ["GHAPP_RECONCILE_INTERVAL_SECONDS"] = "1"
    fresh_rate_windows(world, setup, args)
    world.github.latency = args.github_latency
    start_call = len(world.github.calls)
    waiting_keys = [
        f'ghapp_scan_repositories_waiting{{installation="{iid}"}}' for iid, _ in accounts(setup.installations)
    ]
    process = await start_ghapp(world, world.tmp / "ghapp-steady.log")
    port = world.environ["GHAPP_ADMIN_PORT"]
    try:
        async with aiohttp.ClientSession() as session:
            found = await wait_metric(session, port, PASSES_OK, 1, deadline_s=args.pass_timeout)
            cold = world.github.calls[start_call:]
            cold_seconds = found.get("ghapp_reconcile_pass_seconds_sum", 0.0)
            warm_passes = 1
            # warm: until a pass leaves no repository for the next (the cache holds every listing)
            while warm_passes < args.warmup or any(found.get(key, 0.0) > 0 for key in waiting_keys):
                found = await wait_metric(
                    session, port, PASSES_OK, found[PASSES_OK] + 1, deadline_s=args.pass_timeout
                )
                warm_passes += 1
            warm = world.github.calls[start_call:]
            first_call = len(world.github.calls)
            cpu0, busy0 = proc_cpu_seconds(process.pid), machine_busy_seconds()
            seconds0 = found.get("ghapp_reconcile_pass_seconds_sum", 0.0)
            count0 = passes(found)
            found = await wait_metric(
                session, port, PASSES_OK, count0 + args.passes, deadline_s=args.pass_timeout * args.passes
            )
            cpu, busy = proc_cpu_seconds(process.pid) - cpu0, machine_busy_seconds() - busy0
            measured = passes(found) - count0
            pass_seconds = (found.get("ghapp_reconcile_pass_seconds_sum", 0.0) - seconds0) / measured
            failed = found.get(PASSES_FAILED, 0.0)
            calls = world.github.calls[first_call:]
            memory = proc_memory_mb(process.pid)
    finally:
        await stop_process(process)
    counted: Counter[str] = Counter()
    not_modified: Counter[str] = Counter()
    for call in calls:
        bucket = str(call.installation_id) if call.installation_id is not None else "app"
        (not_modified if call.status == 304 else counted)[bucket] += 1
    installations = [str(iid) for iid, _ in accounts(setup.installations)]
    per_installation_hour = {
        iid: counted[iid] / measured * PASSES_PER_HOUR + 1
        for iid in installations  # + 1 token an hour
    }
    cold_counted = sum(1 for call in cold if call.status != 304 and call.installation_id is not None)
    warm_counted = sum(1 for call in warm if call.status != 304 and call.installation_id is not None)
    cold_calls = Counter(f"{call.method} {re.sub(r'[0-9]+', 'N', call.path)} {call.status}" for call in cold)
    return {
        "cold_pass_counted": cold_counted,
        "cold_pass_calls": dict(cold_calls.most_common()),
        "cold_pass_seconds": cold_seconds,
        "cold_pass_share_of_budget": cold_counted / setup.installations / BUDGET,
        "passes_to_warm": warm_passes,
        "counted_to_warm": warm_counted,
        "passes": measured,
        "failed_passes": failed,
        "counted_per_pass": sum(counted.values()) / measured,
        "not_modified_per_pass": sum(not_modified.values()) / measured,
        "counted_per_hour": sum(counted.values()) / measured * PASSES_PER_HOUR + len(installations),
        "not_modified_per_hour": sum(not_modified.values()) / measured * PASSES_PER_HOUR,
        "max_share_of_budget": max(per_installation_hour.values()) / BUDGET,
        "pass_seconds": pass_seconds,
        "cpu_s_per_pass": cpu / measured,
        "cpu_s_per_hour": cpu / measured * PASSES_PER_HOUR,
        "machine_busy_cpus": busy / max(1e-9, measured * (pass_seconds + 1.0)),
        "memory_mb": memory,
    }


async def run_setup(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    world, names = await world_for(setup, args)
    try:
        result: dict[str, Any] = {"setup": setup.__dict__, "load_average_before": os.getloadavg()}
        made: list[int] = []
        result |= await watch_and_webhooks(world, setup, names, args, made)
        # the watch phase marked Jobs failed and queued jobs that got runner Jobs: put the steady
        # organisation back (those jobs ran and are gone)
        for name in names[: args.watch_events]:
            world.kube.set_job_status(NAMESPACE, name, {"active": 1})
        for job_id in made:
            world.github.complete_job(job_id)
            if f"ghapp-{job_id}" in world.kube.created["jobs"]:
                world.kube.delete_object("jobs", NAMESPACE, f"ghapp-{job_id}")  # and its Secret
        result["steady"] = await steady(world, setup, args)
        result["load_average_after"] = os.getloadavg()
        return result
    finally:
        await world.kube.close()
        await world.github.close()
        with contextlib.suppress(OSError):
            for path in world.tmp.iterdir():
                path.unlink()
            world.tmp.rmdir()


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of each figure over the runs of one configuration."""
    figures = {
        "cold pass counted": [r["steady"]["cold_pass_counted"] for r in results],
        "cold pass s": [r["steady"]["cold_pass_seconds"] for r in results],
        "passes to warm": [r["steady"]["passes_to_warm"] for r in results],
        "counted to warm": [r["steady"]["counted_to_warm"] for r in results],
        "counted/pass": [r["steady"]["counted_per_pass"] for r in results],
        "304/pass": [r["steady"]["not_modified_per_pass"] for r in results],
        "counted/h": [r["steady"]["counted_per_hour"] for r in results],
        "304/h": [r["steady"]["not_modified_per_hour"] for r in results],
        "budget share (max inst)": [r["steady"]["max_share_of_budget"] for r in results],
        "pass s": [r["steady"]["pass_seconds"] for r in results],
        "CPU s/pass": [r["steady"]["cpu_s_per_pass"] for r in results],
        "CPU s/h": [r["steady"]["cpu_s_per_hour"] for r in results],
        "RSS MB": [r["steady"]["memory_mb"]["VmRSS"] for r in results],
        "peak RSS MB": [max(r["steady"]["memory_mb"]["VmHWM"], r["memory_mb"]["VmHWM"]) for r in results],
        "watch events/s": [r["watch"]["events_per_s"] for r in results],
        "CPU ms/watch event": [r["watch"]["cpu_ms_per_event"] for r in results],
        "webhook→Job p99 s": [r["webhooks"]["p99_s"] for r in results],
        "failed passes": [r["steady"]["failed_passes"] for r in results],
    }
    return {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
        for k, v in figures.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repos", type=int, help="one configuration: repositories (else the whole matrix)")
    parser.add_argument("--installations", type=int, default=1)
    parser.add_argument("--runners", type=int, default=1000, help="runner Jobs (busy runners)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each configuration")
    parser.add_argument("--warmup", type=int, default=2, help="passes before measuring (fill the cache)")
    parser.add_argument("--passes", type=int, default=3, help="passes measured")
    parser.add_argument("--watch-events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="webhook deliveries per second")
    parser.add_argument("--webhook-seconds", type=float, default=10.0)
    parser.add_argument("--cache-entries", type=int, help="GHAPP_GITHUB_CACHE_ENTRIES (default: ghapp's)")
    parser.add_argument(
        "--github-limit",
        type=int,
        default=15_000,
        help="each installation's requests per window in the fake GitHub, fresh for each phase (GitHub gives "
        "large installations up to 15,000): the first pass after a start lists everything (~3 requests per "
        "active repository) before the cache answers, which at 1,000 active repositories is more than "
        "GHAPP_RECONCILE_RATE_SHARE of 5,000",
    )
    parser.add_argument("--scan-concurrency", type=int, help="GHAPP_SCAN_CONCURRENCY (default: ghapp's)")
    parser.add_argument(
        "--github-latency",
        type=float,
        default=0.0,
        help="seconds the fake GitHub holds each answer in the steady phase (a real round trip: ~0.05-0.15)",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--pass-timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def report(setup: Setup, summary: dict[str, Any]) -> None:
    print(f"\n== {setup.name}")
    for key, figure in summary.items():
        runs = " · ".join(f"{v:.4g}" for v in figure["runs"])
        print(f"  {key:<26} {figure['median']:>10.4g}   (runs: {runs})")
    checks = []
    if setup.installations == 1 and setup.repos // 10 >= 1000:
        share = summary["budget share (max inst)"]["max"]
        checks.append(
            (f"steady state ≤ {STEADY_SHARE_TARGET:.0%} of a 5,000/h budget", share <= STEADY_SHARE_TARGET)
        )
    if setup.runners >= 5000:
        checks.append((f"RSS < {RSS_TARGET_MB:.0f} MB", summary["peak RSS MB"]["max"] < RSS_TARGET_MB))
        checks.append(
            (
                f"watch event < {EVENT_CPU_TARGET_MS} ms CPU",
                summary["CPU ms/watch event"]["max"] < EVENT_CPU_TARGET_MS,
            )
        )
        checks.append(
            (
                f"webhook → Job p99 < {WEBHOOK_P99_TARGET_S} s",
                summary["webhook→Job p99 s"]["max"] < WEBHOOK_P99_TARGET_S,
            )
        )
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'} {text}")


async def main_async(args: argparse.Namespace) -> int:
    setups = (
        [Setup(args.repos, args.installations, args.runners)]
        if args.repos
        else [Setup(*row) for row in MATRIX]
    )
    print(f"machine: {machine()}")
    everything = []
    for setup in setups:
        results = [await run_setup(setup, args) for _ in range(args.runs)]
        summary = summarize(results)
        report(setup, summary)
        everything.append({"setup": setup.__dict__, "summary": summary, "results": results})
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "configurations": everything}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
