"""``ghapp setup``: create the GitHub App from its manifest in a browser, then store its credentials.

The flow (GitHub's "App manifest" flow):

1. a small local page (``http://127.0.0.1:PORT/``) holds a form that POSTs the manifest and a random
   ``state`` to GitHub's "new App" page (a user's or an organisation's);
2. the person names the App and confirms; GitHub redirects the browser to ``/callback?code=…&state=…``;
3. the callback checks ``state`` (one use only), trades ``code`` for the App's id, private key and secrets
   (``POST /app-manifests/{code}/conversions``), and writes them to a Kubernetes Secret or to files.

The pure parts (the manifest, the page, the Secret) are plain functions; the server and the stores do I/O.
Credentials are never printed, logged or shown on a page.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TextIO
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client as k8s

from ghapp.clock import SystemClock
from ghapp.config import ACCOUNT_LOGIN
from ghapp.errors import ConfigError, GhappError, GitHubError, KubernetesError
from ghapp.github import AppCredentials, convert_manifest
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics
from ghapp.permissions import GITHUB_PERMISSIONS

DEFAULT_PORT: Final = 8765
DEFAULT_NAME: Final = "ghapp"
DEFAULT_NAMESPACE: Final = "ghapp"
SECRET_NAME: Final = "ghapp-credentials"
PLACEHOLDER_WEBHOOK_URL: Final = "https://ghapp.example.com/webhook"
MAX_PORT: Final = 65535
MAX_LOGIN: Final = 39
"""GitHub's longest account login."""
EVENTS: Final = ("workflow_job",)

APP_ID_KEY: Final = "app-id"
PRIVATE_KEY_KEY: Final = "private-key"
WEBHOOK_SECRET_KEY: Final = "webhook-secret"
CLIENT_ID_KEY: Final = "client-id"
CLIENT_SECRET_KEY: Final = "client-secret"
CREDENTIAL_KEYS: Final = (APP_ID_KEY, PRIVATE_KEY_KEY, WEBHOOK_SECRET_KEY, CLIENT_ID_KEY, CLIENT_SECRET_KEY)
"""Keys of the credentials Secret (and file names with ``--output-dir``); deploy/ mounts these."""


# -- pure ----------------------------------------------------------------------------------------------


def app_manifest(*, name: str, webhook_url: str, redirect_url: str, url: str | None = None) -> dict[str, Any]:
    """The GitHub App manifest: private, ``workflow_job`` events, exactly `GITHUB_PERMISSIONS`.

    `url` (the App's homepage) defaults to the webhook URL's origin.
    """
    parts = urlsplit(webhook_url)
    return {
        "name": name,
        "url": url or f"{parts.scheme}://{parts.netloc}",
        "description": "Ephemeral self-hosted GitHub Actions runners as Kubernetes Jobs",
        "hook_attributes": {"url": webhook_url, "active": True},
        "redirect_url": redirect_url,
        "public": False,
        "default_events": list(EVENTS),
        "default_permissions": dict(GITHUB_PERMISSIONS),
    }


def check_options(*, org: str | None, webhook_url: str, port: int) -> None:
    """Raise `ConfigError` naming the option if `org`, `webhook_url` or `port` cannot work (pure)."""
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"--port: {port} is not a port number (0 to {MAX_PORT}; 0: any free port)")
    if org is not None and (len(org) > MAX_LOGIN or not ACCOUNT_LOGIN.match(org)):
        raise ConfigError(
            f"--org: {org!r} is not an organisation login (letters, digits and single '-', at most "
            f"{MAX_LOGIN} characters; the name in https://github.com/ORG)"
        )
    parts = urlsplit(webhook_url)
    example = "https://ghapp.example.com/webhook"
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            f"--webhook-url: {webhook_url!r} is not an https URL; GitHub must reach ghapp over https, "
            f"e.g. {example}"
        )
    if parts.path in ("", "/"):
        raise ConfigError(
            f"--webhook-url: {webhook_url!r} has no path; ghapp receives webhooks at /webhook, e.g. {example}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--webhook-url: {webhook_url!r} has a query or fragment; give only host and path")


def new_app_url(web_url: str, *, org: str | None) -> str:
    """GitHub's "register a new App from a manifest" page, for a user account or organisation `org`."""
    if org:
        return f"{web_url}/organizations/{org}/settings/apps/new"
    return f"{web_url}/settings/apps/new"


