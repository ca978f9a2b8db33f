"""``ghapp check``: verify a deployment and say, line by line, what works and what does not.

Checks, in order: the settings (and pools file); that GitHub accepts a JWT signed with the private key
(``GET /app``) and that the App subscribes to ``workflow_job``; the App's webhook configuration
(``GET /app/hook/config``) and its recent failed deliveries (``GET /app/hook/deliveries``); every
installation, whether its permissions cover what ghapp needs and whether the account rule and the pools'
scopes let any of its jobs get a runner; that the Kubernetes API answers; and that ghapp's credentials may
do each verb on each resource of `KUBERNETES_RULES` in its namespace (SelfSubjectAccessReview); and per
pool, that the API server would accept its runner (dedicated ServiceAccount, a ``dryRun=All`` create of its
Job and Secret). Nothing is
written anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import client as k8s

from ghapp import failures, manifests, policy, warm
from ghapp.auth import AppAuth
from ghapp.clock import Clock, SystemClock, parse_timestamp
from ghapp.config import Pool, Settings
from ghapp.errors import ConfigError, GitHubError, KubernetesError
from ghapp.github import AppInfo, GitHubClient, HookConfig, InstallationInfo
from ghapp.health import Health
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics
from ghapp.permissions import GITHUB_PERMISSIONS, KUBERNETES_RULES, LEASE_RULES, RUNNER_RULES
from ghapp.planner import RunnerPlan
from ghapp.retry import Backoff
from ghapp.sensitive import Secret

LEVELS: Final = {"read": 1, "write": 2, "admin": 3}
RUNNER_PERMISSION: Final = {
    "Organization": "organization_self_hosted_runners",
    "User": "administration",
}
"""The permission that manages runners, by installation account type (org runners vs repo runners)."""
PLACEHOLDER_HOSTS: Final = frozenset({"example.com", "example.org", "example.net"})
"""Hosts of placeholder webhook URLs (``ghapp setup`` without ``--webhook-url`` uses one)."""
DELIVERIES_WINDOW: Final = 24 * 3600.0
"""How far back ``check`` looks at webhook deliveries."""


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report."""

    ok: bool
    what: str
    detail: str = ""
    warning: bool = False
    """Works, but something deserves a look (printed as WARN; does not fail the check)."""

    @property
    def label(self) -> str:
        return "FAIL" if not self.ok else "WARN" if self.warning else "PASS"

    def line(self) -> str:
        text = f"{self.label}  {self.what}"
        return f"{text}: {self.detail}" if self.detail else text


def warn(what: str, detail: str) -> Result:
    """A WARN line: works, but deserves a look."""
    return Result(True, what, detail, warning=True)


# -- pure ----------------------------------------------------------------------------------------------


def needed_permissions(account_type: str) -> dict[str, str]:
    """What an installation on an ``Organization`` or ``User`` account needs of `GITHUB_PERMISSIONS`."""
    others = {p for kind, p in RUNNER_PERMISSION.items() if kind != account_type}
    return {name: level for name, level in GITHUB_PERMISSIONS.items() if name not in others}


def missing_permissions(granted: Mapping[str, str], needed: Mapping[str, str]) -> list[str]:
    """Each needed permission `granted` lacks or has at too low a level, as ``name: level (has …)``."""
    return [
        f"{name}: {level} (has {granted.get(name, 'none')})"
        for name, level in sorted(needed.items())
        if LEVELS.get(granted.get(name, ""), 0) < LEVELS[level]
    ]


def installation_result(
    installation: InstallationInfo,
    *,
    install_url: str,
    settings: Settings | None = None,
    app_owner: str | None = None,
) -> Result:
    """Whether one installation lets ghapp start runners for its account: not suspended, the permissions
    ghapp needs, and (given `settings`) the account rule and the pools' scopes let its jobs in."""
    what = f"GitHub: installation {installation.id} ({installation.account_type} {installation.account})"
    if installation.suspended:
        return Result(False, what, f"suspended; unsuspend it at {install_url}")
    problems = []
    missing = missing_permissions(installation.permissions, needed_permissions(installation.account_type))
    if missing:
        problems.append(
            f"lacks {'; '.join(missing)}: grant it in the App's permissions, then accept the new "
            "permissions on the installation"
        )
    refused = settings and account_refusal(installation.account, settings=settings, app_owner=app_owner)
    if refused:
        problems.append(refused)
    if problems:
        return Result(False, what, "; and ".join(problems))
    granted = ", ".join(f"{k}: {v}" for k, v in sorted(installation.permissions.items()))
    return Result(True, what, f"has what ghapp needs ({granted})")


