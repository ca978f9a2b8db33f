#!/usr/bin/env python3
"""Burst benchmark (issue #4): N queued ``workflow_job`` webhooks at once, until N runner Jobs exist.

    python bench/burst.py [--jobs 1000] [--repos 10] [--installations 3] [--max-runners N]
    python bench/burst.py --jobs 300 --installations 3 --orgs-only --kubeconfig /tmp/k8s-x/kubeconfig
    python bench/burst.py --jobs 300 --installations 3 --orgs-only --real-cluster /tmp/k8s-x

With ``--kubeconfig`` (or ``--real-cluster DIR``, which starts ``../shared/k8s/up --dir DIR`` for the run
and stops it after) ghapp and the minimal client write to a **real API server** instead of the emulator:
each phase in a fresh namespace, deleted (and waited for) when the phase ends. Jobs and Secrets are then
timed by a watch held by this process and requests counted from the API server's metrics
(``bench/realkube.py``); the API server's own work (and its controllers') shows as "other processes' CPU".

Processes: ghapp runs as it is deployed, ``python -m ghapp serve`` in a **subprocess** (GHAPP_* environment,
a kubeconfig pointing at the emulator), so its CPU time and peak RSS are its own. This process hosts only
the instruments: the fake GitHub (``tests/fakes/github.py``) and the Kubernetes emulator
(``tests/fakes/kube.py``). The webhook sender and the minimal client each run in a process of their own
(this script, re-run with a private first argument), so a busy emulator does not delay reading ghapp's
answers and the minimal client gets a process of its own, like ghapp.

Phases: start the fakes and ghapp → wait for ``/readyz`` → queue N jobs in the fake GitHub and sign their
deliveries → the sender POSTs them with ``--concurrency`` in flight → poll the emulator (with a deadline)
until N Jobs and N Secrets exist → read ghapp's CPU time and peak RSS, stop ghapp → the minimal client
makes the same GitHub and Kubernetes calls directly against a fresh emulator → figures, PASS/FAIL.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on the machine). The
emulator's timestamps have one-second resolution, so this script subclasses it (here only; ghapp is
untouched) to note when each Job and Secret is first stored. Linux only (``/proc/PID/stat``,
``/proc/PID/status``). ``--profile FILE`` runs ``py-spy record`` on ghapp during the burst (``.svg`` flame
graph, ``.txt`` collapsed stacks plus a top-functions summary, ``.json`` speedscope);
``pip install -e '.[bench]'`` installs py-spy.
"""

# ruff: noqa: E402  (the repository root goes on sys.path before the tests' fakes are imported)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).resolve())
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp
import jwt
import yaml
from realkube import RealKube, ssl_context, writes

from ghapp import manifests, planner, policy
from ghapp.config import Settings, load_settings
from ghapp.github import endpoint_template
from ghapp.models import WorkflowJob
from ghapp.sensitive import Secret
from tests.fakes.github import FakeGitHub
from tests.fakes.kube import KubeEmulator
from tests.keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM
from tests.realcluster import Cluster, start_shared, stop_shared

APP_ID = 12345
WEBHOOK_SECRET = "bench-webhook-secret"
NAMESPACE = "runners"
LABELS = ["self-hosted", "linux", "x64"]
MAX_POOL_RUNNERS = 10_000  # ghapp.config.Pool.max_runners' upper bound
OVER_LIMIT_WINDOW_S = 2.0  # with --max-runners < --jobs: how long to watch for Jobs beyond the limit

# Targets of issue #4
ACK_P99_MS = 10.0
LAST_JOB_AFTER_LAST_DELIVERY_S = 5.0
GITHUB_CALLS_PER_RUNNER = 0.05
KUBE_WRITES_PER_RUNNER = 2
MINIMAL_CLIENT_RATIO = 1.5
REAL_MINIMAL_CLIENT_RATIO = 1.3  # issue #14 item 4: against a real API server
PEAK_RSS_MB = 150.0


# --------------------------------------------------------------------------------------- instrumented fakes


