"""Typed calls to the GitHub REST API that ghapp uses, with retries and rate-limit handling.

One `GitHubClient` per process, on one shared aiohttp session. App calls carry the App's JWT; installation
calls carry that installation's token from the cache (re-minted once on a 401).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import gidgethub
from gidgethub import aiohttp as gh_aiohttp

from ghapp import __version__
from ghapp.answers import CompressedAnswers
from ghapp.auth import AppAuth, InstallationTokens
from ghapp.budget import DEFAULT_LIMIT, Budget, RateWindow
from ghapp.cache import Expiring, ExpiringCache
from ghapp.clock import Clock, parse_timestamp
from ghapp.errors import BudgetSpent, GitHubError, InstallationGone, RateLimited, RunnerGroupNotFound
from ghapp.metrics import Metrics
from ghapp.planner import RunnerScope
from ghapp.retry import Backoff
from ghapp.sensitive import Secret

log = logging.getLogger(__name__)

USER_AGENT: Final = f"ghapp/{__version__}"
REGISTRATION_TOKEN_MARGIN: Final = 45 * 60.0
"""A registration token (valid one hour) is reused only while at least this many seconds of it remain.

A runner pod may take long to start (node autoscaling, large images) before ``config.sh`` uses the token;
45 minutes leave room for that, and a token is still shared by every launch of its first quarter hour.
"""
SECONDARY_LIMIT_WAIT: Final = 60.0
"""GitHub's advice when a secondary limit answer has no retry-after: wait at least a minute."""
RUNNER_GROUPS_LIFETIME: Final = 600.0
"""An organisation's runner groups (name → id) are looked up again after this many seconds."""
WORKFLOW_RUN_LIFETIME: Final = 86400.0
"""A workflow run's head repository is remembered this long (it never changes)."""
WORKFLOW_RUN_CACHE_SIZE: Final = 10_000
"""At most this many workflow runs' head repositories are remembered."""
DELETED_REPOSITORY: Final = "(deleted repository)"
"""The head repository of a run whose head repository is gone (a deleted fork): never the base."""
CACHE_ENTRIES: Final = 20_000
"""GitHub answers kept for conditional requests, by default (``GHAPP_GITHUB_CACHE_ENTRIES``)."""
NOT_MODIFIED: Final = 304
DEFAULT_RUNNER_GROUP_ID: Final = 1
"""The id of every organisation's default runner group; repository runners always join it."""


@dataclass(frozen=True, slots=True)
class JitConfig:
    """A just-in-time runner configuration: the runner GitHub registered and its encoded config."""

    runner_id: int
    encoded: Secret


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """A registered self-hosted runner, as ``GET …/actions/runners`` lists it."""

    id: int
    name: str
    status: str
    busy: bool


@dataclass(slots=True)
class _Exchange:
    """Status and headers of the last HTTP exchange of one logical call (filled by `_RecordingAPI`)."""

    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)


_exchange: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar("ghapp_exchange", default=None)


class _RecordingAPI(gh_aiohttp.GitHubAPI):
    """gidgethub's aiohttp client, recording each response's status and headers for the caller."""

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        status, response_headers, data = await super()._request(method, url, headers, body)
        exchange = _exchange.get()
        if exchange is not None:
            exchange.status = status
            exchange.headers = response_headers
        return status, response_headers, data


_raise_rate_limits: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ghapp_raise_rate_limits", default=False
)


@contextmanager
def no_rate_limit_waits() -> Iterator[None]:
    """Within this block a rate limit raises `RateLimited` at once instead of waiting inside the call, so a
    caller holding something (a launch slot) can let go of it before it waits."""
    reset = _raise_rate_limits.set(True)
    try:
        yield
    finally:
        _raise_rate_limits.reset(reset)


Auth = Literal["app"] | int
"""Who a call is made as: the App (JWT) or an installation (its id)."""


