"""ghapp as a real process: `serve` with a kubeconfig, SIGTERM, and `reconcile --once`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ghapp import __version__, manifests, planner, policy
from ghapp.config import load_settings
from ghapp.models import WorkflowJob

from .conftest import NAMESPACE, ORG_INSTALLATION, PRIVATE_KEY_PEM, WEBHOOK_SECRET, wait_for
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator

LINUX = ["self-hosted", "linux", "x64"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def kubeconfig(kube: KubeEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": kube.url}}],
                "users": [{"name": "nobody", "user": {}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "nobody", "namespace": NAMESPACE},
                    }
                ],
            }
        )
    )
    return path


@pytest.fixture
def process_env(environ: dict[str, str], kubeconfig: Path) -> dict[str, str]:
    return {
        **environ,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBECONFIG": str(kubeconfig),
        "GHAPP_HOST": "127.0.0.1",
        "GHAPP_PORT": str(free_port()),
        "GHAPP_ADMIN_PORT": str(free_port()),
        "GHAPP_LOG_FORMAT": "json",
        "GHAPP_LOG_LEVEL": "DEBUG",
        "GHAPP_LEASE_DURATION_SECONDS": "3",
        "POD_NAME": "ghapp-test-0",
    }


@pytest.fixture
async def serving(process_env: dict[str, str]) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "serve",
        env=process_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{process_env['GHAPP_PORT']}"
    yield process, url
    if process.returncode is None:
        process.kill()
        await process.wait()


async def get_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return 0


async def wait_ready(url: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await get_status(f"{url}/readyz") != 200:
        assert loop.time() < deadline, "ghapp serve did not become ready"
        await asyncio.sleep(0.05)


async def test_serve_handles_a_job_and_stops_cleanly_on_sigterm(
    serving: tuple[asyncio.subprocess.Process, str],
    github: FakeGitHub,
    kube: KubeEmulator,
    process_env: dict[str, str],
) -> None:
    process, url = serving
    await wait_ready(url)
    github.webhook_url = f"{url}/webhook"
    job = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    delivery = await github.deliver("workflow_job", github.workflow_job_payload(job["id"], "queued"))
    assert delivery.status_code == 202
    await wait_for(lambda: len(kube.objects("secrets", NAMESPACE)) == 1, within=20, what="runner Secret")
    await wait_for(
        lambda: kube.get("leases", NAMESPACE, "ghapp-reconciler") is not None, within=20, what="lease"
    )

    # internals are on the admin port only: exposing the webhook's port never exposes them
    admin = f"http://127.0.0.1:{process_env['GHAPP_ADMIN_PORT']}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/metrics") as response:
            assert response.status == 200
            assert "ghapp_runners_launched_total" in await response.text()
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 404
        async with session.get(f"{admin}/webhook") as response:
            assert response.status == 404

    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    lease = kube.get("leases", NAMESPACE, "ghapp-reconciler")
    assert lease is not None
    assert lease["spec"].get("holderIdentity") in (None, "")  # released, not left to expire

    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    created = [line for line in lines if line["message"] == "runner Job created"]
    assert len(created) == 1
    for field in ("delivery_id", "installation_id", "repository", "workflow_job_id", "pool"):
        assert field in created[0], field
    assert created[0]["repository"] == "acme/webapp"
    text = stderr.decode()
    secrets = [
        WEBHOOK_SECRET,
        *github.tokens_for(ORG_INSTALLATION),
        *github.registration_tokens("org:acme"),
        *PRIVATE_KEY_PEM.strip().splitlines()[1:-1],
    ]
    assert [s for s in secrets if s in text] == []


async def test_reconcile_once_prints_what_it_did(
    process_env: dict[str, str], github: FakeGitHub, kube: KubeEmulator, environ: dict[str, str]
) -> None:
    # one runner Job exists for acme/webapp; two more jobs were queued there while ghapp was away
    known = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    plan = planner.plan(
        WorkflowJob.from_payload(github.workflow_job_payload(known["id"], "queued")),
        load_settings(environ),
        facts=policy.Facts(),
    )
    assert isinstance(plan, planner.RunnerPlan)
    kube.put_object("jobs", manifests.runner_job(plan))
    missed = [
        github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)["id"]
        for _ in range(2)
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "reconcile",
        "--once",
        env=process_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(stdout)
    assert report["launched"] == 2
    assert report["queued_seen"] == 3
    names = {job["metadata"]["name"] for job in kube.objects("jobs", NAMESPACE)}
    assert names == {f"ghapp-{i}" for i in [known["id"], *missed]}


async def test_serve_without_a_reachable_cluster_says_so_and_exits(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    unreachable = tmp_path / "unreachable"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gone",
                "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "nobody", "user": {}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "nobody"}}],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "serve",
        env={**process_env, "KUBECONFIG": str(unreachable)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stderr.decode()
    assert process.returncode == 2
    error = json.loads(text.splitlines()[-1])  # GHAPP_LOG_FORMAT=json: the error line is JSON too
    assert error["level"] == "error"
    assert error["message"].startswith("Kubernetes list jobs failed")
    server = yaml.safe_load(unreachable.read_text())["clusters"][0]["cluster"]["server"]
    assert error["message"].endswith(f"(API server {server}, context gone of {unreachable})")  # which cluster
    assert "Traceback" not in text
    assert "Unclosed" not in text


@pytest.mark.parametrize("wrong", ["GHAPP_APP_ID", "GHAPP_PRIVATE_KEY"])
async def test_serve_refuses_to_start_when_github_refuses_the_app(
    process_env: dict[str, str], github: FakeGitHub, wrong: str
) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    change = {"GHAPP_APP_ID": "999", "GHAPP_PRIVATE_KEY": other_key.decode()}[wrong]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "serve",
        env={**process_env, wrong: change},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stderr.decode()
    assert process.returncode == 2
    assert "Traceback" not in text
    assert "Unclosed" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert not any("serving" in line["message"] for line in lines)  # it never served
    error = lines[-1]
    assert error["level"] == "error"
    assert error["message"].startswith(
        f"GHAPP_APP_ID / GHAPP_PRIVATE_KEY: GitHub ({github.api_url}) refuses the App's JWT ("
    )
    assert "401" in error["message"]
    assert [call.status for call in github.calls_to("GET", "/app")] == [401]
    assert github.calls == github.calls_to("GET", "/app")  # nothing else was tried


async def test_serve_says_what_it_runs_with_and_warns_about_probable_mistakes(
    process_env: dict[str, str], github: FakeGitHub
) -> None:
    env = {k: v for k, v in process_env.items() if k != "GHAPP_POOLS_FILE"}  # the bundled sample
    env["GHAPP_POOL_FILE"] = process_env["GHAPP_POOLS_FILE"]  # a typo: ignored, so warned about
    env["GHAPP_LOG_LEVEL"] = "INFO"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_ready(f"http://127.0.0.1:{env['GHAPP_PORT']}")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    messages = [line["message"] for line in lines]
    first = lines[0]
    assert first["message"] == f"ghapp {__version__} starting"
    assert first["listen"] == f"http://127.0.0.1:{env['GHAPP_PORT']} (webhook, probes)"
    assert first["admin"] == f"http://127.0.0.1:{env['GHAPP_ADMIN_PORT']} (metrics, status)"
    assert (first["github"], first["app_id"]) == (github.api_url, env["GHAPP_APP_ID"])
    assert first["namespaces"] == [NAMESPACE]
    assert first["accounts"] == "accounts acme, alice, globex"
    assert first["pools_file"].endswith("ghapp/data/pools.yaml")
    assert messages[1:3] == [
        "the pools file is the sample bundled with ghapp; set GHAPP_POOLS_FILE to your own",
        "unknown setting GHAPP_POOL_FILE (did you mean GHAPP_POOLS_FILE?) is ignored",
    ]
    assert [line["level"] for line in lines[1:3]] == ["warning", "warning"]
    assert messages.index("GitHub accepts the App") < messages.index("ghapp is serving")