class TimedKube(KubeEmulator):
    """The emulator, noting when (``time.monotonic()``) each Job and Secret is first stored."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, dict[str, float]] = {"jobs": {}, "secrets": {}}
        self.namespace = NAMESPACE

    async def request_counts(self) -> Counter[str]:
        """Requests so far, as "verb resource" (as `RealKube.request_counts` counts them)."""
        return Counter(f"{r.verb} {r.resource}" for r in self.requests)

    def _write(self, resource: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        stored: dict[str, Any] = super()._write(resource, obj, old)
        if old is None and resource in self.created:
            self.created[resource].setdefault(obj["metadata"]["name"], time.monotonic())
        return stored


# --------------------------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process in MB, from /proc/PID/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def server_cpu(kube: TimedKube | RealKube) -> Counter[str]:
    """CPU seconds so far of a real control plane's processes (etcd, kube-apiserver, controller-manager),
    when its folder (the kubeconfig's) lists them in ``pids`` as ``../shared/k8s/up`` does; else none."""
    pids = kube.kubeconfig.parent / "pids" if isinstance(kube, RealKube) else None
    used: Counter[str] = Counter()
    if pids is None or not pids.exists():
        return used
    for line in pids.read_text().splitlines():
        name, _, pid = line.partition(" ")
        with contextlib.suppress(OSError, ValueError):
            used[name] = proc_cpu_seconds(int(pid))
    return used


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (the ``cpu`` line of /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = math.nan
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
    }


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


class LoopLag:
    """How late a 10 ms tick of this process's event loop fires (the sender shares it with the fakes)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - expected)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --------------------------------------------------------------------------------------------- the world


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Keep this process's garbage collector (gen-2 pauses of ~100 ms over the fakes' state) out of a phase.

    Only the bench process (fakes, sender, minimal client); ghapp's own GC runs as usual.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


@dataclass
class Delivery:
    job_id: int
    name: str
    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any]
    sent: float = 0.0
    acked: float = 0.0
    status: int = 0


@dataclass
class World:
    args: argparse.Namespace
    tmp: Path
    github: FakeGitHub
    kube: TimedKube | RealKube
    environ: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None


def accounts(installations: int, orgs_only: bool) -> list[tuple[int, str, str]]:
    """(installation id, login, account type): organisations, and the last one a user unless orgs_only."""
    result = []
    for i in range(installations):
        is_user = not orgs_only and installations > 1 and i == installations - 1
        kind = "User" if is_user else "Organization"
        result.append((7000 + i, f"{'user' if is_user else 'org'}-{i}", kind))
    return result


def repositories(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(installation id, owner/name) per repository, spread round-robin over the installations."""
    accts = accounts(args.installations, args.orgs_only)
    return [(accts[r % len(accts)][0], f"{accts[r % len(accts)][1]}/repo-{r:02d}") for r in range(args.repos)]


def setup_github(github: FakeGitHub, args: argparse.Namespace) -> None:
    repos = repositories(args)
    for installation_id, login, kind in accounts(args.installations, args.orgs_only):
        names = [full.split("/", 1)[1] for iid, full in repos if iid == installation_id]
        github.add_installation(
            installation_id=installation_id,
            account=login,
            account_type=kind,  # type: ignore[arg-type]
            repositories=names,
        )


def write_files(world: World) -> None:
    """Private key, pools file and kubeconfig for ghapp; its environment."""
    args, tmp = world.args, world.tmp
    key_file = tmp / "app-key.pem"
    key_file.write_text(PRIVATE_KEY_PEM)
    key_file.chmod(0o600)
    pools_file = tmp / "pools.yaml"
    max_runners = min(args.max_runners or args.jobs, MAX_POOL_RUNNERS)
    pools = {"pools": [{"name": "bench", "labels": LABELS, "max_runners": max_runners}]}
    pools_file.write_text(yaml.safe_dump(pools))
    kubeconfig = world.kube.kubeconfig if isinstance(world.kube, RealKube) else tmp / "kubeconfig"
    if isinstance(world.kube, TimedKube):
        write_emulator_kubeconfig(kubeconfig, world.kube)
    world.environ = {
        "GHAPP_APP_ID": str(APP_ID),
        "GHAPP_PRIVATE_KEY_FILE": str(key_file),
        "GHAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GHAPP_GITHUB_API_URL": world.github.api_url,
        "GHAPP_NAMESPACE": world.kube.namespace,
        "GHAPP_POOLS_FILE": str(pools_file),
        "GHAPP_HOST": "127.0.0.1",
        "GHAPP_PORT": str(free_port()),
        "GHAPP_LOG_LEVEL": args.log_level,
        "GHAPP_LOG_FORMAT": "json",
        "GHAPP_SHUTDOWN_GRACE_SECONDS": "2",
        "GHAPP_ALLOWED_ACCOUNTS": "*",
        "GHAPP_RECONCILE_INTERVAL_SECONDS": "3600",
        "KUBECONFIG": str(kubeconfig),
    } | dict(getattr(args, "env", []))
    world.settings = load_settings(world.environ)


def write_emulator_kubeconfig(kubeconfig: Path, kube: TimedKube) -> None:
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": kube.url}}],
                "users": [{"name": "bench", "user": {}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "bench", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "emulator",
            }
        )
    )