def warm_results(settings: Settings, installations: list[InstallationInfo], *, now: float) -> list[Result]:
    """One line per warm entry: what it means now (``min_idle`` and its next change) and whether the App
    has a working installation on its account."""
    by_account = {i.account.lower(): i for i in installations}
    results = []
    for target in warm.targets(settings.pools, now):
        what = f"warm pool {target.pool.name} for {target.entry.scope_key}"
        installation = by_account.get(target.entry.account.lower())
        if installation is None or installation.suspended:
            state = "suspended" if installation is not None else "missing"
            detail = f"the App's installation on {target.entry.account} is {state}; no runners are kept there"
            results.append(Result(False, what, detail))
        else:
            results.append(Result(True, what, warm.describe(target)))
    return results


def account_refusal(account: str, *, settings: Settings, app_owner: str | None) -> str | None:
    """Why every job of `account`'s installation would be refused (the account rule, or no pool's scope
    covers the account), with what to change; None if some job of it can get a runner."""
    verdict = policy.account_verdict(account, allowed=settings.allowed_accounts, app_owner=app_owner)
    if isinstance(verdict, policy.Refusal):
        return (
            f"every job will be refused: {verdict.reason}; add {account} to GHAPP_ALLOWED_ACCOUNTS "
            "(comma-separated) or uninstall the App there"
        )
    if not policy.pools_for_account(account, settings.pools):
        return (
            f"every job will be refused: no pool's organizations / repositories cover account {account} "
            f"(pools file {settings.pools_file})"
        )
    return None


def settings_warnings(settings: Settings, *, unknown_variables: Sequence[str]) -> list[Result]:
    """WARN lines for settings that are probably mistakes: the bundled sample pools, unknown variables."""
    results = []
    if settings.uses_sample_pools:
        results.append(
            warn(
                "settings: pools file",
                f"{settings.pools_file} is the sample bundled with ghapp; set GHAPP_POOLS_FILE to your own",
            )
        )
    results += [warn("settings: unknown variable", f"{name} is ignored") for name in unknown_variables]
    return results


def app_events_result(app: AppInfo) -> Result:
    """Whether the App subscribes to the ``workflow_job`` event (without it no job ever reaches ghapp)."""
    what = "GitHub: the App subscribes to workflow_job events"
    if "workflow_job" in app.events:
        return Result(True, what)
    return Result(
        False,
        what,
        f"it subscribes to {', '.join(app.events) or 'no events'}; tick 'Workflow job' under "
        f"'Subscribe to events' in the App's settings ({app.html_url})",
    )


def hook_config_results(config: HookConfig, *, settings_url: str, api_url: str) -> list[Result]:
    """The App's webhook configuration: a URL GitHub (at `api_url`) can reach (https), JSON bodies, a
    secret."""
    results = [_hook_url_result(config.url, settings_url=settings_url, api_url=api_url)]
    what = "GitHub: webhook content type is json"
    if config.content_type == "json":
        results.append(Result(True, what))
    else:
        results.append(
            Result(
                False,
                what,
                f"it is {config.content_type or 'not set'}; ghapp reads only JSON bodies: choose "
                f"application/json in the App's settings ({settings_url})",
            )
        )
    what = "GitHub: webhook secret is set"
    if config.secret_set:
        results.append(Result(True, what, "GitHub signs deliveries; it must equal GHAPP_WEBHOOK_SECRET"))
    else:
        results.append(
            Result(
                False,
                what,
                "no secret: GitHub sends unsigned deliveries and ghapp refuses them (401); set it in the "
                f"App's settings ({settings_url}) to the value of GHAPP_WEBHOOK_SECRET",
            )
        )
    if config.insecure_ssl:
        results.append(
            warn(
                "GitHub: webhook TLS verification",
                "SSL verification is disabled for the webhook; enable it once the certificate is valid",
            )
        )
    return results


