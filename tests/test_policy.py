"""Who may get a runner: accounts, public repositories, forks, pool scoping — through signed webhooks."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ghapp import manifests, planner, policy
from ghapp.cli import SAMPLE_PAYLOAD, main
from ghapp.config import load_settings
from ghapp.models import WorkflowJob

from .conftest import ORG_INSTALLATION, OTHER_ORG_INSTALLATION, USER_INSTALLATION, Ghapp
from .fakes.github import FakeGitHub
from .schema import validate

POOLS = """
pools:
  - name: infra
    labels: [self-hosted, linux, x64]
    organizations: [ACME]
    repositories: ["acme/infra-*"]
  - name: public
    labels: [self-hosted, linux, public]
    allow_public: true
  - name: forks
    labels: [self-hosted, linux, forks]
    allow_public: true
    allow_forks: true
  - name: linux
    labels: [self-hosted, linux, x64]
    organizations: [acme, "glo*"]
"""
LINUX = ["self-hosted", "linux", "x64"]
PUBLIC = ["self-hosted", "linux", "public"]
FORKS = ["self-hosted", "linux", "forks"]
OWNER_INSTALLATION = 7171  # the App's owner (the fake's GET /app says ghapp-owner)


@pytest.fixture
def pools_file(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    return path


@pytest.fixture
async def owner_only(ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub) -> Ghapp:
    """ghapp with GHAPP_ALLOWED_ACCOUNTS empty: only the App's owner gets runners."""
    github.add_installation(
        installation_id=OWNER_INSTALLATION,
        account="ghapp-owner",
        account_type="Organization",
        repositories=["ci"],
    )
    return await ghapp_with(GHAPP_ALLOWED_ACCOUNTS="")


def refused(ghapp: Ghapp, rule: str) -> float:
    return ghapp.services.metrics.registry.get_sample_value("ghapp_jobs_refused_total", {"reason": rule}) or 0


def pool_of(job: dict[str, Any]) -> str:
    return str(job["metadata"]["labels"]["ghapp/pool"])


# -- accounts -----------------------------------------------------------------------------------------


async def test_disallowed_account_gets_nothing_and_is_logged_once(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ghapp = await ghapp_with(GHAPP_ALLOWED_ACCOUNTS="ACME, alice")
    for _ in range(3):
        await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()

    (job,) = ghapp.runner_jobs()  # acme's (allowed, case-insensitively); none for globex
    assert job["metadata"]["annotations"]["ghapp/repository"] == "acme/webapp"
    assert not [c for c in ghapp.github.calls if c.installation_id == OTHER_ORG_INSTALLATION]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert len(warnings) == 1  # once per installation
    assert "account globex is not in GHAPP_ALLOWED_ACCOUNTS" in warnings[0].getMessage()
    assert getattr(warnings[0], "account", None) == "globex"
    assert refused(ghapp, "account-not-allowed") == 3


async def test_empty_allowed_accounts_means_the_app_owner_only(owner_only: Ghapp) -> None:
    for installation, repository in (
        (OWNER_INSTALLATION, "ghapp-owner/ci"),
        (ORG_INSTALLATION, "acme/webapp"),
        (USER_INSTALLATION, "alice/tools"),
    ):
        await owner_only.queue(installation_id=installation, repository=repository, labels=PUBLIC)
    await owner_only.settle()

    (job,) = owner_only.runner_jobs()
    assert job["metadata"]["annotations"]["ghapp/repository"] == "ghapp-owner/ci"
    assert len(owner_only.github.calls_to("GET", r"/app")) == 1  # looked up once, then cached
    assert refused(owner_only, "account-not-allowed") == 2


async def test_installation_on_a_disallowed_account_is_a_warning(
    owner_only: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for login in ("initech", "ghapp-owner"):
        payload = {"action": "created", "installation": {"id": 9, "account": {"login": login}}}
        await owner_only.github.deliver("installation", payload)
    await owner_only.settle()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "account", None) for r in warnings] == ["initech"]
    assert "GHAPP_ALLOWED_ACCOUNTS" in warnings[0].getMessage()


async def test_star_allows_every_account(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub
) -> None:
    ghapp = await ghapp_with(GHAPP_ALLOWED_ACCOUNTS="*")
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1
    assert not ghapp.github.calls_to("GET", r"/app")


# -- public repositories and forks ----------------------------------------------------------------------