def credential_values(credentials: AppCredentials) -> dict[str, str]:
    """The credentials by Secret key / file name (reveals the secrets: only for the one place they go)."""
    return {
        APP_ID_KEY: str(credentials.id),
        PRIVATE_KEY_KEY: credentials.pem.reveal(),
        WEBHOOK_SECRET_KEY: credentials.webhook_secret.reveal(),
        CLIENT_ID_KEY: credentials.client_id,
        CLIENT_SECRET_KEY: credentials.client_secret.reveal(),
    }


def credentials_secret(values: Mapping[str, str], *, name: str, namespace: str) -> dict[str, Any]:
    """The Kubernetes Secret that holds the App's credentials (what deploy/ mounts)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ghapp", "app.kubernetes.io/component": "credentials"},
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;line-height:1.5}"
        "button{font-size:1.1em;padding:.5em 1em}code{background:#eee;padding:0 .2em}"
        ".warning{background:#fff3cd;padding:.5em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


PERSONAL_ACCOUNT_WARNING: Final = (
    "Without --org the App belongs to your personal account. It is a private App, and a private App can "
    "only be installed on the account that owns it: it cannot be installed on an organisation. To run "
    "runners for an organisation, stop here and run ghapp setup --org ORG (you must be an owner of ORG)."
)


def form_page(
    *,
    action: str,
    manifest: Mapping[str, Any],
    state: str,
    org: str | None,
    store: str = "",
    webhook_url: str = "",
) -> str:
    """The local page: what will be created and where its credentials go, and one button that POSTs the
    manifest and `state` to GitHub."""
    owner = f"the organisation <b>{html.escape(org)}</b>" if org else "your personal account"
    target = html.escape(f"{action}?{urlencode({'state': state})}", quote=True)
    facts = []
    if webhook_url:
        hook = f"<p>GitHub will send webhooks to <code>{html.escape(webhook_url)}</code>"
        if webhook_url == PLACEHOLDER_WEBHOOK_URL:
            hook += " — a placeholder: set the real https://YOUR-HOST/webhook in the App's settings later"
        facts.append(hook + ".</p>\n")
    if store:
        facts.append(
            f"<p>Its credentials will be stored in {html.escape(store)}; they are never shown.</p>\n"
        )
    if not org:
        facts.append(f'<p class="warning"><b>Note:</b> {html.escape(PERSONAL_ACCOUNT_WARNING)}</p>\n')
    return _page(
        "Create the ghapp GitHub App",
        f"<p>This registers a private GitHub App owned by {owner}, with the permissions ghapp needs "
        f"({html.escape(', '.join(f'{k}: {v}' for k, v in sorted(GITHUB_PERMISSIONS.items())))}) "
        "and the <code>workflow_job</code> event. GitHub lets you change its name first.</p>\n"
        + "".join(facts)
        + f'<form action="{target}" method="post">\n'
        f'<input type="hidden" name="manifest" value="{html.escape(json.dumps(manifest), quote=True)}">\n'
        f'<input type="hidden" name="state" value="{html.escape(state, quote=True)}">\n'
        '<button type="submit">Create GitHub App</button>\n</form>',
    )


def message_page(title: str, *paragraphs: str) -> str:
    """A plain result page; every paragraph is escaped."""
    return _page(title, "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs))


# -- where credentials go --------------------------------------------------------------------------------


class CredentialStore(Protocol):
    """Somewhere to keep the App's credentials."""

    def describe(self) -> str:
        """Where, for people (no secrets)."""
        ...

    async def preflight(self) -> None:
        """Raise `GhappError` now, before an App exists, if `store` would fail (exists, no access…)."""
        ...

    async def store(self, values: Mapping[str, str]) -> None:
        """Write the credentials."""
        ...


class DirectoryStore:
    """One file per credential (mode 0600) in a directory (mode 0700 if created)."""

    def __init__(self, *, directory: Path, replace: bool) -> None:
        self.directory = directory
        self.replace = replace

    def describe(self) -> str:
        return f"files {', '.join(CREDENTIAL_KEYS)} in {self.directory}"

    async def preflight(self) -> None:
        await asyncio.to_thread(self._preflight)

    def _preflight(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"--output-dir: {self.directory} exists and is not a directory")
        existing = [key for key in CREDENTIAL_KEYS if (self.directory / key).exists()]
        if existing and not self.replace:
            raise ConfigError(
                f"--output-dir: {self.directory} already holds {', '.join(existing)}; "
                "pass --replace to overwrite them"
            )

    async def store(self, values: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._store, dict(values))

    def _store(self, values: dict[str, str]) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for key, value in values.items():
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if self.replace else os.O_EXCL)
                fd = os.open(self.directory / key, flags, 0o600)
                try:
                    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
                    os.write(fd, value.encode() + (b"" if value.endswith("\n") else b"\n"))
                finally:
                    os.close(fd)
        except OSError as exc:
            raise ConfigError(f"--output-dir: cannot write to {self.directory}: {exc.strerror}") from None