def _hook_url_result(url: str, *, settings_url: str, api_url: str) -> Result:
    what = "GitHub: webhook URL"
    fix = f"set it to https://YOUR-HOST/webhook in the App's settings ({settings_url})"
    if not url:
        return Result(False, what, f"not set, so GitHub sends nothing; {fix}")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return Result(False, what, f"{url} is not an http(s) URL; {fix}")
    if _is_loopback(host) and not _is_loopback((urlsplit(api_url).hostname or "").lower()):
        return Result(False, what, f"{url} is a loopback address GitHub cannot reach; {fix}")
    if host in PLACEHOLDER_HOSTS or host.endswith(tuple(f".{h}" for h in PLACEHOLDER_HOSTS)):
        return Result(False, what, f"{url} is a placeholder; {fix}")
    if parts.scheme == "http":
        return warn(what, f"{url} is plain http: deliveries travel unencrypted; use https")
    return Result(True, what, url)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def deliveries_result(
    deliveries: Sequence[Mapping[str, Any]], *, window: float = DELIVERIES_WINDOW
) -> Result:
    """Recent webhook deliveries (newest first, as GitHub lists them): how many failed and the newest's
    status. The newest failing means deliveries fail now (FAIL); older failures only, a WARN."""
    hours = round(window / 3600)
    what = f"GitHub: webhook deliveries in the last {hours} h"
    if not deliveries:
        return Result(True, what, "none (no workflow job queued, or webhooks are not reaching GitHub's log)")
    failed = [d for d in deliveries if not _delivered_ok(d)]
    if not failed:
        return Result(True, what, f"{len(deliveries)}, none failed")
    newest = failed[0]
    text = (
        f"{len(failed)} of {len(deliveries)} failed; newest failure: {_describe_delivery(newest)}. "
        "See the App's Advanced settings (Recent Deliveries) and ghapp's logs; a 401 means "
        "GHAPP_WEBHOOK_SECRET differs from the App's webhook secret"
    )
    if newest is deliveries[0]:
        return Result(False, what, text)
    return warn(what, f"{text}; the newest delivery ({_describe_delivery(deliveries[0])}) succeeded")


def _delivered_ok(delivery: Mapping[str, Any]) -> bool:
    code = delivery.get("status_code")
    return isinstance(code, int) and 200 <= code < 300


def _describe_delivery(delivery: Mapping[str, Any]) -> str:
    event = delivery.get("event") or "?"
    action = delivery.get("action")
    return (
        f"{event}{'.' + str(action) if action else ''} at {delivery.get('delivered_at') or '?'}: "
        f"{delivery.get('status') or '?'} (HTTP {delivery.get('status_code')})"
    )


def kubernetes_requirements(
    rules: Mapping[tuple[str, str], frozenset[str]] = KUBERNETES_RULES,
) -> list[tuple[str, str, str]]:
    """(API group, resource, verb) for every permission in `rules` (default: all of them), sorted."""
    return sorted((group, resource, verb) for (group, resource), verbs in rules.items() for verb in verbs)