class RateLimits:
    """The primary rate-limit window last seen per installation (and the App): wait, don't fail."""

    def __init__(self, *, metrics: Metrics) -> None:
        self._windows: dict[str, RateWindow] = {}
        self._metrics = metrics

    def observe(self, bucket: str, headers: Mapping[str, str]) -> None:
        try:
            remaining = int(headers["x-ratelimit-remaining"])
            reset_at = float(headers["x-ratelimit-reset"])
            limit = int(headers.get("x-ratelimit-limit") or DEFAULT_LIMIT)
        except (KeyError, ValueError):
            return
        self.record(bucket, RateWindow(limit=limit, remaining=remaining, reset_at=reset_at))

    def record(self, bucket: str, window: RateWindow) -> None:
        self._windows[bucket] = window
        self._metrics.github_rate_limit_remaining.labels(bucket).set(window.remaining)
        self._metrics.github_rate_limit_reset.labels(bucket).set(window.reset_at)

    def wait_needed(self, bucket: str, now: float) -> float:
        """Seconds to wait before calling as `bucket` (0 unless its window is used up)."""
        window = self._windows.get(bucket)
        if window is None or window.remaining > 0 or window.reset_at <= now:
            return 0.0
        return window.reset_at - now + 1.0

    def remaining(self, bucket: str) -> int | None:
        window = self._windows.get(bucket)
        return None if window is None else window.remaining

    def window(self, bucket: str) -> RateWindow | None:
        """The window GitHub last described for `bucket`, if any."""
        return self._windows.get(bucket)


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def endpoint_template(path: str) -> str:
    """A low-cardinality name for a path, for metrics: numbers become ``{id}``, owners and repos ``{x}``."""
    path = _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])
    path = re.sub(r"^/app-manifests/[^/]+", "/app-manifests/{code}", path)
    path = re.sub(r"^/orgs/[^/]+", "/orgs/{org}", path)
    return re.sub(r"^/repos/[^/]+/[^/]+", "/repos/{owner}/{repo}", path)