class KubeSecretStore:
    """A Kubernetes Secret (``ghapp-credentials`` by default) in the namespace ghapp will run in."""

    def __init__(self, *, kube: KubeClient, name: str, replace: bool) -> None:
        self.kube = kube
        self.name = name
        self.replace = replace

    def describe(self) -> str:
        return f"Secret {self.kube.namespace}/{self.name} (keys {', '.join(CREDENTIAL_KEYS)})"

    async def preflight(self) -> None:
        placeholder = dict.fromkeys(CREDENTIAL_KEYS, "")
        await self._write(placeholder, dry_run=True)

    async def store(self, values: Mapping[str, str]) -> None:
        await self._write(values, dry_run=False)

    async def _write(self, values: Mapping[str, str], *, dry_run: bool) -> None:
        body = credentials_secret(values, name=self.name, namespace=self.kube.namespace)
        try:
            await self.kube.write_secret(body, replace=self.replace, dry_run=dry_run)
        except KubernetesError as exc:
            hint = "; pass --replace to overwrite it" if exc.status == 409 else ""
            raise KubernetesError(f"cannot write {self.describe()}: {exc}{hint}", status=exc.status) from None


# -- the local server ----------------------------------------------------------------------------------


class SetupServer:
    """The local page and the callback GitHub redirects to; finishes after the first genuine callback."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        store: CredentialStore,
        github_api_url: str,
        web_url: str,
        org: str | None = None,
        name: str = DEFAULT_NAME,
        webhook_url: str = PLACEHOLDER_WEBHOOK_URL,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        self._session = session
        self._store = store
        self._github_api_url = github_api_url
        self._web_url = web_url
        self._org = org
        self._name = name
        self._webhook_url = webhook_url
        self._host = host
        self._port = port
        self._state = secrets.token_urlsafe(32)
        self._state_used = False
        self._runner: web.AppRunner | None = None
        self._result: asyncio.Future[AppCredentials] | None = None
        self.url = ""

    @property
    def redirect_url(self) -> str:
        return f"{self.url}/callback"

    def manifest(self) -> dict[str, Any]:
        """The manifest the page sends (its redirect points back here)."""
        return app_manifest(name=self._name, webhook_url=self._webhook_url, redirect_url=self.redirect_url)

    async def start(self) -> str:
        """Listen (port 0: any free port); return the page's URL."""
        self._result = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/callback", self._callback)
        # no access log: the callback's query string carries the one-time code
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ConfigError(
                f"--port: cannot listen on {self._host}:{self._port}: "
                f"{os.strerror(exc.errno) if exc.errno else exc}"
            ) from None
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self.url + "/"

    async def wait(self) -> AppCredentials:
        """The new App's credentials, once stored; raises `GhappError` if the genuine callback failed."""
        assert self._result is not None, "start() first"
        return await asyncio.shield(self._result)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- handlers ----------------------------------------------------------------------------------------

    def _foreign_host(self, request: web.Request) -> bool:
        """True unless the request names this server (a DNS-rebinding page could otherwise read `state`)."""
        ours = urlsplit(self.url).netloc
        return request.host not in (ours, ours.replace("127.0.0.1", "localhost", 1))

    async def _index(self, request: web.Request) -> web.Response:
        if self._foreign_host(request):
            return _html(400, message_page("Wrong address", f"Open {self.url}/ instead."))
        action = new_app_url(self._web_url, org=self._org)
        page = form_page(
            action=action,
            manifest=self.manifest(),
            state=self._state,
            org=self._org,
            store=self._store.describe(),
            webhook_url=self._webhook_url,
        )
        return _html(200, page)

    async def _callback(self, request: web.Request) -> web.Response:
        if self._foreign_host(request):
            return _html(400, message_page("Wrong address", f"Open {self.url}/ instead."))
        state = request.query.get("state", "")
        code = request.query.get("code", "")
        if not state or not hmac.compare_digest(state.encode(), self._state.encode()):
            return _html(
                400,
                message_page(
                    "Refused: unknown state",
                    "This request did not come from the page this ghapp setup served, so nothing was done.",
                    f"To create the App, open {self.url}/ and use its button.",
                ),
            )
        if self._state_used:
            return _html(
                400,
                message_page(
                    "Refused: already used",
                    "This link was used once already; it cannot be used again. Nothing was done.",
                ),
            )
        self._state_used = True
        if not code:
            return self._fail(400, GitHubError("GitHub's redirect carries no code"), created=None)
        try:
            credentials = await convert_manifest(
                session=self._session, api_url=self._github_api_url, code=code
            )
        except GitHubError as exc:
            return self._fail(400 if exc.status in (400, 404, 422) else 502, exc, created=None)
        try:
            await self._store.store(credential_values(credentials))
        except GhappError as exc:
            return self._fail(500, exc, created=credentials)
        assert self._result is not None
        self._result.set_result(credentials)
        return _html(
            200,
            message_page(
                f"Created GitHub App {credentials.slug}",
                f"App id {credentials.id}; its credentials are in {self._store.describe()}.",
                f"Next, install it on an organisation or on repositories: {credentials.install_url}",
                "You can close this page; ghapp setup has finished.",
            ),
        )

    def _fail(self, status: int, error: GhappError, created: AppCredentials | None) -> web.Response:
        assert self._result is not None
        paragraphs = [str(error)]
        if created is not None:
            paragraphs.append(
                f"The App {created.slug} was created ({created.html_url}), but its credentials could not "
                "be stored. Generate a new private key and client secret in the App's settings, or delete "
                "the App and run ghapp setup again."
            )
            error = GhappError(" ".join(paragraphs))
        else:
            paragraphs.append("Run ghapp setup again to start over.")
        if not self._result.done():
            self._result.set_exception(error)
        return _html(status, message_page("ghapp setup failed", *paragraphs))