async def test_public_repository_is_refused_by_default(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, private=False)
    await ghapp.settle()
    assert ghapp.runner_jobs() == []
    assert ghapp.runner_secrets() == []
    assert not ghapp.github.calls_to("POST", r".*")  # no token, no registration
    assert refused(ghapp, "public-repository") == 1
    (line,) = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert "acme/webapp is public and the pool does not set allow_public" in line.getMessage()


async def test_public_repository_in_an_allow_public_pool(ghapp: Ghapp) -> None:
    first = ghapp.github.queue_job(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=PUBLIC, private=False
    )
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(first["id"], "queued"))
    await ghapp.queue(
        installation_id=ORG_INSTALLATION,
        repository="acme/webapp",
        labels=PUBLIC,
        private=False,
        run_id=first["run_id"],
    )
    await ghapp.settle()
    assert [pool_of(job) for job in ghapp.runner_jobs()] == ["public", "public"]
    # the fork rule looked the run up once for both of its jobs
    runs = ghapp.github.calls_to("GET", rf"/repos/acme/webapp/actions/runs/{first['run_id']}")
    assert [c.status for c in runs] == [200]


async def test_pull_request_from_a_fork_is_refused(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await ghapp.queue(
        installation_id=ORG_INSTALLATION,
        repository="acme/webapp",
        labels=PUBLIC,
        private=False,
        head_repository="mallory/webapp",
        event="pull_request",
    )
    await ghapp.settle()
    assert ghapp.runner_jobs() == []
    assert refused(ghapp, "fork-pull-request") == 1
    (line,) = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert "comes from the fork mallory/webapp and the pool does not set allow_forks" in line.getMessage()


async def test_pull_request_from_a_fork_in_an_allow_forks_pool(ghapp: Ghapp) -> None:
    await ghapp.queue(
        installation_id=ORG_INSTALLATION,
        repository="acme/webapp",
        labels=FORKS,
        private=False,
        head_repository="mallory/webapp",
        event="pull_request",
    )
    await ghapp.settle()
    assert [pool_of(job) for job in ghapp.runner_jobs()] == ["forks"]


async def test_private_repositories_need_no_run_lookup(ghapp: Ghapp) -> None:
    await ghapp.queue(
        installation_id=ORG_INSTALLATION,
        repository="acme/webapp",
        labels=PUBLIC,
        head_repository="mallory/webapp",
        event="pull_request",
    )
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1
    assert not ghapp.github.calls_to("GET", r".*/actions/runs/.*")


# -- per-pool scoping ---------------------------------------------------------------------------------


async def test_repository_and_organization_globs_pick_the_pool(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/infra-dns", labels=LINUX)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)  # not infra-*
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)  # glo*
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)  # neither
    await ghapp.settle()

    pools = {j["metadata"]["annotations"]["ghapp/repository"]: pool_of(j) for j in ghapp.runner_jobs()}
    assert pools == {"acme/infra-dns": "infra", "acme/webapp": "linux", "globex/site": "linux"}
    assert refused(ghapp, "outside-pool-scope") == 1
    (line,) = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert "pool infra: owner alice matches none of organizations ['ACME']" in line.getMessage()
    assert "pool linux: owner alice matches none of organizations ['acme', 'glo*']" in line.getMessage()


# -- pure rules ---------------------------------------------------------------------------------------


SAMPLE: dict[str, Any] = json.loads(SAMPLE_PAYLOAD.read_text())


@pytest.mark.parametrize(
    ("allowed", "owner", "account", "verdict"),
    [
        (("*",), None, "anyone", None),
        (("Acme",), None, "ACME", None),
        (("acme",), None, "globex", "account globex is not in GHAPP_ALLOWED_ACCOUNTS"),
        ((), "Owner", "owner", None),
        ((), "owner", "acme", "account acme is not the App's owner (owner)"),
        ((), None, "acme", "needs GitHub (GET /app)"),
    ],
)
def test_account_rule(allowed: tuple[str, ...], owner: str | None, account: str, verdict: str | None) -> None:
    result = policy.account_verdict(account, allowed=allowed, app_owner=owner)
    if verdict is None:
        assert result is None
    else:
        assert result is not None
        assert result.rule == "account-not-allowed"
        assert verdict in result.reason


