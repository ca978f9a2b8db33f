"""Retries, rate limits, recovery, cleanup of surplus and orphans (real HTTP, manual time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ghapp.clock import ManualClock

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    USER_INSTALLATION,
    Ghapp,
    advance_past_creation,
    wait_for,
)
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator

LINUX = ["self-hosted", "linux", "x64"]


def names(objects: list[dict[str, object]]) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects}  # type: ignore[index]


async def test_transient_github_and_kubernetes_failures_are_retried(ghapp: Ghapp, clock: ManualClock) -> None:
    ghapp.github.fail_next(2, status=502, path_contains="registration-token")
    ghapp.kube.fail_next(2, status=500, verb="create", resource="jobs")
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    assert names(ghapp.runner_jobs()) == {f"ghapp-{job_id}"}
    assert len(ghapp.runner_secrets()) == 1
    assert [
        c.status for c in ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/registration-token")
    ] == [502, 502, 201]
    assert len(clock.sleeps) == 4  # one backoff per failure
    assert all(0 < s <= 30 for s in clock.sleeps)


async def test_secondary_rate_limit_honours_retry_after(ghapp: Ghapp, clock: ManualClock) -> None:
    ghapp.github.fail_next(1, status=403, path_contains="registration-token", headers={"retry-after": "7"})
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1
    assert clock.sleeps == [7.0]


async def test_secondary_limit_without_retry_after_waits_a_minute(ghapp: Ghapp, clock: ManualClock) -> None:
    ghapp.github.fail_next(1, status=429, path_contains="registration-token")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1
    assert clock.sleeps == [60.0]


async def test_primary_rate_limit_waits_for_the_reset_instead_of_hammering(
    ghapp: Ghapp, clock: ManualClock
) -> None:
    ghapp.github.set_rate_limit(installation_id=USER_INSTALLATION, remaining=0, reset_in=900)
    for _ in range(3):
        await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 3
    calls = ghapp.github.calls_to("POST", r"/repos/alice/tools/actions/runners/registration-token")
    assert [c.status for c in calls] == [403, 201]  # one refused call, then one after the reset
    assert len(clock.sleeps) == 1
    assert 899 <= clock.sleeps[0] <= 902
    assert ghapp.metric("ghapp_github_rate_limit_remaining", installation=str(USER_INSTALLATION)) > 0


async def test_revoked_installation_token_is_reminted_once(ghapp: Ghapp, clock: ManualClock) -> None:
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    (token,) = ghapp.github.tokens_for(USER_INSTALLATION)
    ghapp.github.revoke_token(token)
    clock.advance(3001)  # the registration token is due for renewal; the installation token is not
    await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 2
    assert len(ghapp.github.tokens_for(USER_INSTALLATION)) == 2  # re-minted once
    statuses = [
        c.status
        for c in ghapp.github.calls_to("POST", r"/repos/alice/tools/actions/runners/registration-token")
    ]
    assert statuses == [201, 401, 201]


async def test_reconciler_redelivers_failed_deliveries(ghapp: Ghapp) -> None:
    job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    lost = await ghapp.github.deliver(
        "workflow_job", ghapp.github.workflow_job_payload(job["id"], "queued"), fail=True
    )
    assert not lost.ok
    await ghapp.settle()
    assert ghapp.runner_jobs() == []

    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.github.drain()  # the fake sends the redelivery in the background
    await ghapp.settle()
    assert report.redelivered == 1
    assert names(ghapp.runner_jobs()) == {f"ghapp-{job['id']}"}
    redelivery = ghapp.github.deliveries[-1]
    assert (redelivery.guid, redelivery.redelivery, redelivery.ok) == (lost.guid, True, True)

    again = await ghapp.services.reconciler.reconcile_once()
    assert again.redelivered == 0  # the GUID now has a successful attempt


async def test_reconciler_finds_queued_jobs_that_have_no_runner(ghapp: Ghapp) -> None:
    seen = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    # jobs whose webhooks never arrived at all (and so are not in the delivery log either)
    silent = [
        ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)["id"]
        for _ in range(3)
    ]
    ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["windows"])
    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert report.launched == 3
    assert names(ghapp.runner_jobs()) == {f"ghapp-{i}" for i in [seen, *silent]}
    again = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert again.launched == 0
    assert len(ghapp.runner_jobs()) == 4


async def test_cancelled_job_leaves_no_idle_runner_and_busy_runners_are_kept(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_IDLE_GRACE_SECONDS="120")
    ids = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(4)
    ]
    await ghapp.settle()
    for i in ids:  # every runner registered
        github.register_runner(scope="org:acme", name=f"ghapp-{i}", labels=LINUX)
    github.start_job(ids[0], runner_name=f"ghapp-{ids[1]}")  # a runner takes another's job: busy
    github.cancel_job(ids[2])  # cancelled while queued: one runner too many
    await github.deliver("workflow_job", github.workflow_job_payload(ids[2], "completed"))
    await ghapp.settle()

    young = await ghapp.services.reconciler.reconcile_once()
    assert young.surplus_removed == 0  # within the grace period nothing is idle yet
    advance_past_creation(clock, ghapp.runner_jobs(), 121)
    report = await ghapp.services.reconciler.reconcile_once()
    # queued: ids[1], ids[3]; idle runners: ghapp-ids[0], ghapp-ids[2], ghapp-ids[3] → one surplus
    assert report.surplus_removed == 1
    left = {r["name"] for r in github.runners("org:acme")}
    assert f"ghapp-{ids[1]}" in left  # busy: never touched
    assert len(left) == 3
    assert len(ghapp.runner_jobs()) == 3
    assert names(ghapp.runner_jobs()) == left  # the removed runner's Job went with it
    again = await ghapp.services.reconciler.reconcile_once()
    assert again.surplus_removed == 0


async def test_runner_that_turns_busy_is_not_deleted(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_IDLE_GRACE_SECONDS="0")
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    github.register_runner(scope="org:acme", name=f"ghapp-{job_id}", labels=LINUX)
    github.cancel_job(job_id)
    clock.advance(1)
    # GitHub refuses the deregistration: the runner took a job between our list and our delete
    github.fail_next(1, status=422, path_contains="/actions/runners/")
    report = await ghapp.services.reconciler.reconcile_once()
    assert report.surplus_removed == 0
    assert names(ghapp.runner_jobs()) == {f"ghapp-{job_id}"}
    assert len(github.runners("org:acme")) == 1


async def test_orphans_of_each_kind_are_removed_and_nothing_else(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> None:
    # The reconciler's own cleanup: with no Pods (no Job controller), a failed Job shows no classified runner
    # failure, so ghapp.recovery leaves it to the pass (tests/test_recovery.py covers the fast path).
    kube.job_controller = False
    ghapp = await ghapp_with(GHAPP_REGISTRATION_TIMEOUT_SECONDS="600")
    healthy, failed, stuck = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(3)
    ]
    await ghapp.settle()
    github.register_runner(scope="org:acme", name=f"ghapp-{healthy}", labels=LINUX)
    github.start_job(healthy, runner_name=f"ghapp-{healthy}")  # a healthy, busy runner
    github.register_runner(scope="org:acme", name=f"ghapp-{failed}", labels=LINUX, status="offline")
    kube.finish_job(NAMESPACE, f"ghapp-{failed}", succeeded=False)  # its pod failed
    github.register_runner(scope="org:acme", name="ghapp-4444", labels=LINUX, status="offline")  # no Job
    github.register_runner(scope="org:acme", name="someone-elses", labels=LINUX, status="offline")
    # `stuck` was created 11 minutes ago and never registered a runner
    job = kube.get("jobs", NAMESPACE, f"ghapp-{stuck}")
    assert job is not None
    job["metadata"]["creationTimestamp"] = iso(clock.now() - 660)
    kube.put_object("jobs", job)
    # a Secret whose Job is gone, and a Job whose Secret never came
    kube.put_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ghapp-5555",
                "namespace": NAMESPACE,
                "labels": relabel(job, 5555),
                "creationTimestamp": iso(clock.now() - 660),
            },
            "data": {"token": "eA=="},
        },
    )
    kube.put_object(
        "jobs",
        {
            **job,
            "metadata": {
                **job["metadata"],
                "name": "ghapp-6666",
                "uid": "u-6666",
                "labels": relabel(job, 6666),
            },
        },
    )
    await ghapp.settle()
    await wait_for(lambda: ghapp.services.inventory.jobs.get("ghapp-6666") is not None, what="watch")
    await wait_for(
        lambda: ghapp.services.inventory.jobs[f"ghapp-{stuck}"].created_at < clock.now() - 600,
        what="watch",
    )

    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []
    assert names(ghapp.runner_jobs()) == {f"ghapp-{healthy}"}
    assert names(ghapp.runner_secrets()) == {f"ghapp-{healthy}"}  # the others went with their Jobs
    assert report.orphan_job_deleted == 3  # failed, stuck, and the Job without a Secret
    assert report.orphan_secret_deleted == 1  # ghapp-5555
    # failed's runner went once its Job was gone; ghapp-4444, an offline runner without a Job seen for the
    # first time, may be another replica's JIT runner registered a moment ago: it waits out the grace
    assert report.orphan_runner_removed == 1
    # `failed` and `stuck` are still queued in GitHub: the next pass gives them fresh runners

    clock.advance(ghapp.services.settings.orphan_grace_seconds)
    second = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert names(ghapp.runner_jobs()) == {f"ghapp-{i}" for i in (healthy, failed, stuck)}
    assert second.launched == 2
    assert second.orphan_runner_removed == 1  # ghapp-4444, now past the grace
    assert {r["name"] for r in github.runners("org:acme")} == {f"ghapp-{healthy}", "someone-elses"}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relabel(job: dict[str, Any], workflow_job_id: int) -> dict[str, str]:
    """A runner Job's labels, for another workflow job."""
    return {**job["metadata"]["labels"], "ghapp/workflow-job-id": str(workflow_job_id)}