def build_deliveries(world: World) -> list[Delivery]:
    """Queue N jobs in the fake GitHub and sign their ``queued`` webhooks (before the clock starts)."""
    repos = repositories(world.args)
    deliveries = []
    for n in range(world.args.jobs):
        installation_id, repository = repos[n % len(repos)]
        job = world.github.queue_job(installation_id=installation_id, repository=repository, labels=LABELS)
        payload = world.github.workflow_job_payload(job["id"], "queued")
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body),
        }
        name = planner.runner_name(prefix="ghapp", workflow_job_id=int(job["id"]))
        deliveries.append(Delivery(int(job["id"]), name, body, headers, payload))
    return deliveries


# --------------------------------------------------------------------------------------------- ghapp


async def start_ghapp(world: World, log_file: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHAPP_") and k != "KUBECONFIG"}
    env.update(world.environ)
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ghapp", "serve", env=env, stdout=log, stderr=log, cwd=world.tmp
        )
    url = f"http://127.0.0.1:{world.environ['GHAPP_PORT']}/readyz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + world.args.start_timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                raise SystemExit(f"ghapp exited with {process.returncode}; see {log_file}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return process
            if loop.time() > deadline:
                process.kill()
                raise SystemExit(f"ghapp not ready within {world.args.start_timeout}s; see {log_file}")
            await asyncio.sleep(0.05)


async def stop_process(process: asyncio.subprocess.Process, *, grace: float = 15.0) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()


async def wait_for_objects(
    kube: TimedKube | RealKube,
    expected: int,
    *,
    deadline_s: float,
    process: asyncio.subprocess.Process | None,
) -> bool:
    """Poll the emulator (or the real server's watch) until `expected` Jobs and Secrets exist; False at
    the deadline or if ghapp died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while len(kube.created["jobs"]) < expected or len(kube.created["secrets"]) < expected:
        if loop.time() > deadline or (process is not None and process.returncode is not None):
            return False
        await asyncio.sleep(0.005)
    return True


class PySpy:
    """``py-spy record`` attached to ghapp for the burst (optional)."""

    def __init__(self, output: Path, pid: int, rate: int) -> None:
        self.output = output
        self.pid = pid
        self.rate = rate
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if exe is None:
            print("py-spy not found (pip install -e '.[bench]'); no profile", file=sys.stderr)
            return
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(self.output.suffix, "raw")
        self.process = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--format",
            fmt,
            "--output",
            str(self.output),
            "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # let it attach before the burst starts

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()


IDLE_FRAMES = ("EpollSelector.select", "concurrent/futures/thread.py:81")
"""Leaf frames of a waiting event loop or an idle executor thread: not counted as work."""


def summarize_raw_profile(path: Path, top: int = 25) -> list[str]:
    """Top frames by self and by inclusive busy samples, from py-spy's collapsed-stack (raw) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE_FRAMES):
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} busy samples (idle loop / idle executor threads left out)", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


# ------------------------------------------------------------------------------------------ helper processes

SENDER = "_sender"
MINIMAL = "_minimal"