def test_unknown_facts_refuse_in_the_service_and_are_noted_offline(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    settings = load_settings({"GHAPP_POOLS_FILE": str(path)})
    public = json.loads(json.dumps(SAMPLE))
    public["repository"].update(private=False, visibility="public")
    public["workflow_job"]["labels"] = PUBLIC
    job = WorkflowJob.from_payload(public)
    assert policy.needs_head_repository(job, planner.matching_pools(job.labels, settings.pools))

    served = planner.plan(job, settings, facts=policy.Facts())
    assert isinstance(served, planner.Skip)
    assert served.rule == "account-not-allowed"
    assert "could not be checked" in served.reason
    served = planner.plan(job, settings, facts=policy.Facts(app_owner="acme"))
    assert isinstance(served, planner.Skip)
    assert served.rule == "fork-pull-request"

    offline = planner.plan(job, settings, facts=policy.Facts(offline=True))
    assert isinstance(offline, planner.RunnerPlan)
    assert len(offline.notes) == 2


# -- hardening ----------------------------------------------------------------------------------------


def test_the_hardened_pod_is_the_default() -> None:
    settings = load_settings({})
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=policy.Facts(app_owner="acme"))
    assert isinstance(result, planner.RunnerPlan)
    job = manifests.runner_job(result)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsUser": 1001, "seccompProfile": {"type": "RuntimeDefault"}}
    (runner,) = pod["containers"]
    assert runner["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    secret = manifests.runner_secret(result, credential=manifests.Secret("x"), job_uid="u")
    assert secret["immutable"] is True


def test_runner_service_account_setting(tmp_path: Path) -> None:
    settings = load_settings({"GHAPP_RUNNER_SERVICE_ACCOUNT": "ci-runner", "GHAPP_ALLOWED_ACCOUNTS": "*"})
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=policy.Facts())
    assert isinstance(result, planner.RunnerPlan)
    assert manifests.runner_job(result)["spec"]["template"]["spec"]["serviceAccountName"] == "ci-runner"


def test_an_explicit_relaxation_in_the_template_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(
        """
pools:
  - name: root
    labels: [self-hosted, linux, x64]
    template:
      spec:
        automountServiceAccountToken: true
        serviceAccountName: deployer
        securityContext: {runAsUser: 0}
        containers:
          - name: runner
            securityContext: {allowPrivilegeEscalation: true, capabilities: {add: [SYS_ADMIN]}}
"""
    )
    settings = load_settings({"GHAPP_POOLS_FILE": str(path), "GHAPP_ALLOWED_ACCOUNTS": "*"})
    result = planner.plan(WorkflowJob.from_payload(SAMPLE), settings, facts=policy.Facts())
    assert isinstance(result, planner.RunnerPlan)
    job = manifests.runner_job(result)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "deployer"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsUser"] == 0
    (runner,) = pod["containers"]
    assert runner["securityContext"] == {
        "allowPrivilegeEscalation": True,
        "capabilities": {"add": ["SYS_ADMIN"]},
    }


# -- ghapp render explains ------------------------------------------------------------------------------


def payload_file(tmp_path: Path, **repository: Any) -> Path:
    data = json.loads(SAMPLE_PAYLOAD.read_text())
    data["repository"].update(repository)
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(data))
    return path


def test_render_names_the_rule_that_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = payload_file(tmp_path, private=False, visibility="public")
    assert main(["render", "--payload", str(path)]) == 1
    out = capsys.readouterr().out
    assert "refused by rule public-repository" in out
    assert "acme/webapp is public and the pool does not set allow_public" in out


def test_render_and_the_fork_rule(
    tmp_path: Path, pools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = payload_file(tmp_path, private=False, visibility="public")
    args = ["render", "--payload", str(path), "--pools", str(pools_file), "--pool", "public"]

    assert main(args) == 0  # offline the fork rule is not checked, and says so
    out = capsys.readouterr().out
    assert "# not checked: pool public: whether run 10381577 of public acme/webapp comes from a fork" in out
    assert main([*args, "--head-repository", "acme/webapp"]) == 0
    assert "not checked: pool public" not in capsys.readouterr().out
    assert main([*args, "--head-repository", "mallory/webapp"]) == 1
    assert "refused by rule fork-pull-request" in capsys.readouterr().out


def test_render_checks_the_account_with_app_owner(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--app-owner", "someone-else"]) == 1
    assert "refused by rule account-not-allowed" in capsys.readouterr().out
    assert main(["render", "--app-owner", "acme"]) == 0
    _, job = yaml.safe_load_all(capsys.readouterr().out)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"
