"""Builders for GitHub-shaped JSON objects used by the fake GitHub.

Every function returns plain dicts that follow the shapes of GitHub's REST description
(``@octokit/openapi``) and webhook examples (``@octokit/webhooks-examples``): the ``simple-user``
account object, the ``organization-simple`` object webhooks carry, the repository object (the webhook
variant adds timestamps, counts and ``default_branch``), ``workflow_job`` / ``job``, ``workflow-run``,
self-hosted ``runner`` and ``installation``.  URL fields point at the fake server so a client that
follows them stays on it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

JSON = dict[str, Any]

DOCS_URL = "https://docs.github.com/rest"

# Labels GitHub marks "read-only" on a self-hosted runner (the defaults config.sh adds).
READ_ONLY_LABELS = frozenset({"self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64"})


def iso(ts: float | None) -> str | None:
    """Format a UNIX timestamp the way GitHub does (ISO 8601, seconds, ``Z``); ``None`` stays ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, ident: int) -> str:
    """Return a GitHub-style legacy global node id (base64 of ``0NN:KindID``)."""
    raw = f"0{len(kind):02d}:{kind}{ident}"
    return base64.b64encode(raw.encode()).decode()


@dataclass(frozen=True)
class Urls:
    """Base URLs of the fake: ``api`` for REST URLs, ``html`` for web URLs."""

    api: str
    html: str


@dataclass
class Account:
    """A GitHub user or organization."""

    login: str
    id: int
    type: Literal["Organization", "User"]


@dataclass
class Repo:
    """A repository known to the fake."""

    id: int
    owner: Account
    name: str
    private: bool = True
    created_at: float = 0.0
    default_branch: str = "main"
    fork: bool = False
    topics: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner.login}/{self.name}"

    @property
    def visibility(self) -> str:
        """``private`` or ``public``."""
        return "private" if self.private else "public"


def user_obj(account: Account, urls: Urls) -> JSON:
    """Return a ``simple-user`` object (``owner``, ``sender``, ``account``, ``actor``)."""
    api_user = f"{urls.api}/users/{account.login}"
    kind = "Organization" if account.type == "Organization" else "User"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id(kind, account.id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
        "gravatar_id": "",
        "url": api_user,
        "html_url": f"{urls.html}/{account.login}",
        "followers_url": f"{api_user}/followers",
        "following_url": f"{api_user}/following{{/other_user}}",
        "gists_url": f"{api_user}/gists{{/gist_id}}",
        "starred_url": f"{api_user}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api_user}/subscriptions",
        "organizations_url": f"{api_user}/orgs",
        "repos_url": f"{api_user}/repos",
        "events_url": f"{api_user}/events{{/privacy}}",
        "received_events_url": f"{api_user}/received_events",
        "type": account.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def org_obj(account: Account, urls: Urls) -> JSON:
    """Return the ``organization`` object webhook payloads carry for organization-owned repositories."""
    api_org = f"{urls.api}/orgs/{account.login}"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id("Organization", account.id),
        "url": api_org,
        "repos_url": f"{api_org}/repos",
        "events_url": f"{api_org}/events",
        "hooks_url": f"{api_org}/hooks",
        "issues_url": f"{api_org}/issues",
        "members_url": f"{api_org}/members{{/member}}",
        "public_members_url": f"{api_org}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
        "description": None,
    }


_REPO_URL_TEMPLATES = {
    "forks_url": "/forks",
    "keys_url": "/keys{/key_id}",
    "collaborators_url": "/collaborators{/collaborator}",
    "teams_url": "/teams",
    "hooks_url": "/hooks",
    "issue_events_url": "/issues/events{/number}",
    "events_url": "/events",
    "assignees_url": "/assignees{/user}",
    "branches_url": "/branches{/branch}",
    "tags_url": "/tags",
    "blobs_url": "/git/blobs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "trees_url": "/git/trees{/sha}",
    "statuses_url": "/statuses/{sha}",
    "languages_url": "/languages",
    "stargazers_url": "/stargazers",
    "contributors_url": "/contributors",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "commits_url": "/commits{/sha}",
    "git_commits_url": "/git/commits{/sha}",
    "comments_url": "/comments{/number}",
    "issue_comment_url": "/issues/comments{/number}",
    "contents_url": "/contents/{+path}",
    "compare_url": "/compare/{base}...{head}",
    "merges_url": "/merges",
    "archive_url": "/{archive_format}{/ref}",
    "downloads_url": "/downloads",
    "issues_url": "/issues{/number}",
    "pulls_url": "/pulls{/number}",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "labels_url": "/labels{/name}",
    "releases_url": "/releases{/id}",
    "deployments_url": "/deployments",
}


def repo_obj(repo: Repo, urls: Urls, *, full: bool = True) -> JSON:
    """Return a repository object.

    ``full=False`` gives the ``minimal-repository`` shape of workflow runs (``repository``,
    ``head_repository``); ``full=True`` adds what webhook payloads and ``/installation/repositories``
    carry (timestamps, clone URLs, counts, ``default_branch``, ``visibility``, ...).
    """
    api_repo = f"{urls.api}/repos/{repo.full_name}"
    html_repo = f"{urls.html}/{repo.full_name}"
    obj: JSON = {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": user_obj(repo.owner, urls),
        "html_url": html_repo,
        "description": None,
        "fork": repo.fork,
        "url": api_repo,
    }
    for key, suffix in _REPO_URL_TEMPLATES.items():
        obj[key] = api_repo + suffix
    if not full:
        return obj
    created = iso(repo.created_at)
    host = urls.html.split("://", 1)[-1]
    obj.update(
        {
            "created_at": created,
            "updated_at": created,
            "pushed_at": created,
            "git_url": f"git://{host}/{repo.full_name}.git",
            "ssh_url": f"git@{host}:{repo.full_name}.git",
            "clone_url": f"{html_repo}.git",
            "svn_url": html_repo,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": True,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 0,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": list(repo.topics),
            "visibility": repo.visibility,
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "default_branch": repo.default_branch,
            "custom_properties": {},
        }
    )
    return obj


def label_objs(names: list[str], label_ids: dict[str, int]) -> list[JSON]:
    """Return runner label objects ``{id, name, type}``; ids come from (and are added to) ``label_ids``."""
    out: list[JSON] = []
    for name in names:
        key = name.lower()
        if key not in label_ids:
            label_ids[key] = len(label_ids) + 1
        kind = "read-only" if key in READ_ONLY_LABELS else "custom"
        out.append({"id": label_ids[key], "name": name, "type": kind})
    return out


def error_body(message: str, status: int) -> JSON:
    """Return GitHub's JSON error body."""
    return {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
