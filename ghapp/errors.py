"""The one exception hierarchy of ghapp.

Messages never contain secret values (keys, webhook secrets, tokens): they name settings, endpoints and ids.
"""

from __future__ import annotations


class GhappError(Exception):
    """Base class of every error ghapp raises on purpose."""


class ConfigError(GhappError):
    """A setting is missing or invalid; the message names the setting."""


class InvalidPayload(GhappError):
    """A webhook payload lacks a field ghapp needs, or has it in the wrong shape."""


class GitHubError(GhappError):
    """A GitHub API call failed after the retries it was allowed."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class InstallationGone(GitHubError):
    """GitHub will not mint a token for an installation: it was deleted (404) or suspended (403)."""

    def __init__(self, *, installation_id: int, reason: str, status: int) -> None:
        endpoint = "POST /app/installations/{id}/access_tokens"
        super().__init__(
            f"GitHub answered {status} to {endpoint}: installation {installation_id} is {reason}",
            status=status,
            endpoint=endpoint,
        )
        self.installation_id = installation_id
        self.reason = reason


class BudgetSpent(GhappError):
    """A listing stopped before its end: the rate-limit budget of this pass is spent."""


class RateLimited(GitHubError):
    """GitHub asks to wait (a primary or secondary rate limit) and the caller chose not to wait inside the
    call (`ghapp.github.no_rate_limit_waits`): it waits `retry_after` seconds itself, holding nothing."""

    def __init__(
        self, message: str, *, retry_after: float, bucket: str, status: int | None = None, endpoint: str = ""
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after = retry_after
        self.bucket = bucket


class KubernetesError(GhappError):
    """A Kubernetes API call failed after the retries it was allowed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunnerGroupNotFound(GhappError):
    """A pool names a runner group that the organisation does not have."""

    def __init__(self, *, org: str, group: str) -> None:
        super().__init__(f"organisation {org!r} has no runner group named {group!r}")
        self.org = org
        self.group = group


class RunnerNameTaken(GhappError):
    """A live runner (online or busy) already has the name ghapp would give a new JIT runner."""
