"""``ghapp send-test-webhook`` against a running ghapp: the command as a subprocess, ghapp on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from ghapp import testwebhook
from ghapp.config import load_settings

from .conftest import WEBHOOK_SECRET, Ghapp


async def send_test_webhook(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "send-test-webhook",
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def deliveries(ghapp: Ghapp, event: str, action: str, outcome: str) -> float:
    return ghapp.metric("ghapp_webhook_deliveries_total", event=event, action=action, outcome=outcome)


async def test_a_ping_proves_the_secret_and_the_route(ghapp: Ghapp, environ: dict[str, str]) -> None:
    status, out, err = await send_test_webhook("--url", ghapp.webhook_url, env=environ)
    assert (status, err) == (0, "")
    first, answer = out.splitlines()
    assert first.startswith(f"POST {ghapp.webhook_url}: ping delivery ")
    assert first.endswith(", signed with GHAPP_WEBHOOK_SECRET")
    assert answer == '200 OK: {"msg": "pong"} — the route and the secret work'
    assert deliveries(ghapp, "ping", "", "pong") == 1
    assert WEBHOOK_SECRET not in out


async def test_a_workflow_job_is_accepted_and_starts_nothing(ghapp: Ghapp, environ: dict[str, str]) -> None:
    status, out, _ = await send_test_webhook(
        "--url",
        ghapp.webhook_url,
        "--event",
        "workflow_job",
        "--labels",
        "self-hosted,linux",
        "x64",
        env=environ,
    )
    assert status == 0, out
    lines = out.splitlines()
    assert lines[1].startswith("workflow_job action waiting with labels ['self-hosted', 'linux', 'x64']: ")
    assert lines[1].endswith("these labels match pool linux")
    assert lines[2] == '202 Accepted: {"msg": "accepted"} — the route and the secret work'
    await ghapp.settle()
    assert deliveries(ghapp, "workflow_job", "waiting", "accepted") == 1
    assert ghapp.runner_jobs() == []
    assert ghapp.github.calls == []  # nothing was asked of GitHub


async def test_a_wrong_secret_is_reported_with_what_to_do(ghapp: Ghapp, environ: dict[str, str]) -> None:
    env = {**environ, "GHAPP_WEBHOOK_SECRET": "not-the-same"}
    status, out, _ = await send_test_webhook("--url", ghapp.webhook_url, env=env)
    assert status == 1
    assert out.splitlines()[-1] == (
        '401 Unauthorized: {"error": "bad or missing signature"} — the signature was refused: '
        "GHAPP_WEBHOOK_SECRET here differs from the running ghapp's"
    )
    assert deliveries(ghapp, "unverified", "", "bad or missing signature") == 1


async def test_nothing_listening_is_one_error_line(environ: dict[str, str]) -> None:
    url = "http://127.0.0.1:1/webhook"
    status, out, err = await send_test_webhook("--url", url, env=environ)
    assert status == 2
    assert out.startswith(f"POST {url}: ping delivery ")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"ghapp: error: --url: cannot deliver to {url}: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8181/webhook"),
        ("::", "http://[::1]:8181/webhook"),
        ("10.1.2.3", "http://10.1.2.3:8181/webhook"),
        ("fd00::5", "http://[fd00::5]:8181/webhook"),
    ],
)
def test_the_default_url_is_the_local_ghapp(pools_file: Path, host: str, url: str) -> None:
    settings = load_settings({"GHAPP_POOLS_FILE": str(pools_file), "GHAPP_HOST": host, "GHAPP_PORT": "8181"})
    assert testwebhook.default_url(settings) == url


def test_the_signature_is_github_s() -> None:
    # the example in GitHub's docs ("Validating webhook deliveries")
    assert testwebhook.signature(b"Hello, World!", secret="It's a Secret to Everybody") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    delivery = testwebhook.signed("ping", {"zen": "x"}, secret="s", guid="g-1")
    assert delivery.body == b'{"zen":"x"}'
    assert delivery.headers["X-GitHub-Delivery"] == "g-1"
    assert delivery.headers["X-Hub-Signature-256"] == testwebhook.signature(b'{"zen":"x"}', secret="s")
