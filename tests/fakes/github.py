"""A stateful fake of GitHub for one GitHub App: the REST API and the webhook sender.

The server is an aiohttp application on ``127.0.0.1`` (port 0).  It checks authentication the way
GitHub does (App JWT signed with the App's key, installation tokens with their permissions and
resources), keeps runner / workflow-run / job state, records every API call and webhook delivery, and
can inject faults (5xx, secondary and primary rate limits).  JSON shapes follow GitHub's REST
description (``@octokit/openapi``) and webhook examples (``@octokit/webhooks-examples``).

Typical use::

    gh = FakeGitHub(app_id=1, public_key_pem=pub, webhook_secret="s")
    api_url = await gh.start()
    gh.add_installation(installation_id=7, account="acme", account_type="Organization", repositories=["app"])
    job = gh.queue_job(installation_id=7, repository="acme/app", labels=["self-hosted", "linux"])
    await gh.deliver("workflow_job", gh.workflow_job_payload(job["id"], "queued"))
    ...
    await gh.close()
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.payloads import (
    JSON,
    Account,
    Repo,
    Urls,
    error_body,
    iso,
    label_objs,
    node_id,
    org_obj,
    repo_obj,
    user_obj,
)

__all__ = ["Call", "Delivery", "FakeGitHub", "Job", "Run", "Runner"]

AuthKind = Literal["jwt", "installation", "none", "invalid"]
_LEVELS = {"read": 1, "write": 2, "admin": 3}
_JWT_SKEW = 60.0
_JWT_MAX_LIFETIME = 660.0
_WEBHOOK_TIMEOUT = 10.0
_REDELIVERY_WINDOW = 3 * 24 * 3600.0
_RATE_LIMIT = 5000
_UNAUTH_RATE_LIMIT = 60
_SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {rid}."
)
DEFAULT_PERMISSIONS: dict[str, str] = {
    "actions": "read",
    "administration": "write",
    "metadata": "read",
    "organization_self_hosted_runners": "write",
}


# --------------------------------------------------------------------------------------------- records
@dataclass
class Call:
    """One API request the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    auth: AuthKind
    installation_id: int | None
    status: int


@dataclass
class Delivery:
    """One webhook delivery attempt in the App's delivery log."""

    id: int
    guid: str
    delivered_at: float
    redelivery: bool
    duration: float
    status: str
    status_code: int
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    url: str | None
    body: bytes
    request_headers: dict[str, str]
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    throttled_at: float | None = None

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx."""
        return 200 <= self.status_code < 300

    @property
    def payload(self) -> JSON:
        """The decoded JSON body."""
        decoded: JSON = json.loads(self.body)
        return decoded

    def summary(self) -> JSON:
        """The ``hook-delivery-item`` object of ``GET /app/hook/deliveries``."""
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": iso(self.delivered_at),
            "redelivery": self.redelivery,
            "duration": round(self.duration, 3),
            "status": self.status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository_id": self.repository_id,
            "throttled_at": iso(self.throttled_at),
        }

    def detail(self) -> JSON:
        """The ``hook-delivery`` object of ``GET /app/hook/deliveries/{id}``."""
        out = self.summary()
        out["url"] = self.url or ""
        out["request"] = {"headers": dict(self.request_headers), "payload": self.payload}
        out["response"] = {"headers": dict(self.response_headers), "payload": self.response_body}
        return out


# ----------------------------------------------------------------------------------------------- state
@dataclass
class Installation:
    """An installation of the App on one account."""

    id: int
    account: Account
    repositories: list[str]
    permissions: dict[str, str]
    created_at: float
    suspended_at: float | None = None


@dataclass
class Token:
    """An installation access token."""

    token: str
    installation_id: int
    expires_at: float
    permissions: dict[str, str]
    repositories: list[str] | None
    revoked: bool = False


@dataclass
class RateBucket:
    """A primary rate-limit window."""

    limit: int
    remaining: int
    reset: float

    @property
    def used(self) -> int:
        """Requests used in this window."""
        return self.limit - self.remaining


@dataclass
class Runner:
    """A self-hosted runner registered in one scope (``org:NAME`` or ``repo:OWNER/NAME``)."""

    id: int
    name: str
    scope: str
    labels: list[str]
    runner_group_id: int
    os: str = "linux"
    status: str = "online"
    busy: bool = False
    ephemeral: bool = True
    version: str | None = "2.328.0"


@dataclass
class Run:
    """A workflow run."""

    id: int
    repo: Repo
    installation_id: int
    event: str
    head_repo: Repo
    head_sha: str
    head_branch: str
    created_at: float
    run_number: int
    name: str = "CI"
    run_attempt: int = 1
    job_ids: list[int] = field(default_factory=list)


@dataclass
class Job:
    """A workflow job."""

    id: int
    run_id: int
    labels: list[str]
    created_at: float
    name: str = "build"
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    runner_group_name: str | None = None


@dataclass
class _FailRule:
    count: int
    status: int
    path_contains: str | None
    headers: dict[str, str]


@dataclass
class _Identity:
    """Who made a request (the result of the auth dependency)."""

    kind: AuthKind
    installation_id: int | None = None
    token: Token | None = None
    error: tuple[int, str] | None = None


class _Reply(Exception):
    """Raised inside a handler to answer with a JSON error (or any status/body)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class _Ctx:
    """Per-request context passed to route handlers."""

    request: web.Request
    path: str
    params: dict[str, str]
    query: dict[str, str]
    identity: _Identity


@dataclass
class _Result:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[_Ctx], Awaitable[_Result]]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    auth: Literal["jwt", "installation", "none", "any"]
    handler: Handler


def _etag(body: Any) -> str:
    """A weak entity tag of a JSON answer, as GitHub sends on GETs (it changes when the content does)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f'W/"{digest[:32]}"'


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (``W/"a", "b"``); weak comparison ignores ``W/``."""
    tags = {tag.strip() for tag in header.split(",") if tag.strip()}
    return tags | {f"W/{tag}" for tag in tags if not tag.startswith("W/")}


@dataclass
class Gate:
    """Requests whose path fully matches `pattern` are held until :meth:`open` is called; records how many
    of them were in flight at once (held or being answered)."""

    pattern: re.Pattern[str]
    in_flight: int = 0
    most_in_flight: int = 0
    _opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        """Let the held requests and every later one through."""
        self._opened.set()


