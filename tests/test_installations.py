"""Installations that go away: deleted or suspended (by webhook or by a refused token), and back again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .conftest import ORG_INSTALLATION, USER_INSTALLATION, Ghapp
from .fakes.github import FakeGitHub
from .realcluster import Cluster, eventually

LINUX = ["self-hosted", "linux", "x64"]


def names(objects: list[dict[str, object]]) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects}  # type: ignore[index]


def calls_for_acme(github: FakeGitHub) -> int:
    """Requests made about the acme installation: its token, its repositories, its organisation."""
    return sum(
        1
        for c in github.calls
        if c.path.startswith(("/repos/acme/", "/orgs/acme/", f"/app/installations/{ORG_INSTALLATION}/"))
    )


async def test_an_uninstalled_installation_loses_its_runners_and_costs_no_more_calls(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    acme = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)
        for repository in ("acme/webapp", "acme/api")
    ]
    alice = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 3

    delivery = await github.deliver("installation", github.delete_installation(ORG_INSTALLATION))
    await ghapp.settle()
    assert delivery.ok
    assert names(ghapp.runner_jobs()) == {f"ghapp-{alice}"}
    assert names(ghapp.runner_secrets()) == {f"ghapp-{alice}"}
    assert ghapp.metric("ghapp_installations_retired_total", reason="deleted") == 1
    assert not any(f"ghapp-{i}" in ghapp.services.inventory.jobs for i in acme)

    before = calls_for_acme(github)
    for _ in range(2):
        report = await ghapp.services.reconciler.reconcile_once()
        assert report.errors == []
    assert calls_for_acme(github) == before
    assert names(ghapp.runner_jobs()) == {f"ghapp-{alice}"}


async def test_a_token_refused_as_suspended_retires_the_installation_until_unsuspend(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    announced = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    github.suspend_installation(ORG_INSTALLATION)  # and its webhook never arrives
    lost = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)["id"]

    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.errors, report.installations_retired) == ([], 1)
    assert ghapp.runner_jobs() == []
    assert ghapp.runner_secrets() == []
    assert ghapp.metric("ghapp_installations_retired_total", reason="suspended") == 1
    mints = len(github.calls_to("POST", rf"/app/installations/{ORG_INSTALLATION}/access_tokens"))

    again = await ghapp.services.reconciler.reconcile_once()
    assert (again.errors, again.installations_retired) == ([], 0)
    assert len(github.calls_to("POST", rf"/app/installations/{ORG_INSTALLATION}/access_tokens")) == mints

    delivery = await github.deliver("installation", github.unsuspend_installation(ORG_INSTALLATION))
    await ghapp.settle()
    assert delivery.ok
    back = await ghapp.services.reconciler.reconcile_once()  # its repositories are scanned again
    await ghapp.settle()
    assert (back.errors, back.launched) == ([], 2)
    assert names(ghapp.runner_jobs()) == {f"ghapp-{announced}", f"ghapp-{lost}"}


async def test_a_suspend_webhook_removes_runners_and_a_deleted_installation_found_by_its_token_too(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    acme = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    alice = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()

    await github.deliver("installation", github.suspend_installation(ORG_INSTALLATION))
    await ghapp.settle()
    assert names(ghapp.runner_jobs()) == {f"ghapp-{alice}"}
    assert ghapp.metric("ghapp_installations_retired_total", reason="suspended") == 1

    github.delete_installation(USER_INSTALLATION)  # uninstalled, and the webhook was lost
    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.errors, report.installations_retired) == ([], 1)
    assert ghapp.runner_jobs() == []
    assert ghapp.runner_secrets() == []
    assert ghapp.metric("ghapp_installations_retired_total", reason="deleted") == 1
    assert f"ghapp-{acme}" not in ghapp.services.inventory.jobs


async def test_uninstalling_removes_that_installations_jobs_and_secrets_on_a_real_api_server(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]],
    github: FakeGitHub,
    cluster: Cluster,
    cluster_namespace: str,
) -> None:
    ghapp = await real_ghapp_with()
    for repository in ("acme/webapp", "acme/api"):
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)
    alice = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    acme_selector = f"ghapp/installation-id={ORG_INSTALLATION}"
    assert len(await cluster.objects("jobs", cluster_namespace, selector=acme_selector)) == 2
    assert len(await cluster.objects("secrets", cluster_namespace, selector=acme_selector)) == 2

    delivery = await github.deliver("installation", github.delete_installation(ORG_INSTALLATION))
    await ghapp.settle()
    assert delivery.ok

    async def acme_gone() -> bool:
        return not any(
            [
                *await cluster.objects("jobs", cluster_namespace, selector=acme_selector),
                *await cluster.objects("secrets", cluster_namespace, selector=acme_selector),
            ]
        )

    await eventually(acme_gone, what="the uninstalled installation's Jobs and Secrets gone")
    managed = "app.kubernetes.io/managed-by=ghapp"
    assert names(await cluster.objects("jobs", cluster_namespace, selector=managed)) == {f"ghapp-{alice}"}
    assert names(await cluster.objects("secrets", cluster_namespace, selector=managed)) == {f"ghapp-{alice}"}
    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []


async def test_a_failure_while_the_scan_retires_an_installation_is_reported_and_the_pass_goes_on(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    acme = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    alice = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    github.delete_installation(ORG_INSTALLATION)  # its token is refused: the scan finds it gone
    ghapp.kube.fail_next(1, status=403, verb="list", resource="jobs")  # and removing its runners fails
    alice_scans = len(github.calls_to("GET", "/repos/alice/tools/actions/runs"))

    report = await ghapp.services.reconciler.reconcile_once()  # returns: the failure is in its report
    assert any(error.startswith(f"scan of installation {ORG_INSTALLATION}:") for error in report.errors)
    assert ghapp.services.installations.out_of_service(ORG_INSTALLATION)
    assert len(github.calls_to("GET", "/repos/alice/tools/actions/runs")) > alice_scans  # the other went on

    await ghapp.services.reconciler.reconcile_once()  # the next pass finishes removing acme's runners
    assert names(ghapp.runner_jobs()) == {f"ghapp-{alice}"}
    assert f"ghapp-{acme}" not in names(ghapp.runner_secrets())