def namespace_requirements(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(namespace, API group, resource, verb) ghapp needs: `RUNNER_RULES` in every namespace runners live
    in (GHAPP_NAMESPACE and the pools' own), `LEASE_RULES` in the Lease's namespace."""
    needs = [
        (namespace, *requirement)
        for namespace in settings.runner_namespaces
        for requirement in kubernetes_requirements(RUNNER_RULES)
    ]
    return needs + [(settings.lease_ns, *requirement) for requirement in kubernetes_requirements(LEASE_RULES)]


def report(results: Iterable[Result]) -> str:
    """The report: one PASS/WARN/FAIL line per check, then a summary line."""
    results = list(results)
    failed = sum(not r.ok for r in results)
    warned = sum(r.ok and r.warning for r in results)
    summary = f"{len(results)} checks, {failed} failed" if failed else f"all {len(results)} checks passed"
    if warned:
        summary += f", {warned} with a warning"
    return "\n".join([*(r.line() for r in results), summary]) + "\n"


# -- I/O -----------------------------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    kube_configuration: k8s.Configuration | None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    unknown_variables: Sequence[str] = (),
) -> list[Result]:
    """Every check against the GitHub and cluster `settings` point at (`settings` loaded already);
    `unknown_variables`: the ``GHAPP_*`` variables set that ghapp does not read.

    Without `kube_configuration` the Kubernetes checks are left out (the caller reports why).
    """
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    results = [
        Result(
            True,
            "settings",
            f"valid; {len(settings.pools)} pool(s) from {settings.pools_file}, "
            f"namespace {settings.namespace}",
        ),
        *settings_warnings(settings, unknown_variables=unknown_variables),
    ]
    results += await _github_checks(settings, clock=clock, metrics=metrics)
    if kube_configuration is not None:
        results += await _kubernetes_checks(
            settings, kube_configuration=kube_configuration, clock=clock, metrics=metrics
        )
    return results


async def _github_checks(settings: Settings, *, clock: Clock, metrics: Metrics) -> list[Result]:
    try:
        settings.require_credentials()
        assert settings.app_id is not None
        assert settings.private_key is not None
        app_auth = AppAuth(
            app_id=settings.app_id,
            private_key_pem=Secret(settings.private_key.get_secret_value()),
            clock=clock,
        )
    except ConfigError as exc:
        return [Result(False, "credentials", str(exc))]
    results = [Result(True, "credentials", "App id, private key and webhook secret are set")]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=10)) as session:
        github = GitHubClient(
            session=session,
            api_url=settings.github_api_url,
            app_auth=app_auth,
            clock=clock,
            metrics=metrics,
            backoff=Backoff(attempts=3),
        )
        what = f"GitHub: {settings.github_api_url} accepts the App's JWT (GET /app)"
        try:
            app: AppInfo = await github.app()
        except GitHubError as exc:
            hint = (
                "; check GHAPP_APP_ID and that the private key is the App's (not revoked)"
                if exc.status == 401
                else ""
            )
            return [*results, Result(False, what, f"{exc}{hint}")]
        results.append(Result(True, what, f"App {app.slug} (id {app.id}, owner {app.owner})"))
        results.append(app_events_result(app))
        results += await _webhook_checks(github, app=app, api_url=settings.github_api_url, now=clock.now())
        install_url = f"{app.html_url}/installations/new"
        try:
            installations = await github.installations()
        except GitHubError as exc:
            return [*results, Result(False, "GitHub: list installations (GET /app/installations)", str(exc))]
    if not installations:
        return [*results, Result(False, "GitHub: installations", f"none; install the App at {install_url}")]
    results.append(Result(True, "GitHub: installations", f"{len(installations)} visible"))
    results += [
        installation_result(i, install_url=install_url, settings=settings, app_owner=app.owner)
        for i in installations
    ]
    return results + warm_results(settings, installations, now=clock.now())


async def _webhook_checks(github: GitHubClient, *, app: AppInfo, api_url: str, now: float) -> list[Result]:
    settings_url = app_settings_url(app)
    try:
        config = await github.hook_config()
    except GitHubError as exc:
        return [Result(False, "GitHub: webhook configuration (GET /app/hook/config)", str(exc))]
    results = hook_config_results(config, settings_url=settings_url, api_url=api_url)
    try:
        deliveries = await github.deliveries(since=now - DELIVERIES_WINDOW, max_pages=1)
    except GitHubError as exc:
        return [*results, Result(False, "GitHub: webhook deliveries (GET /app/hook/deliveries)", str(exc))]
    return [*results, deliveries_result(deliveries)]


def app_settings_url(app: AppInfo) -> str:
    """How a person reaches the App's settings (webhook, events) from its public page."""
    return f"{app.html_url} → App settings"


async def _kubernetes_checks(
    settings: Settings, *, kube_configuration: k8s.Configuration, clock: Clock, metrics: Metrics
) -> list[Result]:
    needs = namespace_requirements(settings)
    async with KubeTransport(kube_configuration) as http:
        kube = KubeClient(
            http=http,
            namespace=settings.namespace,
            clock=clock,
            metrics=metrics,
            backoff=Backoff(attempts=3),
        )
        (namespace, group, resource, verb), *rest = needs
        what = f"Kubernetes: API server {kube_configuration.host} answers"
        try:
            first = await kube.may(verb, resource, group=group, namespace=namespace)
        except KubernetesError as exc:
            return [Result(False, what, str(exc))]
        answers = [
            first,
            *await asyncio.gather(*(_may(kube, v, r, group=g, namespace=n) for n, g, r, v in rest)),
        ]
        pools = [await pool_result(kube, settings, pool, now=clock.now()) for pool in settings.pools]
    results = [Result(True, what)]
    for (namespace, group, resource, verb), (allowed, reason) in zip(needs, answers, strict=True):
        qualified = f"{resource}.{group}" if group else resource
        if allowed:
            results.append(Result(True, f"Kubernetes: may {verb} {qualified} in namespace {namespace}"))
        else:
            detail = "grant it in ghapp's Roles (deploy/base/rbac.yaml) in that namespace" + (
                f"; the API server says: {reason}" if reason else ""
            )
            results.append(
                Result(False, f"Kubernetes: may not {verb} {qualified} in namespace {namespace}", detail)
            )
    return results + pools


async def pool_result(kube: KubeClient, settings: Settings, pool: Pool, *, now: float) -> Result:
    """Whether the API server would let `pool` start a runner: its dedicated ServiceAccount exists, and a
    server-side dry run of its rendered Job and Secret passes validation, admission (PodSecurity warnings
    included), quota and webhooks. Nothing is written."""
    plan = manifests.sample_plan(settings, pool)
    what = f"Kubernetes: pool {pool.name} can start runners in namespace {plan.namespace}"
    try:
        problem = await pool_problem(kube, plan) or await failing(kube, plan, now=now)
    except KubernetesError as exc:
        return Result(False, what, f"no answer: {exc}")
    return Result(problem is None, what, problem or "")


FAILURE_WINDOW: Final = 3600.0
"""How far back ``check`` looks at the runner failures ghapp recorded as Events."""


async def failing(kube: KubeClient, plan: RunnerPlan, *, now: float) -> str | None:
    """How the pool's runners keep failing, from ghapp's RunnerFailed Events of the last hour replayed
    through the rule ghapp runs by (`ghapp.health`); None if they do not."""
    events, _ = await kube.list(
        "events", selector="", fields=f"reason={failures.EVENT_REASON}", namespace=plan.namespace
    )
    health = Health([plan.pool.name])
    for event in sorted(events, key=lambda e: str(e.get("lastTimestamp") or "")):
        stamp = event.get("lastTimestamp")
        failure = failures.from_event_message(plan.pool.name, str(event.get("message") or ""))
        if failure is not None and isinstance(stamp, str) and now - parse_timestamp(stamp) <= FAILURE_WINDOW:
            health.failed(plan.pool.name, failure, now=now)
    state = health.pools[plan.pool.name]
    if state.healthy:
        return None
    return (
        f"its runners keep failing: {state.reason}: {state.message} ({state.streak} in a row in the last "
        "hour; see README, Troubleshooting)"
    )


async def pool_problem(kube: KubeClient, plan: RunnerPlan) -> str | None:
    """Why the API server would refuse `plan`'s runner, or None (raises `KubernetesError` on no answer)."""
    job = manifests.runner_job(plan, runner_id=1)
    account = manifests.dedicated_service_account(job)
    if account is not None and await kube.get("serviceaccounts", account, namespace=plan.namespace) is None:
        return failures.missing_service_account(namespace=plan.namespace, account=account).message
    answer = await kube.dry_run("jobs", job)
    if answer.status != 201:
        return f"the API server refuses its Job: {answer.body.get('message') or answer.status}"
    violations = [w for w in answer.warnings if "PodSecurity" in w]
    if violations:
        return f"its pods would be refused by the namespace's Pod Security level: {'; '.join(violations)}"
    secret = manifests.runner_secret(
        plan, credential=Secret("dry-run"), job_uid=str(answer.body["metadata"]["uid"])
    )
    answer = await kube.dry_run("secrets", secret)
    if answer.status != 201:
        return f"the API server refuses its Secret: {answer.body.get('message') or answer.status}"
    return None


async def _may(kube: KubeClient, verb: str, resource: str, *, group: str, namespace: str) -> tuple[bool, str]:
    try:
        return await kube.may(verb, resource, group=group, namespace=namespace)
    except KubernetesError as exc:
        return False, f"no answer: {exc}"
