"""``ghapp setup`` end to end: the local page, GitHub's redirect (simulated), the conversion, the stores."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from ghapp.clock import SystemClock
from ghapp.config import Settings
from ghapp.errors import ConfigError, GhappError, GitHubError, KubernetesError
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics
from ghapp.permissions import GITHUB_PERMISSIONS
from ghapp.setup import (
    CREDENTIAL_KEYS,
    PLACEHOLDER_WEBHOOK_URL,
    DirectoryStore,
    KubeSecretStore,
    SetupServer,
    check_options,
    credentials_secret,
    new_app_url,
)

from .conftest import APP_ID, WEBHOOK_SECRET
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator
from .keys import PUBLIC_KEY_PEM
from .kubeconfig import write_kubeconfig

TARGET_NAMESPACE = "ghapp"


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.method = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action, self.method = values["action"], values["method"]
        elif tag == "input":
            self.fields[values["name"]] = values["value"]


@dataclass
class Form:
    action: str
    method: str
    manifest: dict[str, Any]
    state: str


def parse_form(page: str) -> Form:
    parser = _FormParser()
    parser.feed(page)
    return Form(parser.action, parser.method, json.loads(parser.fields["manifest"]), parser.fields["state"])


async def fetch(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


@pytest.fixture
async def api_client(kube: KubeEmulator) -> AsyncIterator[KubeTransport]:
    async with KubeTransport(kube.configuration()) as client:
        yield client


def kube_client(api_client: KubeTransport) -> KubeClient:
    return KubeClient(http=api_client, namespace=TARGET_NAMESPACE, clock=SystemClock(), metrics=Metrics())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_setup(
    session: aiohttp.ClientSession, store: Any, settings: Settings, **kwargs: Any
) -> tuple[SetupServer, str]:
    server = SetupServer(
        session=session,
        store=store,
        github_api_url=settings.github_api_url,
        web_url=settings.web_url,
        port=0,
        **kwargs,
    )
    await store.preflight()
    return server, await server.start()


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


async def test_the_page_posts_the_manifest_and_the_callback_fills_the_secret(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, api_client: KubeTransport, session: Any
) -> None:
    store = KubeSecretStore(kube=kube_client(api_client), name="ghapp-credentials", replace=False)
    server, page_url = await start_setup(session, store, settings)
    try:
        status, page = await fetch(page_url)
        assert status == 200
        form = parse_form(page)
        assert form.method == "post"
        action = urlsplit(form.action)
        assert f"{action.scheme}://{action.netloc}{action.path}" == f"{settings.web_url}/settings/apps/new"
        assert parse_qs(action.query) == {"state": [form.state]}
        assert len(form.state) >= 40
        assert form.manifest["default_permissions"] == GITHUB_PERMISSIONS
        assert form.manifest["default_events"] == ["workflow_job"]
        assert form.manifest["public"] is False
        assert form.manifest["redirect_url"] == f"{server.url}/callback"
        assert form.manifest["hook_attributes"]["active"] is True
        # the page says where the credentials go, where webhooks go, and whose App this will be
        text = html.unescape(page)
        assert f"stored in Secret {TARGET_NAMESPACE}/ghapp-credentials (keys " in text
        assert f"GitHub will send webhooks to <code>{PLACEHOLDER_WEBHOOK_URL}</code> — a placeholder" in text
        assert "it cannot be installed on an organisation" in text
        assert "ghapp setup --org ORG" in text

        # GitHub: the person confirms, GitHub makes a code and redirects the browser back
        code = github.create_manifest_code(form.manifest)
        callback = f"{form.manifest['redirect_url']}?code={code}&state={form.state}"
        status, done = await fetch(callback)
        assert status == 200, done
        credentials = await asyncio.wait_for(server.wait(), 10)

        app = github.converted_manifests[-1]["app"]
        assert github.calls_to("POST", f"/app-manifests/{code}/conversions")[0].auth == "none"
        secret = kube.get("secrets", TARGET_NAMESPACE, "ghapp-credentials")
        assert secret is not None
        assert decoded(secret) == {
            "app-id": str(app["id"]),
            "private-key": app["pem"],
            "webhook-secret": app["webhook_secret"],
            "client-id": app["client_id"],
            "client-secret": app["client_secret"],
        }
        assert credentials.install_url == f"{app['html_url']}/installations/new"
        assert credentials.install_url in done
        for value in (app["pem"], app["webhook_secret"], app["client_secret"]):
            assert value not in done
            assert value not in repr(credentials)

        # the same redirect again (a replay): refused, nothing changes
        writes = len(kube.writes())
        status, again = await fetch(callback)
        assert status == 400
        assert "already used" in again
        assert len(kube.writes()) == writes
        assert len(github.converted_manifests) == 1
    finally:
        await server.close()


async def test_a_foreign_or_missing_state_is_refused_and_the_real_one_still_works(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, api_client: KubeTransport, session: Any
) -> None:
    store = KubeSecretStore(kube=kube_client(api_client), name="ghapp-credentials", replace=False)
    server, page_url = await start_setup(session, store, settings)
    try:
        form = parse_form((await fetch(page_url))[1])
        code = github.create_manifest_code(form.manifest)
        for query in (f"code={code}&state=forged-{form.state}", f"code={code}", f"code={code}&state="):
            status, page = await fetch(f"{server.url}/callback?{query}")
            assert status == 400
            assert "unknown state" in page
        assert github.converted_manifests == []
        assert kube.writes() == []
        # a page reached under another host name (DNS rebinding) is refused too
        status, _ = await fetch(page_url, headers={"Host": "evil.example:80"})
        assert status == 400

        status, _ = await fetch(f"{server.url}/callback?code={code}&state={form.state}")
        assert status == 200
        await asyncio.wait_for(server.wait(), 10)
        assert kube.get("secrets", TARGET_NAMESPACE, "ghapp-credentials") is not None
    finally:
        await server.close()


async def test_a_foreign_code_is_refused_and_setup_fails(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, api_client: KubeTransport, session: Any
) -> None:
    store = KubeSecretStore(kube=kube_client(api_client), name="ghapp-credentials", replace=False)
    server, page_url = await start_setup(session, store, settings)
    try:
        form = parse_form((await fetch(page_url))[1])
        status, page = await fetch(f"{server.url}/callback?code=notacodegithubmade&state={form.state}")
        assert status == 400
        assert "404" in page
        with pytest.raises(GitHubError, match="404"):
            await asyncio.wait_for(server.wait(), 10)
        assert kube.writes() == []
    finally:
        await server.close()


async def test_files_are_written_with_mode_0600(
    settings: Settings, github: FakeGitHub, tmp_path: Path, session: Any
) -> None:
    directory = tmp_path / "credentials"
    server, page_url = await start_setup(
        session, DirectoryStore(directory=directory, replace=False), settings
    )
    try:
        form = parse_form((await fetch(page_url))[1])
        code = github.create_manifest_code(form.manifest)
        status, _ = await fetch(f"{server.url}/callback?code={code}&state={form.state}")
        assert status == 200
        await asyncio.wait_for(server.wait(), 10)
    finally:
        await server.close()
    app = github.converted_manifests[-1]["app"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(CREDENTIAL_KEYS)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (directory / "private-key").read_text().strip() == app["pem"].strip()
    assert (directory / "app-id").read_text().strip() == str(app["id"])
    assert (directory / "webhook-secret").read_text().strip() == app["webhook_secret"]

    # a second run refuses to overwrite them before any App is made, unless told to
    with pytest.raises(ConfigError, match="--replace"):
        await DirectoryStore(directory=directory, replace=False).preflight()
    (directory / "client-id").chmod(0o644)
    replacing = DirectoryStore(directory=directory, replace=True)
    await replacing.preflight()
    await replacing.store(dict.fromkeys(CREDENTIAL_KEYS, "new"))
    assert (directory / "client-id").read_text() == "new\n"
    assert stat.S_IMODE((directory / "client-id").stat().st_mode) == 0o600


async def test_an_existing_secret_is_kept_unless_replace(
    kube: KubeEmulator, api_client: KubeTransport
) -> None:
    kube.put_object(
        "secrets",
        credentials_secret(
            dict.fromkeys(CREDENTIAL_KEYS, "old"), name="ghapp-credentials", namespace="ghapp"
        ),
    )
    with pytest.raises(KubernetesError, match="--replace"):
        await KubeSecretStore(
            kube=kube_client(api_client), name="ghapp-credentials", replace=False
        ).preflight()
    replacing = KubeSecretStore(kube=kube_client(api_client), name="ghapp-credentials", replace=True)
    await replacing.preflight()
    secret = kube.get("secrets", TARGET_NAMESPACE, "ghapp-credentials")
    assert secret is not None
    assert set(decoded(secret).values()) == {"old"}  # the preflight is a dry run
    await replacing.store(dict.fromkeys(CREDENTIAL_KEYS, "new"))
    secret = kube.get("secrets", TARGET_NAMESPACE, "ghapp-credentials")
    assert secret is not None
    assert set(decoded(secret).values()) == {"new"}


async def test_org_apps_and_github_enterprise_server(tmp_path: Path, session: Any) -> None:
    assert new_app_url("https://github.com", org=None) == "https://github.com/settings/apps/new"
    assert (
        new_app_url("https://github.com", org="acme")
        == "https://github.com/organizations/acme/settings/apps/new"
    )
    ghes = FakeGitHub(
        app_id=APP_ID, public_key_pem=PUBLIC_KEY_PEM, webhook_secret=WEBHOOK_SECRET, base_path="/api/v3"
    )
    api_url = await ghes.start()
    try:
        settings = Settings.model_validate(
            {"github_api_url": api_url, "pools": [{"name": "linux", "labels": ["self-hosted"]}]}
        )
        assert settings.web_url == api_url.removesuffix("/api/v3")
        store = DirectoryStore(directory=tmp_path / "out", replace=False)
        server, page_url = await start_setup(session, store, settings, org="acme")
        try:
            page = (await fetch(page_url))[1]
            form = parse_form(page)
            assert form.action.startswith(f"{settings.web_url}/organizations/acme/settings/apps/new?")
            files = "app-id, private-key, webhook-secret, client-id, client-secret"
            assert f"stored in files {files} in {tmp_path / 'out'}" in html.unescape(page)
            assert "personal account" not in page  # an organisation's App: no warning
            code = ghes.create_manifest_code(form.manifest)
            status, _ = await fetch(f"{server.url}/callback?code={code}&state={form.state}")
            assert status == 200
            credentials = await asyncio.wait_for(server.wait(), 10)
            assert credentials.html_url.startswith(settings.web_url)
            assert ghes.calls_to("POST", f"/app-manifests/{code}/conversions")
        finally:
            await server.close()
    finally:
        await ghes.close()


async def test_a_store_failure_after_the_app_exists_says_what_to_do(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, api_client: KubeTransport, session: Any
) -> None:
    store = KubeSecretStore(kube=kube_client(api_client), name="ghapp-credentials", replace=False)
    server, page_url = await start_setup(session, store, settings)
    try:
        form = parse_form((await fetch(page_url))[1])
        code = github.create_manifest_code(form.manifest)
        kube.fail_next(1, status=403, verb="create", resource="secrets")
        status, page = await fetch(f"{server.url}/callback?code={code}&state={form.state}")
        assert status == 500
        app = github.converted_manifests[-1]["app"]
        assert app["html_url"] in page
        assert app["pem"] not in page
        with pytest.raises(GhappError, match="private key"):
            await asyncio.wait_for(server.wait(), 10)
    finally:
        await server.close()


async def test_the_command_end_to_end(github: FakeGitHub, kube: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=kube.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "setup",
        "--port",
        "0",
        "--org",
        "acme",
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GHAPP_GITHUB_API_URL": github.api_url,
            "KUBECONFIG": str(kubeconfig),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert first.startswith("Open http://127.0.0.1:"), first
        page_url = first.split()[1]
        form = parse_form((await fetch(page_url))[1])
        assert "/organizations/acme/settings/apps/new" in form.action
        code = github.create_manifest_code(form.manifest)
        status, _ = await fetch(f"{form.manifest['redirect_url']}?code={code}&state={form.state}")
        assert status == 200
        rest, errors = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    out = first + rest.decode()
    assert process.returncode == 0, errors.decode()
    app = github.converted_manifests[-1]["app"]
    assert f"{app['html_url']}/installations/new" in out
    assert "ghapp/ghapp-credentials" in out
    for value in (app["pem"], app["webhook_secret"], app["client_secret"], code):
        assert value not in out + errors.decode()
    secret = kube.get("secrets", TARGET_NAMESPACE, "ghapp-credentials")
    assert secret is not None
    assert decoded(secret)["app-id"] == str(app["id"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"webhook_url": "http://ci.acme.dev/webhook"},
            "--webhook-url: 'http://ci.acme.dev/webhook' is not an https",
        ),
        ({"webhook_url": "ci.acme.dev/webhook"}, "is not an https URL"),
        ({"webhook_url": "https://ci.acme.dev"}, "has no path; ghapp receives webhooks at /webhook"),
        ({"webhook_url": "https://ci.acme.dev/"}, "has no path"),
        ({"webhook_url": "https://ci.acme.dev/webhook?x=1"}, "has a query or fragment"),
        ({"org": "acme corp"}, "--org: 'acme corp' is not an organisation login"),
        ({"org": "-acme"}, "--org: '-acme' is not an organisation login"),
        ({"org": "a" * 40}, "at most 39 characters"),
        ({"port": 99999}, "--port: 99999 is not a port number"),
        ({"port": -1}, "--port: -1 is not a port number"),
    ],
)
def test_setup_options_are_checked_before_anything_happens(options: dict[str, Any], message: str) -> None:
    given: dict[str, Any] = {"org": None, "webhook_url": PLACEHOLDER_WEBHOOK_URL, "port": 0, **options}
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options(**given)


def test_good_setup_options_pass() -> None:
    check_options(org="acme-corp", webhook_url="https://ci.acme.dev/gh/webhook", port=8765)
    check_options(org=None, webhook_url=PLACEHOLDER_WEBHOOK_URL, port=0)
