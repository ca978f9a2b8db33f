"""/status.json, /status, `ghapp status` and `ghapp usage` of a running ghapp fed with signed webhooks."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    OTHER_ORG_INSTALLATION,
    PRIVATE_KEY_PEM,
    USER_INSTALLATION,
    WEBHOOK_SECRET,
    Ghapp,
    wait_for,
    write_pools,
)

LINUX = ["self-hosted", "linux", "x64"]


async def get(ghapp: Ghapp, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(ghapp.admin.make_url(path)) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def status_json(ghapp: Ghapp) -> dict[str, Any]:
    code, _, body = await get(ghapp, "/status.json")
    assert code == 200
    data: dict[str, Any] = json.loads(body)
    return data


async def test_status_json_says_why_each_job_waits(
    ghapp_with: Callable[..., Awaitable[Ghapp]], tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "pools.yaml", max_runners=2)
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(pools), GHAPP_ALLOWED_ACCOUNTS="acme,alice")
    running = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    ghapp.kube.fail_next(1, status=403, verb="create", resource="jobs")  # the next runner Job: forbidden
    failing = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    await ghapp.settle()
    (pool,) = (await status_json(ghapp))["pools"]
    assert pool["healthy"] is False  # its last launch failed, and says why
    assert "Forbidden" in pool["problem"]
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)  # full now
    refused = await ghapp.queue(
        installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX
    )
    await ghapp.queue(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["windows"]
    )  # not ours
    await ghapp.settle()

    status = await status_json(ghapp)
    (pool,) = status["pools"]
    assert (pool["name"], pool["active"], pool["max_runners"], pool["waiting"]) == ("linux", 2, 2, 1)
    assert pool["healthy"] is True  # a launch has worked since
    reasons = {job["id"]: (job["reason"], job["detail"]) for job in status["waiting"]}
    assert reasons[running][0] == "runner starting"
    assert reasons[failing][0] == "runner failing"
    assert "Forbidden" in reasons[failing][1]
    assert reasons[refused][0] == "refused"
    assert "account-not-allowed" in reasons[refused][1]
    capacity = [job for job in status["waiting"] if job["reason"] == "capacity"]
    assert [(j["repository"], j["pool"], j["labels"]) for j in capacity] == [("alice/tools", "linux", LINUX)]
    assert capacity[0]["detail"] == "pool linux is full (2/2 runners)"
    assert len(status["waiting"]) == 5  # the job no pool has is not ours: not listed
    (refusal,) = status["refusals"]
    assert (refusal["rule"], refusal["count"], refusal["example_repository"]) == (
        "account-not-allowed",
        1,
        "globex/site",
    )
    accounts = {i["account"]: i for i in status["installations"]}
    assert accounts["acme"]["allowed"] is True
    assert accounts["globex"]["allowed"] is False
    assert accounts["acme"]["rate_limit_remaining"] is not None  # it has made requests
    assert status["reconciler"]["last_pass_at"] is None

    # once a runner takes its job, it waits no more
    ghapp.github.register_runner(scope="org:acme", name=f"ghapp-{running}", labels=LINUX)
    ghapp.github.start_job(running, runner_name=f"ghapp-{running}")
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(running, "in_progress"))
    ghapp.kube.finish_job(NAMESPACE, f"ghapp-{running}")
    await ghapp.settle()
    await wait_for(lambda: ghapp.services.launcher.waiting("linux") == 0, what="the waiting job launched")
    await ghapp.settle()
    report = await ghapp.services.reconciler.reconcile_once()
    status = await status_json(ghapp)
    assert running not in {job["id"] for job in status["waiting"]}
    # the reconciler found the job whose launch failed still queued: it now waits for capacity
    assert [job["id"] for job in status["waiting"] if job["reason"] == "capacity"] == [failing]
    reconciler = status["reconciler"]
    assert reconciler["last_pass_at"] == ghapp.services.clock.now()
    assert reconciler["last_outcome"] == ("failed" if report.errors else "ok")
    assert set(reconciler["last_fixes"]) >= {"launched", "redelivered"}


async def test_status_never_shows_a_secret(ghapp: Ghapp) -> None:
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    _, _, body = await get(ghapp, "/status.json")
    _, content_type, page = await get(ghapp, "/status")
    assert content_type.startswith("text/html")
    secrets = [
        WEBHOOK_SECRET,
        *ghapp.github.tokens_for(ORG_INSTALLATION),
        *ghapp.github.registration_tokens("org:acme"),
        *PRIVATE_KEY_PEM.strip().splitlines()[1:-1],
    ]
    assert [s for s in secrets if s in body or s in page] == []
    settings = json.loads(body)["settings"]
    assert "webhook_secret" not in settings
    assert "private_key" not in settings
    assert settings["admin_port"] == ghapp.services.settings.admin_port
    # the admin port only: the public listener serves none of it
    async with aiohttp.ClientSession() as session:
        for path in ("/status", "/status.json"):
            async with session.get(ghapp.server.make_url(path)) as response:
                assert response.status == 404


async def test_the_page_escapes_what_github_sends(ghapp: Ghapp) -> None:
    await ghapp.queue(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, name="<script>x</script>"
    )
    await ghapp.settle()
    _, _, page = await get(ghapp, "/status")
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_ghapp_status_and_usage_in_a_terminal(
    ghapp_with: Callable[..., Awaitable[Ghapp]], tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "pools.yaml", max_runners=1)
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(pools))
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX, name="unit")
    await ghapp.settle()
    url = str(ghapp.admin.make_url("/status.json"))

    code, out, err = await run_cli("status", "--url", url)
    assert (code, err) == (0, "")
    assert "POOLS" in out
    assert "WAITING JOBS" in out
    waiting = out.split("WAITING JOBS")[1].split("\n\n")[0]
    assert "alice/tools" in waiting
    assert "unit" in waiting
    assert "capacity" in waiting
    assert "pool linux is full (1/1 runners)" in waiting
    pools_lines = out.split("POOLS")[1].split("\n\n")[0].splitlines()
    assert any(line.split()[:4] == ["linux", "1/1", "1", "healthy"] for line in pools_lines)

    code, out, err = await run_cli("usage", "--url", url)
    assert (code, err) == (0, "")
    assert out.startswith("RUNNER TIME")
    assert "ghapp restarted" in out  # up for less than a day: the window says it is short
    assert "POOLS" not in out

    code, out, _ = await run_cli("status", "--url", url, "--json")
    assert code == 0
    assert json.loads(out)["pools"][0]["name"] == "linux"

    code, _, err = await run_cli("status", "--url", "http://127.0.0.1:9/status.json")
    assert code == 2  # as every command that cannot do its job (tests/test_errors.py)
    assert err.startswith("ghapp: error: cannot read http://127.0.0.1:9/status.json")
    assert "Traceback" not in err


async def test_a_pool_whose_runners_are_outdated_says_so(ghapp: Ghapp) -> None:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    ghapp.kube.run_pod(NAMESPACE, f"ghapp-{job_id}")
    ghapp.kube.exit_pod(NAMESPACE, f"ghapp-{job_id}", exit_code=7)  # the runner is too old for GitHub
    await wait_for(lambda: ghapp.metric("ghapp_pool_healthy", pool="linux") == 0, what="the pool unhealthy")

    pools = {pool["name"]: pool for pool in (await status_json(ghapp))["pools"]}
    assert pools["linux"]["healthy"] is False
    assert pools["linux"]["outdated"] is True
    assert pools["linux"]["problem"].startswith("outdated: the runner's version is deprecated")
    assert (pools["gpu"]["healthy"], pools["gpu"]["outdated"]) == (True, False)
    _, _, page = await get(ghapp, "/status")
    assert "1 pool(s) unhealthy: linux" in page
    assert "yes: exit code 7, update the image" in page


async def test_an_installation_out_of_service_says_so(ghapp: Ghapp) -> None:
    delivery = await ghapp.github.deliver("installation", ghapp.github.suspend_installation(ORG_INSTALLATION))
    assert delivery.ok
    await ghapp.settle()
    accounts = {i["account"]: i for i in (await status_json(ghapp))["installations"]}
    assert accounts["acme"]["out_of_service"] == "suspended"
    assert accounts["alice"]["out_of_service"] is None
    _, _, page = await get(ghapp, "/status")
    assert "suspended: no runners" in page