class GitHubClient:
    """The GitHub REST calls ghapp makes, as typed methods."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        api_url: str,
        app_auth: AppAuth,
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff | None = None,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        # GETs send If-None-Match / If-Modified-Since for answers kept here; a 304 is served from it (and is
        # not counted against the rate limit by GitHub)
        cache = CompressedAnswers(maxsize=cache_entries) if cache_entries else None
        self._api = _RecordingAPI(session, USER_AGENT, base_url=api_url, cache=cache)
        self._app_auth = app_auth
        self._clock = clock
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self.rate_limits = RateLimits(metrics=metrics)
        self.tokens = InstallationTokens(mint=self._mint_installation_token, clock=clock)
        self._registration_tokens: ExpiringCache[tuple[int, RunnerScope], Secret] = ExpiringCache(
            fetch=self._fetch_registration_token, clock=clock, margin=REGISTRATION_TOKEN_MARGIN
        )
        self._runner_groups: ExpiringCache[tuple[int, str], Mapping[str, int]] = ExpiringCache(
            fetch=self._fetch_runner_groups, clock=clock, margin=0.0
        )
        self._app_owner: ExpiringCache[str, str] = ExpiringCache(
            fetch=self._fetch_app_owner, clock=clock, margin=0.0
        )
        self._head_repositories: ExpiringCache[tuple[int, str, int], str] = ExpiringCache(
            fetch=self._fetch_head_repository, clock=clock, margin=0.0, max_entries=WORKFLOW_RUN_CACHE_SIZE
        )

    # -- the calls -------------------------------------------------------------------------------------

    async def registration_token(self, *, installation_id: int, scope: RunnerScope) -> Secret:
        """A runner registration token for `scope`, shared by all runners until shortly before it expires."""
        return await self._registration_tokens.get((installation_id, scope))

    async def _fetch_registration_token(self, key: tuple[int, RunnerScope]) -> Expiring[Secret]:
        installation_id, scope = key
        data = await self.request(
            "POST", f"{scope.api_path}/actions/runners/registration-token", auth=installation_id, data={}
        )
        return Expiring(Secret(_field(data, "token", str)), parse_timestamp(_field(data, "expires_at", str)))

    # -- JIT runners and runner groups --------------------------------------------------------------------

    async def generate_jitconfig(
        self, *, installation_id: int, scope: RunnerScope, name: str, runner_group_id: int, labels: list[str]
    ) -> JitConfig:
        """Register runner `name` and return its JIT config. `GitHubError` status 409: the name is taken."""
        data = await self.request(
            "POST",
            f"{scope.api_path}/actions/runners/generate-jitconfig",
            auth=installation_id,
            data={"name": name, "runner_group_id": runner_group_id, "labels": labels, "work_folder": "_work"},
        )
        runner = _field(data, "runner", Mapping)
        return JitConfig(_field(runner, "id", int), Secret(_field(data, "encoded_jit_config", str)))

    async def find_runner(self, *, installation_id: int, scope: RunnerScope, name: str) -> RunnerInfo | None:
        """The runner called `name` in `scope`, or None."""
        data = await self.request(
            "GET", f"{scope.api_path}/actions/runners", auth=installation_id, params={"name": name}
        )
        for item in _field(data, "runners", list):
            if isinstance(item, Mapping) and item.get("name") == name:
                return RunnerInfo(
                    id=_field(item, "id", int),
                    name=name,
                    status=str(item.get("status", "")),
                    busy=bool(item.get("busy")),
                )
        return None

    async def delete_runner(self, *, installation_id: int, scope: RunnerScope, runner_id: int) -> bool:
        """Deregister a runner; False if it was gone already. `GitHubError` 422: it is running a job."""
        try:
            await self.request(
                "DELETE", f"{scope.api_path}/actions/runners/{runner_id}", auth=installation_id
            )
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def runner_group_id(self, *, installation_id: int, org: str, name: str) -> int:
        """The id of `org`'s runner group called `name` (case-insensitive); groups are cached per org.

        Raises `RunnerGroupNotFound` if the organisation has no such group.
        """
        groups = await self._runner_groups.get((installation_id, org.lower()))
        group_id = groups.get(name.lower())
        if group_id is None:
            raise RunnerGroupNotFound(org=org, group=name)
        return group_id

    async def _fetch_runner_groups(self, key: tuple[int, str]) -> Expiring[Mapping[str, int]]:
        installation_id, org = key
        groups: dict[str, int] = {}
        page = 1
        while True:
            data, more = await self.request_page(
                "GET",
                f"/orgs/{org}/actions/runner-groups",
                auth=installation_id,
                params={"per_page": 100, "page": page},
            )
            for group in _field(data, "runner_groups", list):
                if isinstance(group, Mapping) and isinstance(group.get("name"), str):
                    groups.setdefault(group["name"].lower(), _field(group, "id", int))
            if not more:
                return Expiring(groups, self._clock.now() + RUNNER_GROUPS_LIFETIME)
            page += 1

    # -- facts the runner policy needs ---------------------------------------------------------------------

    async def app_owner(self) -> str:
        """The login of the account that owns the App (``GET /app``, once per process)."""
        return await self._app_owner.get("app")

    async def _fetch_app_owner(self, _: str) -> Expiring[str]:
        return Expiring((await self.app()).owner, float("inf"))

    async def head_repository(self, *, installation_id: int, repository: str, run_id: int) -> str:
        """``owner/name`` of the repository a workflow run's head commit comes from (cached per run)."""
        return await self._head_repositories.get((installation_id, repository, run_id))

    async def _fetch_head_repository(self, key: tuple[int, str, int]) -> Expiring[str]:
        installation_id, repository, run_id = key
        data = await self.request("GET", f"/repos/{repository}/actions/runs/{run_id}", auth=installation_id)
        head = data.get("head_repository") if isinstance(data, Mapping) else None
        name = head.get("full_name") if isinstance(head, Mapping) else None
        full_name = name if isinstance(name, str) else DELETED_REPOSITORY
        return Expiring(full_name, self._clock.now() + WORKFLOW_RUN_LIFETIME)

    async def _mint_installation_token(self, installation_id: int) -> Expiring[Secret]:
        try:
            data = await self.request(
                "POST", f"/app/installations/{installation_id}/access_tokens", auth="app", data={}
            )
        except GitHubError as exc:
            if exc.status == 404:
                raise InstallationGone(
                    installation_id=installation_id, reason="deleted", status=404
                ) from None
            if exc.status == 403 and "suspended" in str(exc).lower():
                raise InstallationGone(
                    installation_id=installation_id, reason="suspended", status=403
                ) from None
            raise
        log.info("minted an installation token", extra={"installation_id": installation_id})
        return Expiring(Secret(_field(data, "token", str)), parse_timestamp(_field(data, "expires_at", str)))

    async def deliveries(self, *, since: float, max_pages: int = 50) -> list[dict[str, Any]]:
        """The App's webhook deliveries (newest first) delivered at or after `since` (epoch seconds)."""
        found: list[dict[str, Any]] = []
        params: dict[str, str | int] = {"per_page": 100}
        for _ in range(max_pages):
            page, link = await self.request_page("GET", "/app/hook/deliveries", auth="app", params=params)
            items = [item for item in page or [] if isinstance(item, dict)]
            fresh = [item for item in items if _delivered_at(item) >= since]
            found.extend(fresh)
            cursor = next_cursor(link)
            if not cursor or len(fresh) < len(items):
                break
            params = {"per_page": 100, "cursor": cursor}
        return found

    async def redeliver(self, delivery_id: int) -> None:
        """Ask GitHub to send a delivery again (same GUID)."""
        await self.request("POST", f"/app/hook/deliveries/{delivery_id}/attempts", auth="app", data={})

    async def workflow_runs(
        self, *, installation_id: int, repository: str, status: str, budget: Budget | None = None
    ) -> list[dict[str, Any]]:
        """Every workflow run of `repository` whose status is `status` (all pages; `BudgetSpent` if the
        budget runs out first)."""
        return await self._all_items(
            f"/repos/{repository}/actions/runs",
            "workflow_runs",
            auth=installation_id,
            params={"status": status, "per_page": 100},
            budget=budget,
        )

    async def run_jobs(
        self, *, installation_id: int, repository: str, run_id: int, budget: Budget | None = None
    ) -> list[dict[str, Any]]:
        """The jobs of a workflow run's latest attempt (all pages; `BudgetSpent` if the budget runs out)."""
        return await self._all_items(
            f"/repos/{repository}/actions/runs/{run_id}/jobs",
            "jobs",
            auth=installation_id,
            params={"filter": "latest", "per_page": 100},
            budget=budget,
        )

    async def _all_items(
        self,
        path: str,
        key: str,
        *,
        auth: Auth,
        params: Mapping[str, str | int],
        budget: Budget | None,
        max_pages: int = 100,
    ) -> list[dict[str, Any]]:
        """The `key` lists of every page of a listing, following ``Link: rel="next"`` as GitHub says to.

        Each page GitHub answers in full takes one request from `budget` (a page that did not change since
        it was cached, 304, is free); when it has none left, `BudgetSpent` is raised.
        """
        found: list[dict[str, Any]] = []
        url: str | None = path
        query: Mapping[str, str | int] | None = params
        endpoint = endpoint_template(path)
        for _ in range(max_pages):
            if url is None:
                break
            if budget is not None and not budget.reserve():
                raise BudgetSpent(f"the rate-limit budget ran out listing {endpoint}")
            try:
                data, url, status = await self._send("GET", url, auth=auth, params=query, endpoint=endpoint)
            except BaseException:
                if budget is not None:
                    budget.release()
                raise
            if budget is not None:
                budget.settle(unchanged=status == NOT_MODIFIED)
            query = None  # the next page's URL carries the whole query
            items = data.get(key) if isinstance(data, dict) else None
            found.extend(item for item in items or [] if isinstance(item, dict))
        return found

    async def rate_window(self, *, installation_id: int) -> RateWindow | None:
        """The installation's primary rate-limit window now, from ``GET /rate_limit`` (free of charge);
        None when GitHub's answer does not describe one."""
        data = await self.request("GET", "/rate_limit", auth=installation_id)
        resources = data.get("resources") if isinstance(data, dict) else None
        core = resources.get("core") if isinstance(resources, dict) else None
        if not isinstance(core, dict):
            return None
        try:
            window = RateWindow(
                limit=int(core["limit"]), remaining=int(core["remaining"]), reset_at=float(core["reset"])
            )
        except (KeyError, TypeError, ValueError):
            return None
        self.rate_limits.record(str(installation_id), window)
        return window

    async def workflow_job(self, *, installation_id: int, repository: str, job_id: int) -> dict[str, Any]:
        """One workflow job as GitHub has it now (its ``status``: queued, in_progress, completed, …)."""
        data = await self.request("GET", f"/repos/{repository}/actions/jobs/{job_id}", auth=installation_id)
        if not isinstance(data, dict):
            raise GitHubError("GitHub's answer to GET …/actions/jobs/{id} is not an object")
        return data

    async def runners(self, *, installation_id: int, scope: RunnerScope) -> list[dict[str, Any]]:
        """Every self-hosted runner registered in `scope` (all pages)."""
        return await self._all_items(
            f"{scope.api_path}/actions/runners",
            "runners",
            auth=installation_id,
            params={"per_page": 100},
            budget=None,
        )

    async def remove_runner(self, *, installation_id: int, scope: RunnerScope, runner_id: int) -> bool:
        """Deregister a runner unless busy; False if GitHub refuses (422: running a job) or it is gone."""
        try:
            return await self.delete_runner(installation_id=installation_id, scope=scope, runner_id=runner_id)
        except GitHubError as exc:
            if exc.status == 422:
                return False
            raise

    # -- the machinery ---------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: Auth,
        data: Any = b"",
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        """One logical call: retried on transient failures, waiting out rate limits; JSON body or None."""
        body, _ = await self.request_page(method, path, auth=auth, data=data, params=params)
        return body

    async def request_page(
        self,
        method: str,
        path: str,
        *,
        auth: Auth,
        data: Any = b"",
        params: Mapping[str, str | int] | None = None,
        endpoint: str | None = None,
    ) -> tuple[Any, str | None]:
        """Like `request`, also returning the ``Link: rel="next"`` URL (or None).

        `path` may be a next page's full URL; `endpoint` then names the listing for metrics.
        """
        body, more, _ = await self._send(method, path, auth=auth, data=data, params=params, endpoint=endpoint)
        return body, more

    async def _send(
        self,
        method: str,
        path: str,
        *,
        auth: Auth,
        data: Any = b"",
        params: Mapping[str, str | int] | None = None,
        endpoint: str | None = None,
    ) -> tuple[Any, str | None, int]:
        """`request_page`, also returning the answer's status: 304 when a GET was served from the cache."""
        url = path
        if params:
            url += "?" + "&".join(f"{key}={value}" for key, value in params.items())
        endpoint = endpoint or endpoint_template(path)
        bucket = "app" if auth == "app" else str(auth)
        reminted = False
        attempt = 0
        while True:
            attempt += 1
            wait = self.rate_limits.wait_needed(bucket, self._clock.now())
            if wait and _raise_rate_limits.get():
                raise RateLimited(
                    f"GitHub rate limit of {bucket} used up; not calling {method} {endpoint}",
                    retry_after=wait,
                    bucket=bucket,
                    endpoint=endpoint,
                )
            if wait:
                log.warning(
                    "GitHub rate limit used up; waiting for the reset",
                    extra={"installation_id": bucket, "seconds": round(wait, 1)},
                )
                await self._clock.sleep(wait)
            credential = self._app_auth.jwt() if auth == "app" else await self.tokens.get(auth)
            exchange = _Exchange()
            reset = _exchange.set(exchange)
            try:
                body, more, status = await self._api._make_request(
                    method,
                    url,
                    {},
                    data,
                    gidgethub.sansio.accept_format(),
                    jwt=credential.reveal() if auth == "app" else None,
                    oauth_token=None if auth == "app" else credential.reveal(),
                )
                self._record(endpoint, exchange, bucket)
                return body, more, status
            except gidgethub.HTTPException as exc:
                self._record(endpoint, exchange, bucket)
                status = exc.status_code.value
                if status == 401 and auth != "app" and not reminted:
                    log.warning(
                        "installation token refused (401); minting a new one", extra={"installation_id": auth}
                    )
                    self.tokens.invalidate(auth, credential)
                    reminted = True
                    continue
                delay = self._retry_delay(status, exc.headers or {}, _message(exc), attempt)
                if delay is not None and status in (403, 429) and _raise_rate_limits.get():
                    raise RateLimited(
                        f"GitHub answered {status} to {method} {endpoint}: {_message(exc)}",
                        retry_after=delay,
                        bucket=bucket,
                        status=status,
                        endpoint=endpoint,
                    ) from None
                if delay is None or attempt >= self._backoff.attempts:
                    raise GitHubError(
                        f"GitHub answered {status} to {method} {endpoint}: {_message(exc)}",
                        status=status,
                        endpoint=endpoint,
                    ) from None
                failure = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._metrics.github_requests.labels(endpoint, "0").inc()
                if attempt >= self._backoff.attempts:
                    raise GitHubError(
                        f"GitHub unreachable for {method} {endpoint}: {type(exc).__name__}", endpoint=endpoint
                    ) from None
                delay = self._backoff.delay(attempt)
                failure = type(exc).__name__
            finally:
                _exchange.reset(reset)
            log.info(
                "GitHub call failed; retrying",
                extra={
                    "endpoint": endpoint,
                    "failure": failure,
                    "attempt": attempt,
                    "seconds": round(delay, 2),
                },
            )
            await self._clock.sleep(delay)

    def _retry_delay(
        self, status: int, headers: Mapping[str, str], message: str, attempt: int
    ) -> float | None:
        """How long to wait before retrying a failed answer, or None when retrying cannot help."""
        if status >= 500:
            return self._backoff.delay(attempt)
        if status in (403, 429):
            if "retry-after" in headers:
                try:
                    return max(1.0, float(headers["retry-after"]))
                except ValueError:
                    return SECONDARY_LIMIT_WAIT
            if headers.get("x-ratelimit-remaining") == "0":
                reset = float(headers.get("x-ratelimit-reset", "0") or 0)
                return max(1.0, reset - self._clock.now() + 1.0)
            if status == 429 or "rate limit" in message.lower():
                return SECONDARY_LIMIT_WAIT * attempt
        return None

    def _record(self, endpoint: str, exchange: _Exchange, bucket: str) -> None:
        self._metrics.github_requests.labels(endpoint, str(exchange.status)).inc()
        self.rate_limits.observe(bucket, exchange.headers)

    # -- the App itself (``ghapp check``) ----------------------------------------------------------------

    async def app(self) -> AppInfo:
        """``GET /app`` as the App (JWT): proves GitHub accepts the App's key and id."""
        data = await self.request("GET", "/app", auth="app")
        return AppInfo(
            id=int(_field(data, "id", int)),
            slug=str(_field(data, "slug", str)),
            owner=str(_field(_field(data, "owner", Mapping), "login", str)),
            html_url=str(_field(data, "html_url", str)),
            permissions=_permissions(data),
            events=tuple(str(event) for event in data.get("events") or () if isinstance(event, str)),
        )

    async def hook_config(self) -> HookConfig:
        """``GET /app/hook/config`` (JWT): where and how GitHub sends the App's webhooks."""
        data = await self.request("GET", "/app/hook/config", auth="app")
        if not isinstance(data, Mapping):
            raise GitHubError("GitHub's answer to GET /app/hook/config is not an object")
        return HookConfig(
            url=str(data.get("url") or ""),
            content_type=str(data.get("content_type") or ""),
            secret_set=bool(data.get("secret")),
            insecure_ssl=str(data.get("insecure_ssl", "0")) not in ("0", ""),
        )

    async def installations(self) -> list[InstallationInfo]:
        """``GET /app/installations`` (JWT), every page: where the App is installed and with what rights."""
        found: list[InstallationInfo] = []
        page = 1
        while True:
            data = await self.request(
                "GET", "/app/installations", auth="app", params={"per_page": INSTALLATIONS_PAGE, "page": page}
            )
            if not isinstance(data, list):
                raise GitHubError("GitHub's answer to GET /app/installations is not a list")
            found.extend(InstallationInfo.from_json(item) for item in data)
            if len(data) < INSTALLATIONS_PAGE:
                return found
            page += 1


