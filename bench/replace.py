#!/usr/bin/env python3
"""Replacement benchmark (issue #11): time from "runner pod failed" to "replacement Job created".

    python bench/replace.py [--runners 30]

One process: the fake GitHub (``tests/fakes/github.py``), the Kubernetes emulator (``tests/fakes/kube.py``,
with its Job controller) and ghapp itself (``start_services`` + the aiohttp app on loopback, the real clock),
so the figures include the emulator's and the watch's work. The emulator is subclassed here (only) to note
when each Job is first stored under its name with a given ``ghapp/attempt``.

Phases: queue N jobs (webhooks) and wait until their Jobs and Pods exist → one at a time, the benchmark's
kubelet fails a runner's pod (exit code 1, ``runner_error``; the workflow job is still queued), the time until
the Job of attempt 2 is stored is measured, then the replacement runs and completes (as most runners do, so
the pool stays healthy: three failures in a row would make it unhealthy and space its launches out by design).
Figures: p50 / p95 / max in milliseconds. Times are ``time.monotonic()``.
"""

# ruff: noqa: E402  (the repository root goes on sys.path before the tests' fakes are imported)

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestServer

from ghapp.app import build_app, start_services
from ghapp.config import load_settings
from ghapp.metrics import Metrics
from tests.fakes.github import FakeGitHub
from tests.fakes.kube import KubeEmulator
from tests.keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM

APP_ID = 12345
WEBHOOK_SECRET = "bench-webhook-secret"
NAMESPACE = "runners"
INSTALLATION = 4242
LABELS = ["self-hosted", "linux", "x64"]
DEADLINE_S = 60.0


class TimedEmulator(KubeEmulator):
    """The emulator, noting when a Job of each (name, attempt) is first stored."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[tuple[str, str], float] = {}

    def _write(self, resource: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if resource == "jobs":
            meta = obj["metadata"]
            attempt = str((meta.get("annotations") or {}).get("ghapp/attempt", ""))
            self.stored.setdefault((meta["name"], attempt), time.monotonic())
        return super()._write(resource, obj, old)


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: timed out waiting for {what}")
        await asyncio.sleep(0.001)


def figures(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"n={len(ms)} p50={statistics.median(ms):.0f} ms p95={p95:.0f} ms max={ms[-1]:.0f} ms"


async def main(runners: int) -> None:
    github = FakeGitHub(app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET)
    github.add_installation(
        installation_id=INSTALLATION, account="acme", account_type="Organization", repositories=["webapp"]
    )
    kube = TimedEmulator()
    await github.start()
    await kube.start()
    with tempfile.TemporaryDirectory() as folder:
        pools = Path(folder) / "pools.yaml"
        pools.write_text(f"pools:\n  - name: linux\n    labels: {LABELS}\n    max_runners: 1000\n")
        settings = load_settings(
            {
                "GHAPP_APP_ID": str(APP_ID),
                "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
                "GHAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "GHAPP_GITHUB_API_URL": github.api_url,
                "GHAPP_NAMESPACE": NAMESPACE,
                "GHAPP_POOLS_FILE": str(pools),
                "GHAPP_ALLOWED_ACCOUNTS": "acme",
            }
        )
        services = await start_services(settings, kube_configuration=kube.configuration(), metrics=Metrics())
        server = TestServer(build_app(services, reconcile=False), host="127.0.0.1")
        await server.start_server()
        github.webhook_url = str(server.make_url("/webhook"))
        try:
            names = []
            for _ in range(runners):
                job = github.queue_job(installation_id=INSTALLATION, repository="acme/webapp", labels=LABELS)
                await github.deliver("workflow_job", github.workflow_job_payload(job["id"], "queued"))
                names.append(f"ghapp-{job['id']}")
            await until(lambda: all((n, "1") in kube.stored for n in names), "the first runner Jobs")
            await until(lambda: all(kube.pods_of(NAMESPACE, n) for n in names), "their Pods")

            samples = []
            for name in names:
                failed_at = time.monotonic()
                kube.exit_pod(NAMESPACE, name, exit_code=1)
                await until(lambda name=name: (name, "2") in kube.stored, f"the replacement of {name}")
                samples.append(kube.stored[(name, "2")] - failed_at)
                await until(lambda name=name: kube.pods_of(NAMESPACE, name), f"the new Pod of {name}")
                kube.run_pod(NAMESPACE, name)
                kube.exit_pod(NAMESPACE, name, exit_code=0)
            healthy = services.metrics.registry.get_sample_value("ghapp_pool_healthy", {"pool": "linux"})
            print(f"runner pod failed -> replacement Job created: {figures(samples)}; healthy: {healthy}")
        finally:
            await server.close()
            await github.close()
            await kube.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=30)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # ghapp's per-failure warnings would drown the figures
    asyncio.run(main(arguments.runners))
