"""``ghapp check``: verify a deployment and say, line by line, what works and what does not.

Checks, in order: the settings (and pools file); that GitHub accepts a JWT signed with the private key
(``GET /app``); every installation and whether its permissions cover what ghapp needs; that the
Kubernetes API answers; and that ghapp's credentials may do each verb on each resource of
`KUBERNETES_RULES` in its namespace (SelfSubjectAccessReview). Nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from kubernetes_asyncio import client as k8s

from ghapp.auth import AppAuth
from ghapp.clock import Clock, SystemClock
from ghapp.config import Settings
from ghapp.errors import ConfigError, GitHubError, KubernetesError
from ghapp.github import AppInfo, GitHubClient, InstallationInfo
from ghapp.kube import KubeClient
from ghapp.kubehttp import KubeTransport
from ghapp.metrics import Metrics
from ghapp.permissions import GITHUB_PERMISSIONS, KUBERNETES_RULES
from ghapp.retry import Backoff
from ghapp.sensitive import Secret

LEVELS: Final = {"read": 1, "write": 2, "admin": 3}
RUNNER_PERMISSION: Final = {
    "Organization": "organization_self_hosted_runners",
    "User": "administration",
}
"""The permission that manages runners, by installation account type (org runners vs repo runners)."""


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report."""

    ok: bool
    what: str
    detail: str = ""

    def line(self) -> str:
        text = f"{'PASS' if self.ok else 'FAIL'}  {self.what}"
        return f"{text}: {self.detail}" if self.detail else text


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


def installation_result(installation: InstallationInfo, *, install_url: str) -> Result:
    """Whether one installation lets ghapp start runners for its account."""
    what = f"GitHub: installation {installation.id} ({installation.account_type} {installation.account})"
    if installation.suspended:
        return Result(False, what, f"suspended; unsuspend it at {install_url}")
    missing = missing_permissions(installation.permissions, needed_permissions(installation.account_type))
    if missing:
        return Result(
            False,
            what,
            f"lacks {'; '.join(missing)}: grant it in the App's permissions, then accept the new "
            "permissions on the installation",
        )
    granted = ", ".join(f"{k}: {v}" for k, v in sorted(installation.permissions.items()))
    return Result(True, what, f"has what ghapp needs ({granted})")


def kubernetes_requirements() -> list[tuple[str, str, str]]:
    """(API group, resource, verb) for every permission in `KUBERNETES_RULES`, sorted."""
    return sorted(
        (group, resource, verb) for (group, resource), verbs in KUBERNETES_RULES.items() for verb in verbs
    )


RUNNER_RESOURCES = frozenset({("batch", "jobs"), ("", "secrets")})
"""What ghapp does in a pool's own namespace (the Lease lives in GHAPP_NAMESPACE only)."""


def namespace_requirements(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(namespace, API group, resource, verb) ghapp needs: everything in GHAPP_NAMESPACE, and the runner
    Jobs' and Secrets' permissions in every other namespace a pool puts its runners in."""
    needs = [(settings.namespace, *requirement) for requirement in kubernetes_requirements()]
    for namespace in settings.runner_namespaces:
        if namespace != settings.namespace:
            needs += [
                (namespace, g, r, v) for g, r, v in kubernetes_requirements() if (g, r) in RUNNER_RESOURCES
            ]
    return needs


def report(results: Iterable[Result]) -> str:
    """The report: one PASS/FAIL line per check, then a summary line."""
    results = list(results)
    failed = sum(not r.ok for r in results)
    summary = f"{len(results)} checks, {failed} failed" if failed else f"all {len(results)} checks passed"
    return "\n".join([*(r.line() for r in results), summary]) + "\n"


# -- I/O -----------------------------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    kube_configuration: k8s.Configuration | None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
) -> list[Result]:
    """Every check against the GitHub and cluster `settings` point at (`settings` loaded already).

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
        )
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
        results.append(Result(True, what, f"App {app.slug} (id {app.id})"))
        install_url = f"{app.html_url}/installations/new"
        try:
            installations = await github.installations()
        except GitHubError as exc:
            return [*results, Result(False, "GitHub: list installations (GET /app/installations)", str(exc))]
    if not installations:
        return [*results, Result(False, "GitHub: installations", f"none; install the App at {install_url}")]
    results.append(Result(True, "GitHub: installations", f"{len(installations)} visible"))
    results += [installation_result(i, install_url=install_url) for i in installations]
    return results


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
    results = [Result(True, what)]
    for (namespace, group, resource, verb), (allowed, reason) in zip(needs, answers, strict=True):
        qualified = f"{resource}.{group}" if group else resource
        if allowed:
            results.append(Result(True, f"Kubernetes: may {verb} {qualified} in namespace {namespace}"))
        else:
            detail = "grant it in ghapp's Role (deploy/rbac.yaml) in that namespace" + (
                f"; the API server says: {reason}" if reason else ""
            )
            results.append(
                Result(False, f"Kubernetes: may not {verb} {qualified} in namespace {namespace}", detail)
            )
    return results


async def _may(kube: KubeClient, verb: str, resource: str, *, group: str, namespace: str) -> tuple[bool, str]:
    try:
        return await kube.may(verb, resource, group=group, namespace=namespace)
    except KubernetesError as exc:
        return False, f"no answer: {exc}"
