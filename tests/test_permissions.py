"""app-manifest.json asks for exactly GITHUB_PERMISSIONS, and they cover every endpoint ghapp calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghapp.github import convert_manifest, endpoint_template
from ghapp.permissions import GITHUB_ENDPOINTS, GITHUB_PERMISSIONS
from ghapp.setup import DEFAULT_PORT, PLACEHOLDER_WEBHOOK_URL, app_manifest

from .conftest import (
    APP_ID,
    ORG_INSTALLATION,
    OTHER_ORG_INSTALLATION,
    USER_INSTALLATION,
    WEBHOOK_SECRET,
    Ghapp,
)
from .fakes.github import FakeGitHub
from .flows import full_flow
from .keys import PUBLIC_KEY_PEM

MANIFEST_FILE = Path(__file__).parents[1] / "app-manifest.json"


def manifest() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(MANIFEST_FILE.read_text())
    return document


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    """The fake GitHub, every installation granted exactly what app-manifest.json asks for."""
    granted = manifest()["default_permissions"]
    fake = FakeGitHub(app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET)
    for installation_id, account, kind, repos in (
        (ORG_INSTALLATION, "acme", "Organization", ["webapp", "api"]),
        (USER_INSTALLATION, "alice", "User", ["tools"]),
        (OTHER_ORG_INSTALLATION, "globex", "Organization", ["site"]),
    ):
        fake.add_installation(
            installation_id=installation_id,
            account=account,
            account_type=kind,  # type: ignore[arg-type]
            repositories=repos,
            permissions=granted,
        )
    await fake.start()
    yield fake
    await fake.close()


def test_the_manifest_asks_for_exactly_what_ghapp_needs() -> None:
    document = manifest()
    assert document["default_permissions"] == GITHUB_PERMISSIONS
    assert document["default_events"] == ["workflow_job"]
    assert document["public"] is False
    assert document["hook_attributes"] == {"url": PLACEHOLDER_WEBHOOK_URL, "active": True}
    assert document["redirect_url"] == f"http://127.0.0.1:{DEFAULT_PORT}/callback"
    # the file and what `ghapp setup` sends are the same manifest
    assert document == app_manifest(
        name=document["name"], webhook_url=PLACEHOLDER_WEBHOOK_URL, redirect_url=document["redirect_url"]
    )


def test_every_declared_endpoint_needs_only_granted_permissions() -> None:
    granted = manifest()["default_permissions"]
    for endpoint, permission in GITHUB_ENDPOINTS.items():
        assert permission is None or permission in granted, endpoint


async def test_every_endpoint_called_in_a_full_flow_is_declared(ghapp: Ghapp) -> None:
    await full_flow(ghapp)
    async with aiohttp.ClientSession() as session:
        code = ghapp.github.create_manifest_code(manifest())
        credentials = await convert_manifest(session=session, api_url=ghapp.github.api_url, code=code)
    assert credentials.id > 0

    called = {f"{c.method} {endpoint_template(c.path)}" for c in ghapp.github.calls}
    assert called - GITHUB_ENDPOINTS.keys() == set()
    assert {
        "POST /app/installations/{id}/access_tokens",
        "POST /orgs/{org}/actions/runners/registration-token",
        "POST /repos/{owner}/{repo}/actions/runners/registration-token",
        "GET /app",
        "GET /app/installations",
        "POST /app-manifests/{code}/conversions",
    } <= called
    refused = [(c.method, c.path, c.status) for c in ghapp.github.calls if c.status >= 400]
    assert refused == []  # the manifest's permissions were enough for everything


def test_a_manifest_code_never_reaches_a_metric_label() -> None:
    assert endpoint_template("/app-manifests/a1b2c3d4/conversions") == "/app-manifests/{code}/conversions"


def test_help_lists_the_install_commands() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ghapp", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    for command in ("setup", "check"):
        assert command in result.stdout
    for command in ("setup", "check"):
        detail = subprocess.run(
            [sys.executable, "-m", "ghapp", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert detail.returncode == 0
        assert "GitHub" in detail.stdout