def _field(data: Any, key: str, kind: type) -> Any:
    if not isinstance(data, Mapping) or not isinstance(data.get(key), kind):
        raise GitHubError(f"GitHub's answer lacks '{key}'")
    return data[key]


def _message(exc: gidgethub.HTTPException) -> str:
    """GitHub's error message (never contains our credentials)."""
    return str(exc.args[0]) if exc.args else exc.status_code.phrase


def _delivered_at(item: Mapping[str, Any]) -> float:
    value = item.get("delivered_at")
    try:
        return parse_timestamp(value) if isinstance(value, str) else 0.0
    except ValueError:
        return 0.0


def next_cursor(link: str | None) -> str | None:
    """The ``cursor`` query parameter of a ``rel="next"`` URL, for cursor-paginated endpoints."""
    if not link:
        return None
    values = parse_qs(urlsplit(link).query).get("cursor")
    return values[0] if values else None


INSTALLATIONS_PAGE: Final = 100


@dataclass(frozen=True, slots=True)
class AppInfo:
    """What ``GET /app`` says about the App."""

    id: int
    slug: str
    owner: str
    """The login of the account that owns the App."""
    html_url: str
    permissions: dict[str, str]
    events: tuple[str, ...] = ()
    """The webhook events the App subscribes to."""