async def test_runner_registered_but_never_online_is_cleaned_up(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, kube: KubeEmulator, clock: ManualClock
) -> None:
    # as a JIT runner is: registered (offline) before its pod starts — and here the pod never starts
    ghapp = await ghapp_with(GHAPP_REGISTRATION_TIMEOUT_SECONDS="600")
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    github.register_runner(scope="org:acme", name=f"ghapp-{job_id}", labels=LINUX, status="offline")
    young = await ghapp.services.reconciler.reconcile_once()
    assert young.orphan_job_deleted == 0  # within the timeout: left to start
    job = kube.get("jobs", NAMESPACE, f"ghapp-{job_id}")
    assert job is not None
    job["metadata"]["creationTimestamp"] = iso(clock.now() - 660)
    kube.put_object("jobs", job)
    await wait_for(
        lambda: ghapp.services.inventory.jobs[f"ghapp-{job_id}"].created_at < clock.now() - 600,
        what="watch",
    )
    report = await ghapp.services.reconciler.reconcile_once()
    assert report.orphan_job_deleted == 1
    assert github.runners("org:acme") == []  # its registration is removed too


async def test_the_watch_of_runner_jobs_survives_any_exception(ghapp: Ghapp, kube: KubeEmulator) -> None:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    # the next watch starts with a line longer than the client reads (over twice kubehttp's 2 MiB read buffer:
    # aiohttp raises LineTooLong, not a ClientError, so no KubernetesError): an exception nobody expected
    huge = b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "' + b"9" * 5 * 2**20 + b'"}}}\n'
    kube.send_first_on_watches(1, huge, resource="jobs")
    kube.end_watches()
    await wait_for(lambda: kube.watch_lines_pending == 0, what="the broken stream")
    kube.finish_job(NAMESPACE, name)
    # the inventory lists again and watches on: it sees the Job finish
    await wait_for(lambda: ghapp.services.inventory.jobs[name].finished, what="the watch after the fault")
    await wait_for(lambda: ghapp.services.inventory.broken_for() == 0, what="a working watch")


async def test_healthz_fails_while_the_watch_of_runner_jobs_stays_broken(
    ghapp_with: Callable[..., Awaitable[Ghapp]], kube: KubeEmulator
) -> None:
    ghapp = await ghapp_with(GHAPP_WATCH_BROKEN_LIMIT_SECONDS="120")
    assert await healthz(ghapp) == 200
    kube.fail_next(10**9, status=500, verb="watch", resource="jobs")  # every watch fails from now on
    kube.end_watches()
    await wait_for(lambda: ghapp.services.inventory.broken_for() >= 120, what="the limit")
    assert await healthz(ghapp) == 503  # the kubelet restarts a replica whose inventory no longer moves
    kube.clear_faults()
    await wait_for(lambda: ghapp.services.inventory.broken_for() == 0, what="a working watch")
    assert await healthz(ghapp) == 200


async def healthz(ghapp: Ghapp) -> int:
    async with aiohttp.ClientSession() as session, session.get(ghapp.server.make_url("/healthz")) as response:
        return response.status
