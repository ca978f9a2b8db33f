"""GitHub Enterprise Server: the API under https://HOST/api/v3, runners registering against https://HOST."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghapp.clock import ManualClock

from .conftest import ORG_INSTALLATION, USER_INSTALLATION, Ghapp, new_github
from .fakes.github import FakeGitHub

POOLS = """
pools:
  - name: linux
    labels: [self-hosted, linux, x64]
    runner_group: Default
  - name: jit
    mode: jit
    labels: [self-hosted, linux, jit]
    runner_group: Builders
"""


@pytest.fixture
async def github(clock: ManualClock) -> AsyncIterator[FakeGitHub]:
    fake = new_github(clock=clock, base_path="/api/v3")
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def pools_file(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    return path


async def test_everything_goes_to_the_enterprise_server(ghapp: Ghapp) -> None:
    host = ghapp.github.api_url.removesuffix("/api/v3")
    assert ghapp.github.api_url.endswith("/api/v3")
    assert ghapp.services.settings.web_url == host
    ghapp.github.add_runner_group(org="acme", group_id=3, name="Builders")

    token_job = await ghapp.queue(
        installation_id=USER_INSTALLATION, repository="alice/tools", labels=["self-hosted", "linux", "x64"]
    )
    jit_job = await ghapp.queue(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["self-hosted", "linux", "jit"]
    )
    await ghapp.settle()

    # every call reached the API under /api/v3 (the fake answers 404 to anything else) and succeeded
    assert ghapp.github.calls
    assert all(call.status < 400 for call in ghapp.github.calls), ghapp.github.calls
    assert len(ghapp.github.calls_to("POST", r"/repos/alice/tools/actions/runners/registration-token")) == 1
    assert len(ghapp.github.calls_to("GET", r"/orgs/acme/actions/runner-groups")) == 1
    assert len(ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/generate-jitconfig")) == 1

    jobs = {job["metadata"]["name"]: job for job in ghapp.runner_jobs()}
    token_pod = jobs[f"ghapp-{token_job}"]["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in token_pod["containers"][0]["env"]}
    assert env["ACTIONS_RUNNER_INPUT_URL"] == f"{host}/alice/tools"

    secrets = {secret["metadata"]["name"]: secret for secret in ghapp.runner_secrets()}
    encoded = base64.b64decode(secrets[f"ghapp-{jit_job}"]["data"]["jitconfig"]).decode()
    files = json.loads(base64.b64decode(encoded))
    runner_settings = json.loads(base64.b64decode(files[".runner"]))
    assert runner_settings["GitHubUrl"] == f"{host}/acme"
    assert runner_settings["PoolId"] == 3