@dataclass(frozen=True, slots=True)
class HookConfig:
    """What ``GET /app/hook/config`` says (GitHub masks the secret as ``********``; only whether one is set
    is kept)."""

    url: str
    content_type: str
    """``json`` or ``form``."""
    secret_set: bool
    insecure_ssl: bool
    """True when GitHub does not verify the receiver's TLS certificate."""


@dataclass(frozen=True, slots=True)
class InstallationInfo:
    """One installation of the App, as ``GET /app/installations`` lists it."""

    id: int
    account: str
    account_type: str
    """``Organization`` or ``User``."""
    permissions: dict[str, str]
    suspended: bool

    @classmethod
    def from_json(cls, data: Any) -> InstallationInfo:
        account = _field(data, "account", Mapping)
        return cls(
            id=int(_field(data, "id", int)),
            account=str(_field(account, "login", str)),
            account_type=str(data.get("target_type") or account.get("type") or ""),
            permissions=_permissions(data),
            suspended=bool(data.get("suspended_at")),
        )


def _permissions(data: Any) -> dict[str, str]:
    permissions = data.get("permissions") if isinstance(data, Mapping) else None
    if not isinstance(permissions, Mapping):
        return {}
    return {str(key): str(value) for key, value in permissions.items()}


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """What GitHub hands over once when an App is created from a manifest. Repr shows no secrets."""

    id: int
    slug: str
    html_url: str
    client_id: str
    pem: Secret
    webhook_secret: Secret
    client_secret: Secret

    @property
    def install_url(self) -> str:
        """Where a person installs the App on an organisation or on repositories."""
        return f"{self.html_url}/installations/new"