async def helper(mode: str, spec: dict[str, Any], tmp: Path) -> asyncio.subprocess.Process:
    """Start this script in `mode` (a process of its own) on a JSON spec; its answer goes to a file.

    Returns once the helper is ready (imports done, work prepared); it starts when `go` is called.
    """
    spec_file = tmp / f"{mode}-spec.json"
    spec_file.write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        mode,
        str(spec_file),
        str(tmp / f"{mode}-answer.json"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        process.kill()
        await process.wait()
        raise SystemExit(f"bench: the {mode} process did not get ready")
    return process


async def go(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    await process.stdin.drain()


def handshake() -> None:
    """In a helper process: say ready, wait for go (nothing else runs meanwhile)."""
    print("ready", flush=True)
    sys.stdin.readline()


async def helper_answer(
    mode: str, process: asyncio.subprocess.Process, tmp: Path, within: float
) -> dict[str, Any]:
    try:
        await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SystemExit(f"bench: the {mode} process did not finish within {within}s") from None
    if process.returncode != 0:
        raise SystemExit(f"bench: the {mode} process failed with exit status {process.returncode}")
    answer: dict[str, Any] = json.loads((tmp / f"{mode}-answer.json").read_text())
    return answer


async def sender_main(spec: dict[str, Any]) -> dict[str, Any]:
    """POST every delivery to ghapp, `concurrency` at a time, as fast as they are answered."""
    deliveries = [(d["body"].encode(), d["headers"]) for d in spec["deliveries"]]
    timings: list[list[float]] = [[0.0, 0.0, 0, 0.0] for _ in deliveries]
    pending = iter(range(len(deliveries)))
    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        handshake()
        cpu_before = time.process_time()

        rate = float(spec["rate"])
        started = time.monotonic()

        async def worker() -> None:
            for i in pending:
                body, headers = deliveries[i]
                status = 0
                if rate:  # open loop: delivery i is due at i / rate seconds
                    await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                sent = time.monotonic()
                try:
                    async with session.post(spec["url"], data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                timings[i] = [sent, time.monotonic(), status, sent - (started + i / rate if rate else sent)]

        with no_gc_pauses():
            await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    return {"timings": timings, "cpu_s": time.process_time() - cpu_before}


async def minimal_main(spec: dict[str, Any]) -> dict[str, Any]:
    """The same GitHub and Kubernetes calls as ghapp, made directly: the floor ghapp is compared with.

    Before the clock starts: plans and Job manifests from the payloads with ghapp's own (pure) planner and
    manifests. Timed: an App JWT, one installation token per installation, one registration token per
    org / repo, then per runner a Job and a Secret owned by it — one aiohttp session, `concurrency` in flight.
    """
    settings = load_settings(spec["environ"])
    assert settings.private_key is not None
    plans = []
    for payload in spec["payloads"]:
        plan = planner.plan(WorkflowJob.from_payload(payload), settings, facts=policy.Facts())
        assert isinstance(plan, planner.RunnerPlan)
        plans.append(plan)
    jobs = [manifests.runner_job(plan) for plan in plans]
    api, base, concurrency = settings.github_api_url, spec["kube_url"], spec["concurrency"]
    tls: ssl.SSLContext | bool = False
    if spec["kubeconfig"]:  # a real API server: its CA and the kubeconfig's client certificate
        base, tls = await ssl_context(Cluster(Path(spec["kubeconfig"])))
    namespace = settings.namespace
    private_key = settings.private_key.get_secret_value()
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=tls)
    github_headers = {"Accept": "application/vnd.github+json"}
    headers = {"User-Agent": "bench-minimal-client"}
    with no_gc_pauses():
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            handshake()
            cpu_before = time.process_time()
            started = time.monotonic()
            now = int(time.time())
            claims = {"iat": now - 60, "exp": now + 540, "iss": settings.app_id}
            app_jwt = jwt.encode(claims, private_key, algorithm="RS256")

            async def post_github(path: str, token: str) -> dict[str, Any]:
                auth = github_headers | {"Authorization": f"Bearer {token}"}
                async with session.post(api + path, json={}, headers=auth) as response:
                    if response.status != 201:
                        raise SystemExit(f"minimal client: GitHub answered {response.status} to {path}")
                    body: dict[str, Any] = await response.json()
                    return body

            installation_ids = sorted({plan.installation_id for plan in plans})
            minted = await asyncio.gather(
                *(post_github(f"/app/installations/{i}/access_tokens", app_jwt) for i in installation_ids)
            )
            tokens = {i: answer["token"] for i, answer in zip(installation_ids, minted, strict=True)}
            scopes = sorted({(plan.installation_id, plan.scope.api_path) for plan in plans})
            registered = await asyncio.gather(
                *(post_github(f"{path}/actions/runners/registration-token", tokens[i]) for i, path in scopes)
            )
            credentials = {
                path: Secret(answer["token"]) for (_, path), answer in zip(scopes, registered, strict=True)
            }
            pending = iter(zip(plans, jobs, strict=True))
            jobs_url = f"{base}/apis/batch/v1/namespaces/{namespace}/jobs"
            secrets_url = f"{base}/api/v1/namespaces/{namespace}/secrets"

            async def worker() -> None:
                for plan, job in pending:
                    async with session.post(jobs_url, json=job) as response:
                        created = await response.json()
                        if response.status != 201:
                            failures.append(f"Job {response.status}")
                            continue
                    secret = manifests.runner_secret(
                        plan,
                        credential=credentials[plan.scope.api_path],
                        job_uid=created["metadata"]["uid"],
                    )
                    async with session.post(secrets_url, json=secret) as response:
                        await response.read()
                        if response.status != 201:
                            failures.append(f"Secret {response.status}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            ended = time.monotonic()
    return {
        "started": started,
        "ended": ended,
        "failures": failures,
        "cpu_s": time.process_time() - cpu_before,
    }


# --------------------------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run; with ``--real-cluster DIR`` on a control plane started in DIR for it (stopped after)."""
    if args.real_cluster is None:
        return await run_on(args, args.kubeconfig)
    kubeconfig = await asyncio.to_thread(start_shared, args.real_cluster)
    try:
        return await run_on(args, kubeconfig)
    finally:
        await asyncio.to_thread(stop_shared, args.real_cluster)


async def open_kube(kubeconfig: Path | None, phase: str) -> TimedKube | RealKube:
    """Where a phase writes: a fresh emulator, or a fresh namespace on the real API server."""
    kube = TimedKube() if kubeconfig is None else RealKube(kubeconfig, prefix=f"ghapp-bench-{phase}")
    await kube.start()
    return kube


async def run_on(args: argparse.Namespace, kubeconfig: Path | None) -> dict[str, Any]:
    expected = min(args.jobs, args.max_runners or args.jobs)
    github = FakeGitHub(app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET)
    setup_github(github, args)
    await github.start()
    kube = await open_kube(kubeconfig, "ghapp")
    tmp = Path(tempfile.mkdtemp(prefix="ghapp-bench-"))
    world = World(args=args, tmp=tmp, github=github, kube=kube)
    write_files(world)
    log_file = tmp / "ghapp.log"
    result: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args) | {"profile": str(args.profile)},
        "kube": "emulator" if kubeconfig is None else f"API server {kube.url} ({kubeconfig})",
    }
    try:
        process = await start_ghapp(world, log_file)
        try:
            result["ghapp"], deliveries = await ghapp_burst(world, process, expected, log_file)
        finally:
            await stop_process(process)
        await kube.close()  # on a real server: its namespace goes, before the minimal client's phase
        result["minimal"] = await minimal_run(world, deliveries[:expected], kubeconfig)
    finally:
        await kube.close()
        await github.close()
        if args.keep_files:
            result["files"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


async def wait_for_quiet(within: float) -> float:
    """Wait (at most `within` s) for a second in which the rest of the machine uses < 0.25 CPU; its use."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < 0.25 or loop.time() > deadline:
            return busy


async def ghapp_burst(
    world: World, process: asyncio.subprocess.Process, expected: int, log_file: Path
) -> tuple[dict[str, Any], list[Delivery]]:
    args, github, kube = world.args, world.github, world.kube
    deliveries = build_deliveries(world)
    spec = {
        "url": f"http://127.0.0.1:{world.environ['GHAPP_PORT']}/webhook",
        "concurrency": args.concurrency,
        "rate": args.rate,
        "deliveries": [{"body": d.body.decode(), "headers": d.headers} for d in deliveries],
    }
    if args.quiet_wait:
        await wait_for_quiet(args.quiet_wait)
    load_before = os.getloadavg()[0]
    profiler = PySpy(args.profile, process.pid, args.profile_rate) if args.profile else None
    if profiler is not None:
        await profiler.start()
    rss_ready = proc_memory_mb(process.pid)
    github_calls_before = len(github.calls)
    kube_requests_before = await kube.request_counts()
    lag = LoopLag()
    sender = await helper(SENDER, spec, world.tmp)
    with no_gc_pauses():
        cpu_ghapp_before = proc_cpu_seconds(process.pid)
        cpu_fakes_before = time.process_time()
        cpu_machine_before = machine_busy_seconds()
        cpu_server_before = server_cpu(kube)
        lag.start()
        await go(sender)
        sent = await helper_answer(SENDER, sender, world.tmp, args.timeout)
        complete = await wait_for_objects(kube, expected, deadline_s=args.timeout, process=process)
        finished = time.monotonic()
        if complete and expected < args.jobs:
            # max_runners below the burst: give ghapp a bounded window to (wrongly) create more
            await asyncio.sleep(OVER_LIMIT_WINDOW_S)
        cpu_ghapp = proc_cpu_seconds(process.pid) - cpu_ghapp_before
        cpu_fakes = time.process_time() - cpu_fakes_before
        cpu_machine = machine_busy_seconds() - cpu_machine_before
        cpu_server = server_cpu(kube) - cpu_server_before
        await lag.stop()
    kube_requests = await kube.request_counts() - kube_requests_before
    memory = proc_memory_mb(process.pid)
    if profiler is not None:
        await profiler.stop()
    for delivery, (sent_at, acked_at, status, _) in zip(deliveries, sent["timings"], strict=True):
        delivery.sent, delivery.acked, delivery.status = sent_at, acked_at, int(status)
    slips_ms = [1000 * timing[3] for timing in sent["timings"]]
    github_calls = github.calls[github_calls_before:]
    created_jobs, created_secrets = kube.created["jobs"], kube.created["secrets"]
    ack_ms = [1000 * (d.acked - d.sent) for d in deliveries]
    to_job = [created_jobs[d.name] - d.sent for d in deliveries if d.name in created_jobs]
    first_sent = min(d.sent for d in deliveries)
    last_ack = max(d.acked for d in deliveries)
    last_job = max(created_jobs.values(), default=math.nan)
    last_secret = max(created_secrets.values(), default=math.nan)
    wall = finished - first_sent
    figures: dict[str, Any] = {
        "complete": complete,
        "expected": expected,
        "jobs": len(created_jobs),
        "secrets": len(created_secrets),
        "statuses": dict(Counter(d.status for d in deliveries)),
        "ack_ms": {"p50": percentile(ack_ms, 50), "p99": percentile(ack_ms, 99), "max": max(ack_ms)},
        "delivery_to_job_s": {"p50": percentile(to_job, 50), "p99": percentile(to_job, 99)},
        "send_s": last_ack - first_sent,
        "send_slip_ms": {"p99": percentile(slips_ms, 99), "max": max(slips_ms)},
        "burst_to_last_job_s": last_job - first_sent,
        "burst_s": max(last_job, last_secret) - first_sent,
        "last_delivery_to_last_job_s": last_job - last_ack,
        "github_calls": len(github_calls),
        "github_calls_by_endpoint": dict(
            Counter(f"{c.method} {endpoint_template(c.path)}" for c in github_calls)
        ),
        # writes to runner objects; the reconciler's Lease renewals are leader bookkeeping, not per runner
        "kube_writes": writes(kube_requests),
        "kube_requests": kube_requests.total(),
        "kube_requests_by_verb": dict(kube_requests),
        "rss_mb_when_ready": rss_ready.get("VmRSS", math.nan),
        "peak_rss_mb": memory.get("VmHWM", math.nan),
        "wall_s": wall,
        "cpu_ghapp_s": cpu_ghapp,
        "cpu_fakes_s": cpu_fakes,
        "cpu_sender_s": sent["cpu_s"],
        "cpu_others_s": cpu_machine - cpu_ghapp - cpu_fakes - sent["cpu_s"],
        "cpu_server": dict(cpu_server),
        "loadavg_before": load_before,
        "fakes_loop_lag_ms": {"p99": 1000 * percentile(lag.lags, 99), "max": 1000 * max(lag.lags, default=0)},
        "log_lines": sum(1 for _ in log_file.open("rb")),
    }
    if args.profile and args.profile.suffix not in (".svg", ".json") and args.profile.exists():
        figures["profile_summary"] = summarize_raw_profile(args.profile)
    return figures, deliveries


async def minimal_run(world: World, deliveries: list[Delivery], kubeconfig: Path | None) -> dict[str, Any]:
    """The minimal client in a process of its own, against a fresh emulator (or a fresh namespace of the
    real API server) and the same fake GitHub."""
    args = world.args
    kube = await open_kube(kubeconfig, "minimal")
    try:
        environ = dict(world.environ) | {"GHAPP_NAMESPACE": kube.namespace}
        spec = {
            "environ": environ,
            "kube_url": kube.url,
            "kubeconfig": str(kubeconfig or ""),
            "concurrency": args.concurrency,
            "payloads": [delivery.payload for delivery in deliveries],
        }
        calls_before = len(world.github.calls)
        client = await helper(MINIMAL, spec, world.tmp)
        if args.quiet_wait:
            await wait_for_quiet(args.quiet_wait)
        requests_before = await kube.request_counts()
        with no_gc_pauses():
            cpu_fakes_before = time.process_time()
            cpu_machine_before = machine_busy_seconds()
            cpu_server_before = server_cpu(kube)
            await go(client)
            answer = await helper_answer(MINIMAL, client, world.tmp, args.timeout)
            cpu_fakes = time.process_time() - cpu_fakes_before
            cpu_machine = machine_busy_seconds() - cpu_machine_before
            cpu_server = server_cpu(kube) - cpu_server_before
        if kubeconfig is not None:  # the watch sees the last objects a moment after they were written
            await wait_for_objects(kube, len(deliveries), deadline_s=10, process=None)
        requests = await kube.request_counts() - requests_before
        return {
            "seconds": answer["ended"] - answer["started"],
            "cpu_client_s": answer["cpu_s"],
            "cpu_fakes_s": cpu_fakes,
            "cpu_others_s": cpu_machine - cpu_fakes - answer["cpu_s"],
            "cpu_server": dict(cpu_server),
            "failures": answer["failures"],
            "jobs": len(kube.created["jobs"]),
            "secrets": len(kube.created["secrets"]),
            "github_calls": len(world.github.calls) - calls_before,
            "kube_writes": writes(requests),
            "kube_requests_by_verb": dict(requests),
        }
    finally:
        await kube.close()


# --------------------------------------------------------------------------------------------- the report


def verdict(ok: bool | None) -> str:
    return "    " if ok is None else ("PASS" if ok else "FAIL")


def server_text(phase: dict[str, Any]) -> str:
    """The control plane's share of "other processes", when it was measured."""
    used = phase.get("cpu_server") or {}
    if not used:
        return ""
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in sorted(used.items()))
    return f" of which the control plane {sum(used.values()):.2f} s: {parts}"


def report(result: dict[str, Any]) -> bool:
    g, m, a, mach = result["ghapp"], result["minimal"], result["args"], result["machine"]
    n = max(1, g["jobs"])  # per-runner figures: per runner Job ghapp created
    kinds = Counter(kind for _, _, kind in accounts(a["installations"], a["orgs_only"]))
    ratio = g["burst_s"] / m["seconds"]
    target = MINIMAL_CLIENT_RATIO if result["kube"] == "emulator" else REAL_MINIMAL_CLIENT_RATIO
    print(
        f"ghapp burst: {a['jobs']} queued jobs, {a['repos']} repos, {a['installations']} installations "
        f"({kinds['Organization']} org, {kinds['User']} user), {a['concurrency']} in flight"
        + (f" at {a['rate']:g}/s" if a["rate"] else " (closed loop)")
        + ", "
        f"max_runners {min(a['max_runners'] or a['jobs'], MAX_POOL_RUNNERS)}"
    )
    print(f"Kubernetes: {result['kube']}" + (f"; ghapp settings {dict(a['env'])}" if a["env"] else ""))
    print(
        f"machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['memory_gib']} GiB, Python {mach['python']}; "
        "ghapp, webhook sender and minimal client each in a process of their own, the fakes in this one"
    )
    ack, dj, wall = g["ack_ms"], g["delivery_to_job_s"], g["wall_s"]
    cpu_all = g["cpu_ghapp_s"] + g["cpu_fakes_s"] + g["cpu_sender_s"]
    lines: list[tuple[str, str, bool | None]] = [
        (
            "webhook ack latency",
            f"p50 {ack['p50']:.2f} ms, p99 {ack['p99']:.2f} ms, max {ack['max']:.1f} ms "
            f"(answers {g['statuses']}; target p99 < {ACK_P99_MS:g} ms)",
            ack["p99"] < ACK_P99_MS and set(g["statuses"]) == {202},
        ),
        ("delivery -> runner Job", f"p50 {dj['p50']:.3f} s, p99 {dj['p99']:.3f} s", None),
        (
            "burst",
            f"{a['jobs']} sent in {g['send_s']:.2f} s ({a['jobs'] / g['send_s']:.0f}/s"
            + (f", {a['rate']:g}/s due, slip p99 {g['send_slip_ms']['p99']:.0f} ms" if a["rate"] else "")
            + f"); first delivery -> "
            f"last Job {g['burst_to_last_job_s']:.2f} s, -> last Secret {g['burst_s']:.2f} s; "
            f"{g['jobs']}/{g['expected']} Jobs, {g['secrets']}/{g['expected']} Secrets",
            g["complete"],
        ),
        (
            "pool max_runners respected",
            f"{g['jobs']} Jobs for max_runners {g['expected']} (watched {OVER_LIMIT_WINDOW_S:g} s more)",
            g["jobs"] <= g["expected"],
        )
        if g["expected"] < a["jobs"]
        else ("", "", None),
        (
            "last delivery -> last Job",
            f"{g['last_delivery_to_last_job_s']:.3f} s (target < {LAST_JOB_AFTER_LAST_DELIVERY_S:g} s)",
            g["complete"] and g["last_delivery_to_last_job_s"] < LAST_JOB_AFTER_LAST_DELIVERY_S,
        ),
        (
            "GitHub API calls / runner",
            f"{g['github_calls'] / n:.4f} ({g['github_calls']} calls: {g['github_calls_by_endpoint']}; "
            f"target <= {GITHUB_CALLS_PER_RUNNER:g})",
            g["github_calls"] / n <= GITHUB_CALLS_PER_RUNNER,
        ),
        (
            "Kubernetes writes / runner",
            f"{g['kube_writes'] / n:.3f} ({g['kube_writes']} Job and Secret writes; all requests: "
            f"{g['kube_requests_by_verb']}; target exactly {KUBE_WRITES_PER_RUNNER})",
            g["kube_writes"] == KUBE_WRITES_PER_RUNNER * n,
        ),
        (
            "minimal client",
            f"{m['seconds']:.2f} s ({m['github_calls']} GitHub calls, {m['kube_writes']} writes, "
            f"{m['jobs']} Jobs, {m['secrets']} Secrets, {len(m['failures'])} failures; "
            f"CPU: client {m['cpu_client_s']:.2f} s, fakes {m['cpu_fakes_s']:.2f} s, "
            f"other processes {m['cpu_others_s']:.2f} s{server_text(m)})",
            None,
        ),
        (
            "ghapp / minimal client",
            f"{ratio:.2f}x ({g['burst_s']:.2f} s / {m['seconds']:.2f} s; target <= {target:g}x"
            + (", closed loop only: --rate paces the burst)" if a["rate"] else ")"),
            None if a["rate"] else ratio <= target and not m["failures"],
        ),
        (
            "ghapp peak RSS (VmHWM)",
            f"{g['peak_rss_mb']:.1f} MB (RSS when ready {g['rss_mb_when_ready']:.1f} MB; "
            f"target < {PEAK_RSS_MB:g} MB)",
            g["peak_rss_mb"] < PEAK_RSS_MB,
        ),
        (
            "CPU during the burst",
            f"over {wall:.2f} s: ghapp {g['cpu_ghapp_s']:.2f} s ({100 * g['cpu_ghapp_s'] / wall:.0f}% of a "
            f"core), fakes {g['cpu_fakes_s']:.2f} s ({100 * g['cpu_fakes_s'] / wall:.0f}%), sender "
            f"{g['cpu_sender_s']:.2f} s; fakes' share {100 * g['cpu_fakes_s'] / cpu_all:.0f}% of that; "
            f"ghapp {1000 * g['cpu_ghapp_s'] / n:.2f} ms CPU per runner; other processes on the machine "
            f"{g['cpu_others_s']:.2f} s{server_text(g)} (load average {g['loadavg_before']:.2f} before)",
            None,
        ),
        (
            "fakes' event loop",
            f"lag p99 {g['fakes_loop_lag_ms']['p99']:.1f} ms, max {g['fakes_loop_lag_ms']['max']:.1f} ms; "
            f"ghapp logged {g['log_lines']} lines",
            None,
        ),
    ]
    lines = [line for line in lines if line[0]]
    width = max(len(name) for name, _, _ in lines)
    for name, text, ok in lines:
        print(f"{verdict(ok)}  {name:<{width}}  {text}")
    for line in g.get("profile_summary", []):
        print(f"      profile: {line}")
    return all(ok is not False for _, _, ok in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="queued workflow jobs (deliveries)")
    parser.add_argument("--repos", type=int, default=10, help="repositories the jobs are spread over")
    parser.add_argument("--installations", type=int, default=3, help="installations the repos spread over")
    parser.add_argument("--orgs-only", action="store_true", help="every installation an organisation")
    parser.add_argument(
        "--max-runners",
        type=int,
        default=None,
        help="the pool's max_runners (default: --jobs); the benchmark waits for min(jobs, max-runners)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="deliveries / requests in flight")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: send this many deliveries per second (still at most --concurrency in flight); "
        "default 0: closed loop, each sender sends its next delivery when the last is answered",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each phase")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds to wait for /readyz")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each timed phase, wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="write to the real API server this kubeconfig names (a fresh namespace per phase, deleted "
        "after) instead of the emulator; e.g. one of ../shared/k8s/up",
    )
    parser.add_argument(
        "--real-cluster",
        type=Path,
        default=None,
        metavar="DIR",
        help="like --kubeconfig, on a control plane started for this run with ../shared/k8s/up --dir DIR "
        "(stopped at the end)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="NAME=VALUE",
        help="a setting for ghapp (e.g. GHAPP_LAUNCH_CONCURRENCY=16); repeatable",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output (.svg, .json or .txt)")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--keep-files", action="store_true", help="keep the temp dir (ghapp's log)")
    args = parser.parse_args(argv)
    if min(args.jobs, args.repos, args.installations, args.concurrency) < 1:
        parser.error("--jobs, --repos, --installations and --concurrency must be at least 1")
    if args.installations > args.repos:
        parser.error("--installations must not exceed --repos (each installation needs a repository)")
    if args.kubeconfig is not None and args.real_cluster is not None:
        parser.error("--kubeconfig and --real-cluster exclude each other")
    if any(len(pair) != 2 for pair in args.env):
        parser.error("--env takes NAME=VALUE")
    if args.max_runners is not None and not 1 <= args.max_runners <= MAX_POOL_RUNNERS:
        parser.error(f"--max-runners must be between 1 and {MAX_POOL_RUNNERS}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in (SENDER, MINIMAL):  # a helper process: spec file in, answer file out
        spec = json.loads(Path(argv[1]).read_text())
        answer = asyncio.run(sender_main(spec) if argv[0] == SENDER else minimal_main(spec))
        Path(argv[2]).write_text(json.dumps(answer))
        return 0
    args = parse_args(argv)
    result = asyncio.run(run(args))
    ok = report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.keep_files:
        print(f"files (ghapp.log): {result['files']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