def _html(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


# -- the command ---------------------------------------------------------------------------------------


async def run(
    *,
    github_api_url: str,
    web_url: str,
    kube_configuration: k8s.Configuration | None,
    namespace: str = DEFAULT_NAMESPACE,
    secret_name: str = SECRET_NAME,
    output_dir: Path | None = None,
    replace: bool = False,
    org: str | None = None,
    name: str = DEFAULT_NAME,
    webhook_url: str = PLACEHOLDER_WEBHOOK_URL,
    port: int = DEFAULT_PORT,
    out: TextIO = sys.stdout,
) -> int:
    """``ghapp setup``: serve the page until GitHub calls back once, store the credentials; 0 on success.

    Credentials go to files in `output_dir` if given, else to a Secret through `kube_configuration`.
    Raises `GhappError` (before any App exists) if the destination cannot be written.
    """
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=10)) as session:
        http = (
            None
            if output_dir is not None or kube_configuration is None
            else KubeTransport(kube_configuration)
        )
        try:
            store: CredentialStore
            if http is None:
                assert output_dir is not None
                store = DirectoryStore(directory=output_dir, replace=replace)
            else:
                kube = KubeClient(http=http, namespace=namespace, clock=SystemClock(), metrics=Metrics())
                store = KubeSecretStore(kube=kube, name=secret_name, replace=replace)
            await store.preflight()
            server = SetupServer(
                session=session,
                store=store,
                github_api_url=github_api_url,
                web_url=web_url,
                org=org,
                name=name,
                webhook_url=webhook_url,
                port=port,
            )
            page = await server.start()
            try:
                print(f'Open {page} in a browser on this machine and press "Create GitHub App".', file=out)
                print(f"The credentials will go to {store.describe()}.", file=out)
                print(f"GitHub will send webhooks to {webhook_url}.", file=out, flush=True)
                if not org:
                    print(f"Note: {PERSONAL_ACCOUNT_WARNING}", file=out, flush=True)
                try:
                    credentials = await server.wait()
                except GhappError as exc:
                    print(f"ghapp: error: setup failed: {exc}", file=sys.stderr, flush=True)
                    return 1
            finally:
                await server.close()
        finally:
            if http is not None:
                await http.close()
    print(f"Created GitHub App {credentials.slug} (id {credentials.id}): {credentials.html_url}", file=out)
    print(f"Stored its credentials in {store.describe()}.", file=out)
    if webhook_url == PLACEHOLDER_WEBHOOK_URL:
        print(
            "Its webhook URL is a placeholder: set it to https://YOUR-HOST/webhook in the App's settings.",
            file=out,
        )
    print(
        f"Install it on an organisation or on repositories: {credentials.install_url}", file=out, flush=True
    )
    return 0