MANIFEST_CONVERSION: Final = "POST /app-manifests/{code}/conversions"
_MANIFEST_CODE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


async def convert_manifest(*, session: aiohttp.ClientSession, api_url: str, code: str) -> AppCredentials:
    """``POST /app-manifests/{code}/conversions`` (no authentication): the new App's id, key and secrets.

    The code is single-use and expires after an hour; errors never repeat it or any credential.
    """
    if not _MANIFEST_CODE.match(code):
        raise GitHubError("the manifest code is malformed", status=400, endpoint=MANIFEST_CONVERSION)
    api = gh_aiohttp.GitHubAPI(session, USER_AGENT, base_url=api_url)
    try:
        data = await api.post(f"/app-manifests/{code}/conversions", data={})
    except gidgethub.HTTPException as exc:
        status = exc.status_code.value
        raise GitHubError(
            f"GitHub answered {status} to {MANIFEST_CONVERSION}: {_message(exc)}"
            + (" (the code is unknown, used already, or older than an hour)" if status == 404 else ""),
            status=status,
            endpoint=MANIFEST_CONVERSION,
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GitHubError(
            f"GitHub unreachable for {MANIFEST_CONVERSION}: {type(exc).__name__}",
            endpoint=MANIFEST_CONVERSION,
        ) from None
    return AppCredentials(
        id=int(_field(data, "id", int)),
        slug=str(_field(data, "slug", str)),
        html_url=str(_field(data, "html_url", str)),
        client_id=str(_field(data, "client_id", str)),
        pem=Secret(_field(data, "pem", str)),
        webhook_secret=Secret(_field(data, "webhook_secret", str)),
        client_secret=Secret(_field(data, "client_secret", str)),
    )