# ------------------------------------------------------------------------------------------------ fake
class FakeGitHub:
    """A stateful fake GitHub (REST API + webhook sender) for one GitHub App."""

    def __init__(
        self,
        *,
        app_id: int,
        public_key_pem: bytes,
        webhook_secret: str,
        base_path: str = "",
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        token_ttl: float = 3600.0,
        installation_token_length: int = 40,
        jwt_clock: Callable[[], float] | None = None,
    ) -> None:
        """Create the fake (not yet listening; call :meth:`start`).

        ``base_path`` is ``""`` for github.com-style URLs or ``"/api/v3"`` to emulate GitHub Enterprise
        Server.  ``clock`` drives token expiry, timestamps and rate-limit windows; ``jwt_clock`` (default:
        ``clock``) is what App JWTs are checked against.  ``seed`` makes fault injection and generated
        tokens reproducible.
        """
        self.app_id = app_id
        self.app_slug = "ghapp-fake"
        self.client_id = f"Iv23li{app_id:010d}"
        self.webhook_secret = webhook_secret
        self.base_path = base_path.rstrip("/")
        self.clock = clock
        self.jwt_clock = jwt_clock or clock
        self.token_ttl = token_ttl
        self.installation_token_length = installation_token_length
        self._public_key = serialization.load_pem_public_key(public_key_pem)
        self._rng = random.Random(seed)  # fault injection only
        self._ids = random.Random(seed + 1)  # tokens / ids, not security

        self.api_url = ""
        self._urls = Urls(api="", html="https://github.com")
        self.webhook_url: str | None = None
        """The App's webhook URL (``GET /app/hook/config``); deliveries go there."""
        self.hook_content_type = "json"
        self.hook_insecure_ssl = "0"
        self.events = ["workflow_job"]
        """The webhook events the App subscribes to (``GET /app`` → ``events``)."""
        self.hook_id = 400000000 + app_id
        self.calls: list[Call] = []
        self.deliveries: list[Delivery] = []
        self.latency = 0.0
        """Seconds each API answer is held before it is sent (real GitHub's round trip; benchmarks)."""
        self.error_rate = 0.0
        self.secondary_limit_rate = 0.0
        self.secondary_limit_status = 403
        self.manifests: dict[str, JSON] = {}
        self.converted_manifests: list[JSON] = []

        self._installations: dict[int, Installation] = {}
        self._accounts: dict[str, Account] = {}
        self._repos: dict[str, Repo] = {}
        self._tokens: dict[str, Token] = {}
        self._registration_tokens: dict[str, tuple[str, float]] = {}
        self._buckets: dict[tuple[str, int], RateBucket] = {}
        self._groups: dict[str, dict[int, str]] = {}
        self._runners: dict[str, list[Runner]] = {}
        self._label_ids: dict[str, int] = {}
        self._jit_configs: dict[str, int] = {}
        self._runs: dict[int, Run] = {}
        self._runs_of_repo: dict[str, list[Run]] = {}  # lower-case full name → its runs (listings)
        self._jobs: dict[int, Job] = {}
        self._fail_rules: list[_FailRule] = []
        self._skipped_in_listings: dict[str, int] = {}
        self._gates: list[Gate] = []
        self._manifest_codes: dict[str, tuple[JSON, float]] = {}
        self._next = {"account": 1000, "repo": 50000, "runner": 10, "run": 7000000, "job": 90000000}
        self._next_delivery = 1_000_000
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._routes = self._build_routes()

    # ----------------------------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Start listening on 127.0.0.1 (random port); return the API base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        root = f"http://127.0.0.1:{port}"
        self.api_url = root + self.base_path
        self._urls = Urls(api=self.api_url, html=root if self.base_path else "https://github.com")
        self._session = aiohttp.ClientSession()
        return self.api_url

    async def close(self) -> None:
        """Stop the server, finish pending redeliveries and close the webhook client session."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drain(self) -> None:
        """Wait until redeliveries requested through the API have been sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def urls(self) -> Urls:
        """The API / HTML base URLs (after :meth:`start`)."""
        return self._urls

    # --------------------------------------------------------------------------------- state setup
    def _account(self, login: str, kind: Literal["Organization", "User"]) -> Account:
        acct = self._accounts.get(login.lower())
        if acct is None:
            acct = Account(login=login, id=self._new_id("account"), type=kind)
            self._accounts[login.lower()] = acct
        return acct

    def _repo(self, full_name: str, *, owner_type: Literal["Organization", "User"] = "User") -> Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            owner, name = full_name.split("/", 1)
            repo = Repo(
                id=self._new_id("repo"),
                owner=self._account(owner, owner_type),
                name=name,
                created_at=self.clock(),
            )
            self._repos[full_name.lower()] = repo
        return repo

    def add_installation(
        self,
        *,
        installation_id: int,
        account: str,
        account_type: Literal["Organization", "User"],
        repositories: list[str],
        permissions: dict[str, str] | None = None,
    ) -> None:
        """Install the App on ``account`` with access to ``repositories`` (names under the account)."""
        acct = self._account(account, account_type)
        acct.type = account_type
        for name in repositories:
            self._repo(f"{account}/{name}", owner_type=account_type)
        self._installations[installation_id] = Installation(
            id=installation_id,
            account=acct,
            repositories=list(repositories),
            permissions=dict(DEFAULT_PERMISSIONS if permissions is None else permissions),
            created_at=self.clock(),
        )
        if account_type == "Organization":
            self._groups.setdefault(account.lower(), {1: "Default"})

    def add_runner_group(self, *, org: str, group_id: int, name: str) -> None:
        """Add a runner group to ``org`` (every org has ``Default`` with id 1)."""
        self._groups.setdefault(org.lower(), {1: "Default"})[group_id] = name

    def installation(self, installation_id: int) -> Installation:
        """Return an installation's state."""
        return self._installations[installation_id]

    def delete_installation(self, installation_id: int) -> JSON:
        """Uninstall the App from an account: its tokens stop working, minting one answers 404.

        Returns the ``installation`` webhook payload (action ``deleted``) built before it went.
        """
        payload = self.installation_payload(installation_id, "deleted")
        del self._installations[installation_id]
        self._revoke_tokens(installation_id)
        return payload

    def suspend_installation(self, installation_id: int) -> JSON:
        """Suspend an installation: its tokens stop working, minting one answers 403 (suspended).

        Returns the ``installation`` webhook payload (action ``suspend``).
        """
        self._installations[installation_id].suspended_at = self.clock()
        self._revoke_tokens(installation_id)
        return self.installation_payload(installation_id, "suspend")

    def unsuspend_installation(self, installation_id: int) -> JSON:
        """Lift a suspension; returns the ``installation`` webhook payload (action ``unsuspend``)."""
        self._installations[installation_id].suspended_at = None
        return self.installation_payload(installation_id, "unsuspend")

    def installation_payload(self, installation_id: int, action: str) -> JSON:
        """An ``installation`` webhook payload (``created``, ``deleted``, ``suspend``, ``unsuspend``, …).

        Shaped like GitHub's: ``created`` and ``deleted`` list the selected repositories; ``suspend`` and
        ``unsuspend`` do not.
        """
        inst = self._installations[installation_id]
        payload: JSON = {
            "action": action,
            "installation": self._installation_obj(inst),
            "sender": user_obj(inst.account, self._urls),
        }
        if action in {"created", "deleted", "new_permissions_accepted"}:
            payload["repositories"] = [
                {
                    "id": repo.id,
                    "node_id": node_id("Repository", repo.id),
                    "name": repo.name,
                    "full_name": repo.full_name,
                    "private": repo.private,
                }
                for repo in (self._repo(f"{inst.account.login}/{name}") for name in inst.repositories)
            ]
        return payload

    def _revoke_tokens(self, installation_id: int) -> None:
        for token in self._tokens.values():
            if token.installation_id == installation_id:
                token.revoked = True

    # ----------------------------------------------------------------------- simulated actions state
    def queue_job(
        self,
        *,
        installation_id: int,
        repository: str,
        labels: list[str],
        job_id: int | None = None,
        run_id: int | None = None,
        private: bool = True,
        head_repository: str | None = None,
        event: str = "push",
        name: str = "build",
    ) -> JSON:
        """Queue a job (creating its workflow run unless ``run_id`` names an existing one).

        Returns the REST ``job`` object.
        """
        inst = self._installations[installation_id]
        repo = self._repo(repository, owner_type=inst.account.type)
        repo.private = private
        head = repo if head_repository is None else self._repo(head_repository)
        now = self.clock()
        run = self._runs.get(run_id) if run_id is not None else None
        if run is None:
            rid = run_id if run_id is not None else self._new_id("run")
            run = Run(
                id=rid,
                repo=repo,
                installation_id=installation_id,
                event=event,
                head_repo=head,
                head_sha=self._hex(40),
                head_branch="main",
                created_at=now,
                run_number=len(self._runs) + 1,
            )
            self._runs[rid] = run
            self._runs_of_repo.setdefault(repo.full_name.lower(), []).append(run)
        jid = job_id if job_id is not None else self._new_id("job")
        if jid in self._jobs:
            raise ValueError(f"job {jid} exists")
        self._jobs[jid] = Job(id=jid, run_id=run.id, labels=list(labels), created_at=now, name=name)
        run.job_ids.append(jid)
        return self.job(jid)

    def job(self, job_id: int) -> JSON:
        """Return the REST ``job`` object of a job."""
        return self._job_obj(self._jobs[job_id])

    def run(self, run_id: int) -> JSON:
        """Return the REST ``workflow-run`` object of a run."""
        return self._run_obj(self._runs[run_id])

    def _find_runner(self, job: Job, runner_name: str) -> Runner:
        repo = self._runs[job.run_id].repo
        scopes = [f"repo:{repo.full_name}".lower()]
        if repo.owner.type == "Organization":
            scopes.append(f"org:{repo.owner.login}".lower())
        for scope in scopes:
            for r in self._runners.get(scope, []):
                if r.name == runner_name:
                    return r
        raise KeyError(f"no runner named {runner_name!r} in {scopes}")

    def start_job(self, job_id: int, *, runner_name: str) -> None:
        """Assign a queued job to a registered runner: job in_progress, runner busy and online."""
        job = self._jobs[job_id]
        runner = self._find_runner(job, runner_name)
        runner.busy = True
        runner.status = "online"
        if runner.os == "unknown":
            runner.os = "linux"
        job.status = "in_progress"
        job.started_at = self.clock()
        job.runner_id = runner.id
        job.runner_name = runner.name
        job.runner_group_id = runner.runner_group_id
        job.runner_group_name = self._group_name(runner)

    def _release_runner(self, job: Job) -> None:
        if job.runner_id is None:
            return
        for scope, runners in self._runners.items():
            for r in list(runners):
                if r.id == job.runner_id:
                    r.busy = False
                    if r.ephemeral:
                        self._runners[scope].remove(r)

    def complete_job(self, job_id: int, *, conclusion: str = "success") -> None:
        """Finish a job; its runner stops being busy and, if ephemeral, deregisters."""
        job = self._jobs[job_id]
        job.status = "completed"
        job.conclusion = conclusion
        job.completed_at = self.clock()
        if job.started_at is None:
            job.started_at = job.completed_at
        self._release_runner(job)

    def cancel_job(self, job_id: int) -> None:
        """Cancel a job: it completes as ``cancelled`` (a queued one never gets a runner)."""
        self.complete_job(job_id, conclusion="cancelled")

    def register_runner(
        self,
        *,
        scope: str,
        name: str,
        labels: list[str],
        busy: bool = False,
        status: str = "online",
        ephemeral: bool = True,
        runner_group_id: int = 1,
    ) -> JSON:
        """Register a runner as if it ran ``config.sh``; returns the REST ``runner`` object."""
        key = self._scope_key(scope)
        if any(r.name == name for r in self._runners.get(key, [])):
            raise ValueError(f"runner {name!r} exists in {scope}")
        runner = Runner(
            id=self._new_id("runner"),
            name=name,
            scope=key,
            labels=list(labels),
            runner_group_id=runner_group_id,
            busy=busy,
            status=status,
            ephemeral=ephemeral,
        )
        self._runners.setdefault(key, []).append(runner)
        return self._runner_obj(runner)

    def runners(self, scope: str) -> list[JSON]:
        """Return the REST ``runner`` objects registered in ``scope``."""
        return [self._runner_obj(r) for r in self._runners.get(self._scope_key(scope), [])]

    def set_runner_status(self, scope: str, name: str, *, status: str) -> None:
        """Set a runner ``online`` / ``offline`` (e.g. a JIT runner that connected)."""
        for r in self._runners.get(self._scope_key(scope), []):
            if r.name == name:
                r.status = status
                return
        raise KeyError(name)

    def runner_for_jitconfig(self, encoded_jit_config: str) -> JSON | None:
        """Return the runner a given ``encoded_jit_config`` belongs to (None if deleted/unknown)."""
        rid = self._jit_configs.get(encoded_jit_config)
        for runners in self._runners.values():
            for r in runners:
                if r.id == rid:
                    return self._runner_obj(r)
        return None

    @staticmethod
    def _scope_key(scope: str) -> str:
        kind, _, name = scope.partition(":")
        if kind not in {"org", "repo"} or not name:
            raise ValueError(f"scope must be 'org:NAME' or 'repo:OWNER/NAME', not {scope!r}")
        return f"{kind}:{name}".lower()

    def _group_name(self, runner: Runner) -> str:
        if runner.scope.startswith("org:"):
            return self._groups.get(runner.scope[4:], {}).get(runner.runner_group_id, "Default")
        return "Default"

    # ------------------------------------------------------------------------------ JSON builders
    def _runner_obj(self, r: Runner) -> JSON:
        return {
            "id": r.id,
            "runner_group_id": r.runner_group_id,
            "name": r.name,
            "os": r.os,
            "status": r.status,
            "busy": r.busy,
            "ephemeral": r.ephemeral,
            "version": r.version,
            "labels": label_objs(r.labels, self._label_ids),
        }

    def _job_obj(self, job: Job, *, status: str | None = None) -> JSON:
        run = self._runs[job.run_id]
        api_repo = f"{self.api_url}/repos/{run.repo.full_name}"
        status = status or job.status
        unassigned = status in {"queued", "waiting"}
        return {
            "id": job.id,
            "run_id": run.id,
            "run_url": f"{api_repo}/actions/runs/{run.id}",
            "run_attempt": run.run_attempt,
            "node_id": node_id("CheckRun", job.id),
            "head_sha": run.head_sha,
            "head_branch": run.head_branch,
            "url": f"{api_repo}/actions/jobs/{job.id}",
            "html_url": f"{self._urls.html}/{run.repo.full_name}/actions/runs/{run.id}/job/{job.id}",
            "status": status,
            "conclusion": job.conclusion if status == "completed" else None,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at if job.started_at is not None else job.created_at),
            "completed_at": iso(job.completed_at) if status == "completed" else None,
            "name": job.name,
            "steps": [],
            "check_run_url": f"{api_repo}/check-runs/{job.id}",
            "labels": list(job.labels),
            "runner_id": None if unassigned else job.runner_id,
            "runner_name": None if unassigned else job.runner_name,
            "runner_group_id": None if unassigned else job.runner_group_id,
            "runner_group_name": None if unassigned else job.runner_group_name,
            "workflow_name": run.name,
        }

    def _run_state(self, run: Run) -> tuple[str, str | None]:
        jobs = [self._jobs[j] for j in run.job_ids]
        if jobs and all(j.status == "completed" for j in jobs):
            conclusions = {j.conclusion for j in jobs}
            for c in ("failure", "cancelled", "timed_out"):
                if c in conclusions:
                    return "completed", c
            return "completed", "success"
        if any(j.status != "queued" for j in jobs):
            return "in_progress", None
        return "queued", None

    def _run_obj(self, run: Run) -> JSON:
        api_repo = f"{self.api_url}/repos/{run.repo.full_name}"
        run_url = f"{api_repo}/actions/runs/{run.id}"
        status, conclusion = self._run_state(run)
        actor = user_obj(run.head_repo.owner, self._urls)
        created = iso(run.created_at)
        return {
            "id": run.id,
            "name": run.name,
            "node_id": node_id("WorkflowRun", run.id),
            "check_suite_id": run.id + 1,
            "check_suite_node_id": node_id("CheckSuite", run.id + 1),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": ".github/workflows/ci.yml",
            "display_title": "CI",
            "run_number": run.run_number,
            "run_attempt": run.run_attempt,
            "referenced_workflows": [],
            "event": run.event,
            "status": status,
            "conclusion": conclusion,
            "workflow_id": 161335,
            "url": run_url,
            "html_url": f"{self._urls.html}/{run.repo.full_name}/actions/runs/{run.id}",
            "pull_requests": [],
            "created_at": created,
            "updated_at": created,
            "actor": actor,
            "triggering_actor": actor,
            "run_started_at": created,
            "jobs_url": f"{run_url}/jobs",
            "logs_url": f"{run_url}/logs",
            "check_suite_url": f"{api_repo}/check-suites/{run.id + 1}",
            "artifacts_url": f"{run_url}/artifacts",
            "cancel_url": f"{run_url}/cancel",
            "rerun_url": f"{run_url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{api_repo}/actions/workflows/161335",
            "head_commit": {
                "id": run.head_sha,
                "tree_id": hashlib.sha1(run.head_sha.encode()).hexdigest(),
                "message": "Update",
                "timestamp": created,
                "author": {"name": "Octo Cat", "email": "octocat@example.com"},
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "repository": repo_obj(run.repo, self._urls, full=False),
            "head_repository": repo_obj(run.head_repo, self._urls, full=False),
        }

    def _installation_obj(self, inst: Installation) -> JSON:
        acct = inst.account
        html = (
            f"{self._urls.html}/organizations/{acct.login}/settings/installations/{inst.id}"
            if acct.type == "Organization"
            else f"{self._urls.html}/settings/installations/{inst.id}"
        )
        return {
            "id": inst.id,
            "client_id": self.client_id,
            "account": user_obj(acct, self._urls),
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api_url}/app/installations/{inst.id}/access_tokens",
            "repositories_url": f"{self.api_url}/installation/repositories",
            "html_url": html,
            "app_id": self.app_id,
            "app_slug": self.app_slug,
            "target_id": acct.id,
            "target_type": acct.type,
            "permissions": dict(inst.permissions),
            "events": list(self.events),
            "created_at": iso(inst.created_at),
            "updated_at": iso(inst.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": user_obj(acct, self._urls) if inst.suspended_at is not None else None,
            "suspended_at": iso(inst.suspended_at) if inst.suspended_at is not None else None,
        }

    def _app_obj(self) -> JSON:
        owner = Account(login="ghapp-owner", id=1, type="Organization")
        return {
            "id": self.app_id,
            "slug": self.app_slug,
            "client_id": self.client_id,
            "node_id": node_id("Integration", self.app_id),
            "owner": user_obj(owner, self._urls),
            "name": "ghapp fake",
            "description": "",
            "external_url": "https://example.com",
            "html_url": f"{self._urls.html}/apps/{self.app_slug}",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "permissions": dict(DEFAULT_PERMISSIONS),
            "events": list(self.events),
            "installations_count": len(self._installations),
        }

    # ------------------------------------------------------------------------------------ webhooks
    def workflow_job_payload(self, job_id: int, action: str) -> JSON:
        """Return a ``workflow_job`` webhook payload for ``action`` built from the job's current state.

        ``queued`` / ``waiting`` carry null ``runner_*`` fields; ``completed`` needs a completed job.
        """
        job = self._jobs[job_id]
        if action not in {"queued", "waiting", "in_progress", "completed"}:
            raise ValueError(f"unknown workflow_job action {action!r}")
        if action == "completed" and job.conclusion is None:
            raise ValueError("complete_job()/cancel_job() first: a completed payload needs a conclusion")
        run = self._runs[job.run_id]
        repo = run.repo
        payload: JSON = {
            "action": action,
            "workflow_job": self._job_obj(job, status=action),
            "repository": repo_obj(repo, self._urls, full=True),
        }
        if repo.owner.type == "Organization":
            payload["organization"] = org_obj(repo.owner, self._urls)
        payload["sender"] = user_obj(run.head_repo.owner, self._urls)
        payload["installation"] = {
            "id": run.installation_id,
            "node_id": node_id("IntegrationInstallation", run.installation_id),
        }
        return payload

    def _sign_headers(self, event: str, guid: str, body: bytes) -> dict[str, str]:
        secret = self.webhook_secret.encode()
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/fake",
            "X-GitHub-Delivery": guid,
            "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature": "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
        }
        if not secret:  # GitHub signs only when the App has a webhook secret
            del headers["X-Hub-Signature"], headers["X-Hub-Signature-256"]
        return headers

    async def deliver(
        self,
        event: str,
        payload: JSON,
        *,
        fail: bool = False,
        guid: str | None = None,
        failure: Literal["503", "timeout"] = "503",
    ) -> Delivery:
        """Send a webhook to :attr:`webhook_url` and record it in the delivery log.

        ``fail=True`` records a failed delivery (``failure``: a 503 answer or a timeout) without sending
        anything: a webhook GitHub lost.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self._send(
            event, body, guid or str(uuid.uuid4()), redelivery=False, fail=fail, failure=failure
        )

    async def _send(
        self,
        event: str,
        body: bytes,
        guid: str,
        *,
        redelivery: bool,
        fail: bool = False,
        failure: Literal["503", "timeout"] = "503",
    ) -> Delivery:
        payload = json.loads(body)
        inst = payload.get("installation") or {}
        repo = payload.get("repository") or {}
        headers = self._sign_headers(event, guid, body)
        self._next_delivery += 1
        delivery = Delivery(
            id=self._next_delivery,
            guid=guid,
            delivered_at=self.clock(),
            redelivery=redelivery,
            duration=0.0,
            status="OK",
            status_code=200,
            event=event,
            action=payload.get("action"),
            installation_id=inst.get("id"),
            repository_id=repo.get("id"),
            url=self.webhook_url,
            body=body,
            request_headers=headers,
        )
        self.deliveries.append(delivery)
        if fail:
            if failure == "timeout":
                delivery.status, delivery.status_code, delivery.duration = "timed out", 0, _WEBHOOK_TIMEOUT
            else:
                delivery.status, delivery.status_code = "Invalid HTTP Response: 503", 503
                delivery.response_body = "Service Unavailable"
            return delivery
        if self.webhook_url is None:
            if not redelivery:
                self.deliveries.pop()
                raise RuntimeError("set FakeGitHub.webhook_url before deliver()")
            delivery.status, delivery.status_code = "failed to connect to host", 0
            return delivery
        assert self._session is not None, "start() first"
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.webhook_url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT),
            ) as resp:
                delivery.response_body = await resp.text()
                delivery.response_headers = dict(resp.headers)
                delivery.status_code = resp.status
                delivery.status = (
                    "OK" if 200 <= resp.status < 300 else f"Invalid HTTP Response: {resp.status}"
                )
        except TimeoutError:
            delivery.status, delivery.status_code = "timed out", 0
        except aiohttp.ClientError:
            delivery.status, delivery.status_code = "failed to connect to host", 0
        delivery.duration = time.perf_counter() - started
        return delivery

    # ---------------------------------------------------------------------------- fault injection
    def fail_next(
        self,
        count: int,
        *,
        status: int = 502,
        path_contains: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` API requests (whose path contains ``path_contains``) with ``status``."""
        self._fail_rules.append(_FailRule(count, status, path_contains, dict(headers or {})))

    def set_rate_limit(
        self, *, installation_id: int, remaining: int, reset_in: float, limit: int | None = None
    ) -> None:
        """Set an installation's primary rate-limit window: ``remaining`` requests until ``reset_in`` s
        (of ``limit`` a window, when given: GitHub gives large installations up to 15,000)."""
        bucket = self._bucket(("installation", installation_id))
        if limit is not None:
            bucket.limit = limit
        bucket.remaining = remaining
        bucket.reset = self.clock() + reset_in

    def gate(self, path_pattern: str) -> Gate:
        """Hold the requests whose path fully matches the regex `path_pattern` until the gate is opened."""
        gate = Gate(re.compile(path_pattern))
        self._gates.append(gate)
        return gate

    def skip_in_listings(self, name: str, *, count: int = 1) -> None:
        """Leave runner ``name`` out of the next ``count`` runner list pages (not out of a lookup by name).

        GitHub pages runner lists by offset over a list that changes while it is read (ephemeral runners
        come and go), so a runner can slip across a page boundary and appear on no page of one listing.
        """
        self._skipped_in_listings[name] = count

    def installation_rate_used(self, installation_id: int) -> int:
        """Requests counted against an installation's primary rate limit in the current window."""
        return self._bucket(("installation", installation_id)).used

    def revoke_token(self, token: str) -> None:
        """Revoke an installation token: later use answers 401 Bad credentials."""
        self._tokens[token].revoked = True

    def expire_tokens(self) -> None:
        """Make every installation token expired now."""
        now = self.clock()
        for tok in self._tokens.values():
            tok.expires_at = min(tok.expires_at, now)

    # ------------------------------------------------------------------------------------- records
    def not_modified(self) -> list[Call]:
        """Conditional GETs answered 304 Not Modified (GitHub does not count them against the rate limit)."""
        return [c for c in self.calls if c.status == 304]

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        """Calls with ``method`` whose path (without base path) fully matches the regex ``path_pattern``."""
        rx = re.compile(path_pattern)
        return [c for c in self.calls if c.method == method.upper() and rx.fullmatch(c.path)]

    def registration_tokens(self, scope: str) -> list[str]:
        """Registration tokens issued for ``scope`` (``org:NAME`` / ``repo:OWNER/NAME``), oldest first."""
        key = self._scope_key(scope)
        return [token for token, (issued_for, _) in self._registration_tokens.items() if issued_for == key]

    def tokens_for(self, installation_id: int) -> list[str]:
        """Installation tokens minted for an installation, oldest first."""
        return [t.token for t in self._tokens.values() if t.installation_id == installation_id]

    def create_manifest_code(self, manifest: JSON) -> str:
        """Record an App manifest (as if posted to /settings/apps/new); return the one-time code."""
        code = self._alnum(20).lower()
        self._manifest_codes[code] = (dict(manifest), self.clock())
        self.manifests[code] = dict(manifest)
        return code

    # -------------------------------------------------------------------------------------- helpers
    def _new_id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    def _alnum(self, n: int) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(self._ids.choice(alphabet) for _ in range(n))

    def _hex(self, n: int) -> str:
        return "".join(self._ids.choice("0123456789abcdef") for _ in range(n))

    def _bucket(self, key: tuple[str, int]) -> RateBucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        limit = _UNAUTH_RATE_LIMIT if key[0] == "ip" else _RATE_LIMIT
        if bucket is None or now >= bucket.reset:
            bucket = RateBucket(limit=limit, remaining=limit, reset=now + 3600.0)
            self._buckets[key] = bucket
        return bucket

    @staticmethod
    def _rate_headers(bucket: RateBucket) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(bucket.limit),
            "x-ratelimit-remaining": str(bucket.remaining),
            "x-ratelimit-used": str(bucket.used),
            "x-ratelimit-reset": str(int(bucket.reset)),
            "x-ratelimit-resource": "core",
        }

    # ------------------------------------------------------------------------------ auth dependency
    def _authenticate(self, request: web.Request) -> _Identity:
        header = request.headers.get("Authorization", "")
        if not header:
            return _Identity("none")
        scheme, _, cred = header.partition(" ")
        cred = cred.strip()
        if scheme.lower() not in {"bearer", "token"} or not cred:
            return _Identity("invalid", error=(401, "Bad credentials"))
        if cred.count(".") == 2:
            return self._check_jwt(cred)
        tok = self._tokens.get(cred)
        if tok is None or tok.revoked or tok.expires_at <= self.clock():
            return _Identity("invalid", error=(401, "Bad credentials"))
        return _Identity("installation", installation_id=tok.installation_id, token=tok)

    def _check_jwt(self, token: str) -> _Identity:
        bad = _Identity("invalid", error=(401, "A JSON web token could not be decoded"))
        try:
            claims = jwt.decode(
                token,
                self._public_key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return bad
        iss, iat, exp = claims.get("iss"), claims.get("iat"), claims.get("exp")
        if str(iss) not in {str(self.app_id), self.client_id}:
            return bad
        now = self.jwt_clock()
        if not isinstance(iat, int | float) or iat > now + _JWT_SKEW:
            msg = (
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
                "was issued"
            )
            return _Identity("invalid", error=(401, msg))
        if not isinstance(exp, int | float) or exp <= now:
            msg = (
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
                "which the assertion expires"
            )
            return _Identity("invalid", error=(401, msg))
        if exp - iat > _JWT_MAX_LIFETIME or exp > now + _JWT_MAX_LIFETIME:
            return _Identity(
                "invalid", error=(401, "'Expiration time' claim ('exp') is too far in the future")
            )
        return _Identity("jwt")

    # ------------------------------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        request_id = f"{self._ids.getrandbits(16):04X}:{self._ids.getrandbits(32):08X}:{len(self.calls):06X}"
        raw_path = request.path
        query = {k: v for k, v in request.query.items()}
        identity = self._authenticate(request)
        path = raw_path
        if self.base_path:
            path = raw_path[len(self.base_path) :] if raw_path.startswith(self.base_path + "/") else ""
        call = Call(request.method, path or raw_path, query, identity.kind, identity.installation_id, 0)
        self.calls.append(call)
        gates = [gate for gate in self._gates if gate.pattern.fullmatch(call.path)]
        for gate in gates:
            gate.in_flight += 1
            gate.most_in_flight = max(gate.most_in_flight, gate.in_flight)
        try:
            for gate in gates:
                await gate._opened.wait()
            if self.latency:
                await asyncio.sleep(self.latency)
            result = await self._answer(request, path, query, identity)
        finally:
            for gate in gates:
                gate.in_flight -= 1
        call.status = result.status
        headers = {
            "x-github-request-id": request_id,
            "x-github-media-type": "github.v3; format=json",
            "x-github-api-version-selected": "2022-11-28",
            **result.headers,
        }
        if result.status == 204 or result.body is None:
            return web.Response(status=result.status, headers=headers)
        return web.json_response(result.body, status=result.status, headers=headers)

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self._routes:
            if route.method != method:
                continue
            m = route.pattern.fullmatch(path)
            if m:
                return route, m.groupdict()
        return None

    def _injected_fault(self, path: str, bucket: RateBucket | None) -> _Result | None:
        rate = self._rate_headers(bucket) if bucket is not None else {}
        for rule in self._fail_rules:
            if rule.count > 0 and (rule.path_contains is None or rule.path_contains in path):
                rule.count -= 1
                self._fail_rules = [r for r in self._fail_rules if r.count > 0]
                if rule.status in {403, 429} and "retry-after" not in {k.lower() for k in rule.headers}:
                    msg = _SECONDARY_MESSAGE.format(rid="FAKE")
                else:
                    msg = "Server Error" if rule.status >= 500 else "Injected failure"
                return _Result(rule.status, error_body(msg, rule.status), {**rate, **rule.headers})
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            status = self._rng.choice([502, 503])
            msg = "Server Error" if status == 502 else "Service Unavailable"
            return _Result(status, error_body(msg, status), rate)
        if self.secondary_limit_rate > 0 and self._rng.random() < self.secondary_limit_rate:
            status = self.secondary_limit_status
            body = error_body(_SECONDARY_MESSAGE.format(rid="FAKE"), status)
            return _Result(status, body, {**rate, "retry-after": "1"})
        return None

    async def _answer(
        self, request: web.Request, path: str, query: dict[str, str], identity: _Identity
    ) -> _Result:
        bucket: RateBucket | None = None
        if identity.kind == "installation" and identity.installation_id is not None:
            bucket = self._bucket(("installation", identity.installation_id))
        elif identity.kind == "jwt":
            bucket = self._bucket(("app", self.app_id))
        else:
            bucket = self._bucket(("ip", 0))
        rate = self._rate_headers(bucket)
        fault = self._injected_fault(path, bucket)
        if fault is not None:
            return fault
        found = self._match(request.method, path) if path else None
        if found is None:
            return _Result(404, error_body("Not Found", 404), rate)
        route, params = found
        if identity.error is not None:
            status, msg = identity.error
            return _Result(status, error_body(msg, status), rate)
        if route.auth == "jwt" and identity.kind != "jwt":
            status = 401
            msg = "A JSON web token could not be decoded"
            return _Result(status, error_body(msg, status), rate)
        if route.auth == "installation" and identity.kind != "installation":
            if identity.kind == "none":
                return _Result(401, error_body("Requires authentication", 401), rate)
            return _Result(403, error_body("Resource not accessible by integration", 403), rate)
        counts = path != "/rate_limit"
        if counts and bucket.remaining <= 0:
            if identity.kind == "installation":
                msg = f"API rate limit exceeded for installation ID {identity.installation_id}."
            elif identity.kind == "jwt":
                msg = f"API rate limit exceeded for app ID {self.app_id}."
            else:
                msg = "API rate limit exceeded for 127.0.0.1."
            return _Result(403, error_body(msg, 403), self._rate_headers(bucket))
        if counts:
            bucket.remaining -= 1
        rate = self._rate_headers(bucket)
        ctx = _Ctx(request=request, path=path, params=params, query=query, identity=identity)
        try:
            result = await route.handler(ctx)
        except _Reply as reply:
            result = _Result(reply.status, error_body(reply.message, reply.status), reply.headers)
        if request.method == "GET" and result.status == 200 and result.body is not None:
            etag = _etag(result.body)
            if etag in _etags(request.headers.get("If-None-Match", "")):
                # unchanged since the client's copy: 304, no body, and (authorised) not counted
                if counts:
                    bucket.remaining += 1
                rate = self._rate_headers(bucket)
                result = _Result(304, None, {"ETag": etag})
            else:
                result.headers = {**result.headers, "ETag": etag}
        result.headers = {**rate, **result.headers}
        return result

    # --------------------------------------------------------------------------------- route table
    def _build_routes(self) -> list[_Route]:
        seg = r"[^/]+"
        org = rf"/orgs/(?P<org>{seg})"
        repo = rf"/repos/(?P<owner>{seg})/(?P<repo>{seg})"
        table: list[tuple[str, str, Literal["jwt", "installation", "none", "any"], Handler]] = [
            ("GET", r"/app", "jwt", self._h_get_app),
            ("GET", r"/app/installations", "jwt", self._h_list_installations),
            ("GET", r"/app/installations/(?P<iid>\d+)", "jwt", self._h_get_installation),
            ("POST", r"/app/installations/(?P<iid>\d+)/access_tokens", "jwt", self._h_access_token),
            ("GET", r"/app/hook/config", "jwt", self._h_hook_config),
            ("GET", r"/app/hook/deliveries", "jwt", self._h_list_deliveries),
            ("GET", r"/app/hook/deliveries/(?P<did>\d+)", "jwt", self._h_get_delivery),
            ("POST", r"/app/hook/deliveries/(?P<did>\d+)/attempts", "jwt", self._h_redeliver),
            ("GET", r"/installation/repositories", "installation", self._h_installation_repos),
            (
                "POST",
                org + r"/actions/runners/registration-token",
                "installation",
                self._h_registration_token,
            ),
            (
                "POST",
                repo + r"/actions/runners/registration-token",
                "installation",
                self._h_registration_token,
            ),
            ("POST", org + r"/actions/runners/generate-jitconfig", "installation", self._h_jitconfig),
            ("POST", repo + r"/actions/runners/generate-jitconfig", "installation", self._h_jitconfig),
            ("GET", org + r"/actions/runners", "installation", self._h_list_runners),
            ("GET", repo + r"/actions/runners", "installation", self._h_list_runners),
            ("GET", org + r"/actions/runners/(?P<rid>\d+)", "installation", self._h_get_runner),
            ("GET", repo + r"/actions/runners/(?P<rid>\d+)", "installation", self._h_get_runner),
            ("DELETE", org + r"/actions/runners/(?P<rid>\d+)", "installation", self._h_delete_runner),
            ("DELETE", repo + r"/actions/runners/(?P<rid>\d+)", "installation", self._h_delete_runner),
            ("GET", org + r"/actions/runner-groups", "installation", self._h_runner_groups),
            ("GET", repo + r"/actions/runs", "installation", self._h_list_runs),
            ("GET", repo + r"/actions/runs/(?P<run_id>\d+)", "installation", self._h_get_run),
            ("GET", repo + r"/actions/runs/(?P<run_id>\d+)/jobs", "installation", self._h_run_jobs),
            ("GET", repo + r"/actions/jobs/(?P<job_id>\d+)", "installation", self._h_get_job),
            ("POST", r"/app-manifests/(?P<code>[^/]+)/conversions", "none", self._h_manifest_conversion),
            ("GET", r"/rate_limit", "any", self._h_rate_limit),
        ]
        return [_Route(m, re.compile(p), a, h) for m, p, a, h in table]

    # --------------------------------------------------------------------------- handler helpers
    def _scope_for(self, ctx: _Ctx, permission: str, level: str) -> str:
        """Resolve the org/repo scope for an installation token (404 / 403 as GitHub answers)."""
        tok = ctx.identity.token
        assert tok is not None
        inst = self._installations[tok.installation_id]
        if "org" in ctx.params:
            org = ctx.params["org"].lower()
            if inst.account.type != "Organization" or inst.account.login.lower() != org:
                raise _Reply(404, "Not Found")
            key = f"org:{org}"
        else:
            owner, name = ctx.params["owner"].lower(), ctx.params["repo"].lower()
            allowed = tok.repositories if tok.repositories is not None else inst.repositories
            known = name in allowed or name in {r.lower() for r in allowed}  # the set only when case differs
            if inst.account.login.lower() != owner or not known:
                raise _Reply(404, "Not Found")
            key = f"repo:{owner}/{name}"
        granted = tok.permissions.get(permission)
        if granted is None or _LEVELS.get(granted, 0) < _LEVELS[level]:
            raise _Reply(403, "Resource not accessible by integration")
        return key

    def _runner_scope(self, ctx: _Ctx, level: str) -> str:
        perm = "organization_self_hosted_runners" if "org" in ctx.params else "administration"
        return self._scope_for(ctx, perm, level)

    @staticmethod
    def _page_args(ctx: _Ctx, default: int = 30) -> tuple[int, int]:
        try:
            per_page = int(ctx.query.get("per_page", default))
            page = int(ctx.query.get("page", 1))
        except ValueError as exc:
            raise _Reply(422, "Invalid request: per_page and page must be integers") from exc
        return max(1, min(per_page, 100)), max(1, page)

    def _paged(self, ctx: _Ctx, items: list[Any], default: int = 30) -> tuple[list[Any], dict[str, str]]:
        per_page, page = self._page_args(ctx, default)
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        base = f"{self.api_url}{ctx.path}"

        def link(p: int, rel: str) -> str:
            q = {**ctx.query, "per_page": str(per_page), "page": str(p)}
            return f'<{base}?{urlencode(q)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return chunk, ({"Link": ", ".join(links)} if links else {})

    async def _json_body(self, ctx: _Ctx) -> JSON:
        raw = await ctx.request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _Reply(400, "Problems parsing JSON") from exc
        if not isinstance(body, dict):
            raise _Reply(400, "Body should be a JSON object")
        return body

    def _repo_run(self, ctx: _Ctx, run_id: int) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.repo.full_name.lower() != f"{ctx.params['owner']}/{ctx.params['repo']}".lower():
            raise _Reply(404, "Not Found")
        return run

    # ------------------------------------------------------------------------------ App (JWT) routes
    async def _h_get_app(self, ctx: _Ctx) -> _Result:
        return _Result(200, self._app_obj())

    async def _h_list_installations(self, ctx: _Ctx) -> _Result:
        items = [self._installation_obj(i) for i in sorted(self._installations.values(), key=lambda i: i.id)]
        chunk, headers = self._paged(ctx, items)
        return _Result(200, chunk, headers)

    async def _h_get_installation(self, ctx: _Ctx) -> _Result:
        inst = self._installations.get(int(ctx.params["iid"]))
        if inst is None:
            raise _Reply(404, "Not Found")
        return _Result(200, self._installation_obj(inst))

    async def _h_access_token(self, ctx: _Ctx) -> _Result:
        inst = self._installations.get(int(ctx.params["iid"]))
        if inst is None:
            raise _Reply(404, "Not Found")
        if inst.suspended_at is not None:
            raise _Reply(403, "This installation has been suspended")
        body = await self._json_body(ctx)
        perms = dict(inst.permissions)
        if isinstance(body.get("permissions"), dict):
            for k, v in body["permissions"].items():
                if _LEVELS.get(inst.permissions.get(k, ""), 0) < _LEVELS.get(v, 99):
                    raise _Reply(422, "The permissions requested are not granted to this installation.")
            perms = dict(body["permissions"])
        repos: list[str] | None = None
        if isinstance(body.get("repositories"), list):
            known = {r.lower() for r in inst.repositories}
            if any(str(r).lower() not in known for r in body["repositories"]):
                raise _Reply(
                    422,
                    "There is at least one repository that does not exist or is not accessible "
                    "to the parent installation.",
                )
            repos = [str(r) for r in body["repositories"]]
        token = "ghs_" + self._alnum(max(1, self.installation_token_length - 4))
        expires = self.clock() + self.token_ttl
        self._tokens[token] = Token(token, inst.id, expires, perms, repos)
        return _Result(
            201,
            {
                "token": token,
                "expires_at": iso(expires),
                "permissions": perms,
                "repository_selection": "selected",
            },
        )

    async def _h_hook_config(self, ctx: _Ctx) -> _Result:
        """``webhook-config``: the secret is masked, and left out when the App has none."""
        config: JSON = {
            "content_type": self.hook_content_type,
            "insecure_ssl": self.hook_insecure_ssl,
            "url": self.webhook_url or "",
        }
        if self.webhook_secret:
            config["secret"] = "********"
        return _Result(200, config)

    async def _h_list_deliveries(self, ctx: _Ctx) -> _Result:
        try:
            per_page = max(1, min(int(ctx.query.get("per_page", 30)), 100))
        except ValueError as exc:
            raise _Reply(422, "Invalid per_page") from exc
        items = sorted(self.deliveries, key=lambda d: d.id, reverse=True)
        status_filter = ctx.query.get("status")
        if status_filter == "success":
            items = [d for d in items if d.ok]
        elif status_filter == "failure":
            items = [d for d in items if not d.ok]
        cursor = ctx.query.get("cursor")
        if cursor:
            try:
                start_id = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("v1_"))
            except ValueError as exc:
                raise _Reply(400, "Invalid cursor") from exc
            items = [d for d in items if d.id <= start_id]
        chunk, rest = items[:per_page], items[per_page:]
        headers: dict[str, str] = {}
        if rest:
            nxt = base64.urlsafe_b64encode(f"v1_{rest[0].id}".encode()).decode()
            q = {k: v for k, v in ctx.query.items() if k not in {"cursor", "per_page"}}
            q.update(per_page=str(per_page), cursor=nxt)
            headers["Link"] = f'<{self.api_url}/app/hook/deliveries?{urlencode(q)}>; rel="next"'
        return _Result(200, [d.summary() for d in chunk], headers)

    def _delivery(self, ctx: _Ctx) -> Delivery:
        did = int(ctx.params["did"])
        for d in self.deliveries:
            if d.id == did:
                return d
        raise _Reply(404, "Not Found")

    async def _h_get_delivery(self, ctx: _Ctx) -> _Result:
        return _Result(200, self._delivery(ctx).detail())

    async def _h_redeliver(self, ctx: _Ctx) -> _Result:
        original = self._delivery(ctx)
        if self.clock() - original.delivered_at > _REDELIVERY_WINDOW:
            raise _Reply(422, "This delivery is too old to redeliver.")
        task = asyncio.create_task(self._redeliver(original))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _Result(202, {})

    async def _redeliver(self, original: Delivery) -> None:
        await self._send(original.event, original.body, original.guid, redelivery=True)

    # ------------------------------------------------------------------------ installation routes
    async def _h_installation_repos(self, ctx: _Ctx) -> _Result:
        tok = ctx.identity.token
        assert tok is not None
        inst = self._installations[tok.installation_id]
        names = tok.repositories if tok.repositories is not None else inst.repositories
        repos = [repo_obj(self._repo(f"{inst.account.login}/{n}"), self._urls) for n in names]
        chunk, headers = self._paged(ctx, repos)
        body = {"total_count": len(repos), "repository_selection": "selected", "repositories": chunk}
        return _Result(200, body, headers)

    async def _h_registration_token(self, ctx: _Ctx) -> _Result:
        scope = self._runner_scope(ctx, "write")
        token = self._alnum(29).upper()
        expires = self.clock() + 3600.0
        self._registration_tokens[token] = (scope, expires)
        return _Result(201, {"token": token, "expires_at": iso(expires)})

    async def _h_jitconfig(self, ctx: _Ctx) -> _Result:
        scope = self._runner_scope(ctx, "write")
        body = await self._json_body(ctx)
        name, group, labels = body.get("name"), body.get("runner_group_id"), body.get("labels")
        work = body.get("work_folder", "_work")
        problems: list[str] = []
        if not isinstance(name, str) or not name.strip():
            problems.append('"name" wasn\'t supplied.' if name is None else "name is not a valid string.")
        if group is None:
            problems.append('"runner_group_id" wasn\'t supplied.')
        elif not isinstance(group, int) or isinstance(group, bool):
            problems.append("runner_group_id is not an integer.")
        if labels is None:
            problems.append('"labels" wasn\'t supplied.')
        elif (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= 100
            or not all(isinstance(x, str) and x for x in labels)
        ):
            problems.append("labels must be a list of 1 to 100 non-empty strings.")
        if not isinstance(work, str):
            problems.append("work_folder is not a string.")
        if problems:
            raise _Reply(422, "Invalid request.\n\n" + "\n".join(problems))
        assert isinstance(name, str)
        assert isinstance(group, int)
        assert isinstance(labels, list)
        owner = scope.split(":", 1)[1].split("/", 1)[0]
        if group not in self._groups.get(owner, {1: "Default"}):
            raise _Reply(404, "Not Found")
        if any(r.name.lower() == name.lower() for r in self._runners.get(scope, [])):
            raise _Reply(409, f"Already exists - A runner with the name {name} already exists.")
        runner = Runner(
            id=self._new_id("runner"),
            name=name,
            scope=scope,
            labels=list(labels),
            runner_group_id=group,
            os="unknown",
            status="offline",
            ephemeral=True,
            version=None,
        )
        self._runners.setdefault(scope, []).append(runner)
        encoded = self._encode_jit(runner, work)
        self._jit_configs[encoded] = runner.id
        obj = self._runner_obj(runner)
        return _Result(201, {"runner": obj, "encoded_jit_config": encoded})

    def _encode_jit(self, runner: Runner, work_folder: str) -> str:
        target = runner.scope.split(":", 1)[1]
        settings = {
            "AgentId": runner.id,
            "AgentName": runner.name,
            "PoolId": runner.runner_group_id,
            "PoolName": self._group_name(runner),
            "DisableUpdate": True,
            "Ephemeral": True,
            "ServerUrl": f"https://pipelines.actions.githubusercontent.com/{self._alnum(16)}",
            "GitHubUrl": f"{self._urls.html}/{target}",
            "WorkFolder": work_folder,
        }
        creds = {"Scheme": "OAuth", "Data": {"clientId": str(uuid.UUID(int=self._ids.getrandbits(128)))}}
        files = {
            ".runner": base64.b64encode(json.dumps(settings).encode()).decode(),
            ".credentials": base64.b64encode(json.dumps(creds).encode()).decode(),
            ".credentials_rsaparams": base64.b64encode(self._alnum(64).encode()).decode(),
        }
        return base64.b64encode(json.dumps(files).encode()).decode()

    async def _h_list_runners(self, ctx: _Ctx) -> _Result:
        scope = self._runner_scope(ctx, "read")
        runners = self._runners.get(scope, [])
        if "name" in ctx.query:
            runners = [r for r in runners if r.name == ctx.query["name"]]
        total = len(runners)
        if "name" not in ctx.query and self._skipped_in_listings:
            runners = [r for r in runners if not self._skips(r.name)]
        items = [self._runner_obj(r) for r in runners]
        chunk, headers = self._paged(ctx, items)
        return _Result(200, {"total_count": total, "runners": chunk}, headers)

    def _skips(self, name: str) -> bool:
        left = self._skipped_in_listings.get(name, 0)
        if left <= 0:
            return False
        self._skipped_in_listings[name] = left - 1
        return True

    def _runner_in(self, scope: str, ctx: _Ctx) -> Runner:
        rid = int(ctx.params["rid"])
        for r in self._runners.get(scope, []):
            if r.id == rid:
                return r
        raise _Reply(404, "Not Found")

    async def _h_get_runner(self, ctx: _Ctx) -> _Result:
        scope = self._runner_scope(ctx, "read")
        return _Result(200, self._runner_obj(self._runner_in(scope, ctx)))

    async def _h_delete_runner(self, ctx: _Ctx) -> _Result:
        scope = self._runner_scope(ctx, "write")
        runner = self._runner_in(scope, ctx)
        if runner.busy:
            raise _Reply(422, f'Bad request - Runner "{runner.name}" is still running a job"')
        self._runners[scope].remove(runner)
        self._jit_configs = {k: v for k, v in self._jit_configs.items() if v != runner.id}
        return _Result(204)

    async def _h_runner_groups(self, ctx: _Ctx) -> _Result:
        scope = self._scope_for(ctx, "organization_self_hosted_runners", "read")
        org = scope.split(":", 1)[1]
        groups = []
        for gid, name in sorted(self._groups.get(org, {1: "Default"}).items()):
            group_url = f"{self.api_url}/orgs/{org}/actions/runner-groups/{gid}"
            groups.append(
                {
                    "id": gid,
                    "name": name,
                    "visibility": "all",
                    "default": gid == 1,
                    "runners_url": f"{group_url}/runners",
                    "hosted_runners_url": f"{group_url}/hosted-runners",
                    "inherited": False,
                    "allows_public_repositories": False,
                    "restricted_to_workflows": False,
                    "selected_workflows": [],
                    "workflow_restrictions_read_only": False,
                }
            )
        chunk, headers = self._paged(ctx, groups)
        return _Result(200, {"total_count": len(groups), "runner_groups": chunk}, headers)

    async def _h_list_runs(self, ctx: _Ctx) -> _Result:
        self._scope_for(ctx, "actions", "read")
        full = f"{ctx.params['owner']}/{ctx.params['repo']}".lower()
        runs = list(self._runs_of_repo.get(full, ()))
        runs.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        items = [self._run_obj(r) for r in runs]
        wanted = ctx.query.get("status")
        if wanted:
            items = [r for r in items if wanted in {r["status"], r["conclusion"]}]
        if ctx.query.get("event"):
            items = [r for r in items if r["event"] == ctx.query["event"]]
        chunk, headers = self._paged(ctx, items)
        return _Result(200, {"total_count": len(items), "workflow_runs": chunk}, headers)

    async def _h_get_run(self, ctx: _Ctx) -> _Result:
        self._scope_for(ctx, "actions", "read")
        return _Result(200, self._run_obj(self._repo_run(ctx, int(ctx.params["run_id"]))))

    async def _h_run_jobs(self, ctx: _Ctx) -> _Result:
        self._scope_for(ctx, "actions", "read")
        run = self._repo_run(ctx, int(ctx.params["run_id"]))
        items = [self._job_obj(self._jobs[j]) for j in run.job_ids]
        chunk, headers = self._paged(ctx, items)
        return _Result(200, {"total_count": len(items), "jobs": chunk}, headers)

    async def _h_get_job(self, ctx: _Ctx) -> _Result:
        self._scope_for(ctx, "actions", "read")
        job = self._jobs.get(int(ctx.params["job_id"]))
        if job is None:
            raise _Reply(404, "Not Found")
        self._repo_run(ctx, job.run_id)
        return _Result(200, self._job_obj(job))

    # ------------------------------------------------------------------------------- other routes
    async def _h_manifest_conversion(self, ctx: _Ctx) -> _Result:
        entry = self._manifest_codes.pop(ctx.params["code"], None)
        if entry is None or self.clock() - entry[1] > 3600.0:
            raise _Reply(404, "Not Found")
        manifest = entry[0]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        new_id = self.app_id + 1000 + len(self.converted_manifests)
        name = str(manifest.get("name") or f"app-{new_id}")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        now = iso(self.clock())
        hook = manifest.get("hook_attributes")
        owner = Account(login="ghapp-owner", id=1, type="Organization")
        app = {
            "id": new_id,
            "slug": slug,
            "node_id": node_id("Integration", new_id),
            "client_id": f"Iv23li{new_id:010d}",
            "owner": user_obj(owner, self._urls),
            "name": name,
            "description": manifest.get("description"),
            "external_url": manifest.get("url", ""),
            "html_url": f"{self._urls.html}/apps/{slug}",
            "created_at": now,
            "updated_at": now,
            "permissions": dict(manifest.get("default_permissions") or {}),
            "events": list(manifest.get("default_events") or []),
            "installations_count": 0,
            "client_secret": self._hex(40),
            "webhook_secret": self._hex(40) if isinstance(hook, dict) and hook.get("url") else None,
            "pem": pem,
        }
        self.converted_manifests.append({"code": ctx.params["code"], "manifest": manifest, "app": app})
        return _Result(201, app)

    async def _h_rate_limit(self, ctx: _Ctx) -> _Result:
        ident = ctx.identity
        if ident.kind == "installation" and ident.installation_id is not None:
            bucket = self._bucket(("installation", ident.installation_id))
        elif ident.kind == "jwt":
            bucket = self._bucket(("app", self.app_id))
        else:
            bucket = self._bucket(("ip", 0))
        core = {
            "limit": bucket.limit,
            "used": bucket.used,
            "remaining": bucket.remaining,
            "reset": int(bucket.reset),
        }
        reset = int(self.clock() + 3600)
        other = {
            "search": (30, reset),
            "graphql": (5000, reset),
            "integration_manifest": (5000, reset),
            "actions_runner_registration": (10000, reset),
        }
        resources: JSON = {"core": core}
        for k, (limit, r) in other.items():
            resources[k] = {"limit": limit, "used": 0, "remaining": limit, "reset": r}
        return _Result(200, {"resources": resources, "rate": core})
