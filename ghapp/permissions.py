"""What ghapp needs to be allowed to do, declared once: Kubernetes RBAC and GitHub App permissions.

`deploy/` grants exactly `KUBERNETES_RULES` (`RUNNER_RULES` in the runner namespace, `LEASE_RULES` in
ghapp's own) and `app-manifest.json` asks for exactly `GITHUB_PERMISSIONS`; the tests check both against
the calls the code really makes.
"""

from __future__ import annotations

from typing import Final

KUBERNETES_RULES: Final[dict[tuple[str, str], frozenset[str]]] = {
    # (API group, resource): verbs, in the namespace runners live in
    ("batch", "jobs"): frozenset({"create", "get", "list", "watch", "delete"}),
    ("", "secrets"): frozenset({"create", "get", "list", "delete"}),
    ("coordination.k8s.io", "leases"): frozenset({"create", "get", "update"}),
    ("", "serviceaccounts"): frozenset({"get"}),  # a pool's dedicated runner ServiceAccount exists
    ("", "pods"): frozenset({"list", "watch"}),  # what becomes of each runner
    ("", "events"): frozenset(
        {"create", "list", "watch"}
    ),  # FailedCreate of runner pods; ghapp's own  # a pool's dedicated runner ServiceAccount exists
}
"""Namespaced RBAC rules ghapp's ServiceAccount needs (the Roles in deploy/ grant these and nothing more)."""

LEASE_RESOURCES: Final = frozenset({("coordination.k8s.io", "leases")})
"""What lives in the Lease's namespace (GHAPP_LEASE_NAMESPACE) rather than beside the runners."""

LEASE_RULES: Final = {key: verbs for key, verbs in KUBERNETES_RULES.items() if key in LEASE_RESOURCES}
"""The rules ghapp needs in the reconciler's Lease namespace (the reconciler's leader election)."""

RUNNER_RULES: Final = {key: verbs for key, verbs in KUBERNETES_RULES.items() if key not in LEASE_RESOURCES}
"""The rules ghapp needs in every namespace runners live in (GHAPP_NAMESPACE and pools' own): launching,
watching and cleaning up runners."""

GITHUB_PERMISSIONS: Final[dict[str, str]] = {
    "actions": "read",
    "administration": "write",
    "organization_self_hosted_runners": "write",
    "metadata": "read",
}
"""The GitHub App permissions ghapp needs (app-manifest.json asks for these and nothing more)."""

GITHUB_ENDPOINTS: Final[dict[str, str | None]] = {
    # endpoint template (as `github.endpoint_template` names it) → permission it needs (None: App JWT only)
    "POST /app/installations/{id}/access_tokens": None,
    "GET /app": None,
    "GET /app/installations": None,
    "GET /app/hook/config": None,  # `ghapp check`
    "GET /app/hook/deliveries": None,
    "POST /app/hook/deliveries/{id}/attempts": None,
    "POST /orgs/{org}/actions/runners/registration-token": "organization_self_hosted_runners",
    "POST /repos/{owner}/{repo}/actions/runners/registration-token": "administration",
    "POST /orgs/{org}/actions/runners/generate-jitconfig": "organization_self_hosted_runners",
    "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig": "administration",
    "GET /orgs/{org}/actions/runners": "organization_self_hosted_runners",
    "GET /repos/{owner}/{repo}/actions/runners": "administration",
    "DELETE /orgs/{org}/actions/runners/{id}": "organization_self_hosted_runners",
    "DELETE /repos/{owner}/{repo}/actions/runners/{id}": "administration",
    "GET /orgs/{org}/actions/runner-groups": "organization_self_hosted_runners",
    "GET /repos/{owner}/{repo}/actions/runs": "actions",
    "GET /repos/{owner}/{repo}/actions/runs/{id}": "actions",
    "GET /repos/{owner}/{repo}/actions/runs/{id}/jobs": "actions",
    "GET /repos/{owner}/{repo}/actions/jobs/{id}": "actions",  # a waiting job is re-checked before launch
    "GET /installation/repositories": "metadata",
    "POST /app-manifests/{code}/conversions": None,  # `ghapp setup`, unauthenticated (the code is the proof)
}
"""Every GitHub endpoint ghapp calls and the App permission it needs (tests check the code calls no other)."""
