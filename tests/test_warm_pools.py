"""Warm pools against the fake GitHub and the Kubernetes emulator: the leader's reconcile pass keeps each warm
entry's idle runners topped up (on top of busy ones and queued jobs), within capacity, scales to zero outside
a window, recycles runners idle too long, and never removes a busy runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from ghapp import check, manifests, planner, warm
from ghapp.clock import ManualClock
from ghapp.config import load_settings

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    USER_INSTALLATION,
    Ghapp,
    advance_past_creation,
    wait_for,
    write_pools,
)
from .fakes.github import FakeGitHub
from .realcluster import Cluster, eventually

LINUX = ["self-hosted", "linux", "x64"]
StartGhapp = Callable[..., Awaitable[Ghapp]]


async def start(
    ghapp_with: StartGhapp,
    tmp_path: Path,
    *,
    warm_entries: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    **pool: Any,
) -> Ghapp:
    """ghapp with one `linux` pool that has `warm_entries` (and `pool`'s fields), environment `env` added."""
    path = write_pools(tmp_path / "pools.yaml", warm=warm_entries, **pool)
    return await ghapp_with(GHAPP_POOLS_FILE=str(path), **(env or {}))


def warm_jobs(ghapp: Ghapp) -> list[dict[str, Any]]:
    return [
        job
        for job in ghapp.runner_jobs()
        if job["metadata"]["labels"].get(manifests.WARM_LABEL) == "true"
        and not job["metadata"].get("deletionTimestamp")
    ]


def names(jobs: list[dict[str, Any]]) -> set[str]:
    return {job["metadata"]["name"] for job in jobs}


def come_online(ghapp: Ghapp, scope: str = "org:acme") -> None:
    """Every runner Job's runner registers and is online and idle (what its pod would do)."""
    registered = {r["name"] for r in ghapp.github.runners(scope)}
    for name in names(ghapp.runner_jobs()) - registered:
        ghapp.github.register_runner(scope=scope, name=name, labels=LINUX)


def idle_runners(ghapp: Ghapp, scope: str = "org:acme") -> set[str]:
    return {r["name"] for r in ghapp.github.runners(scope) if r["status"] == "online" and not r["busy"]}


async def reconcile(ghapp: Ghapp) -> Any:
    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    return report


async def test_the_buffer_is_filled_at_start_and_kept_without_doubling(
    ghapp_with: StartGhapp, tmp_path: Path
) -> None:
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 2}])
    report = await reconcile(ghapp)
    assert report.warm_started == 2
    jobs = warm_jobs(ghapp)
    assert names(jobs) == {
        warm.warm_name(prefix="ghapp", pool="linux", scope_key="org:acme", slot=slot) for slot in (0, 1)
    }
    job = jobs[0]
    assert job["metadata"]["labels"][manifests.JOB_ID_LABEL] == "0"
    assert job["metadata"]["annotations"][manifests.SCOPE_ANNOTATION] == "org:acme"
    assert ghapp.services.inventory.jobs[job["metadata"]["name"]].warm
    assert ghapp.metric("ghapp_warm_min_idle", pool="linux", scope="org:acme") == 2
    # still starting (not registered yet): they count, nothing more is started
    assert (await reconcile(ghapp)).warm_started == 0
    come_online(ghapp)
    again = await reconcile(ghapp)
    assert (again.warm_started, again.surplus_removed) == (0, 0)
    assert len(idle_runners(ghapp)) == 2
    assert ghapp.metric("ghapp_warm_idle", pool="linux", scope="org:acme") == 2


async def test_a_burst_finds_the_warm_runners_ready_and_the_buffer_refills(
    ghapp_with: StartGhapp, tmp_path: Path
) -> None:
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 2}])
    await reconcile(ghapp)
    come_online(ghapp)
    ready = sorted(idle_runners(ghapp))
    burst = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(5)
    ]
    await ghapp.settle()
    # GitHub gives two of the jobs to the two warm runners at once
    for job_id, runner in zip(burst, ready, strict=False):
        ghapp.github.start_job(job_id, runner_name=runner)
        await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "in_progress"))
    await ghapp.settle()
    assert [ghapp.github.job(j)["status"] for j in burst].count("in_progress") == 2
    # the five runners started for the burst cover the three jobs still queued and the buffer of two
    report = await reconcile(ghapp)
    assert report.warm_started == 0
    come_online(ghapp)
    for job_id in burst[2:]:
        ghapp.github.start_job(job_id, runner_name=sorted(idle_runners(ghapp))[0])
    report = await reconcile(ghapp)
    assert (report.warm_started, report.surplus_removed) == (0, 0)
    assert len(idle_runners(ghapp)) == 2  # the buffer is on top of the five busy runners
    # the busy runners finish: with their webhooks lost, the pass still sees only 2 idle: nothing to do
    for job_id in burst:
        ghapp.github.complete_job(job_id)
    assert len(idle_runners(ghapp)) == 2
    assert (await reconcile(ghapp)).warm_started == 0


async def test_warm_runners_taken_by_jobs_are_replaced(ghapp_with: StartGhapp, tmp_path: Path) -> None:
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[{"repository": "alice/tools", "min_idle": 2}])
    await reconcile(ghapp)
    come_online(ghapp, "repo:alice/tools")
    before = names(warm_jobs(ghapp))
    # two jobs whose webhooks were lost run on the warm runners
    for runner in sorted(idle_runners(ghapp, "repo:alice/tools")):
        job = ghapp.github.queue_job(
            installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX
        )
        ghapp.github.start_job(job["id"], runner_name=runner)
    report = await reconcile(ghapp)
    assert report.warm_started == 2
    fresh = names(warm_jobs(ghapp)) - before
    assert len(fresh) == 2
    assert all(warm.is_warm_name(name, prefix="ghapp") for name in fresh)
    assert {job["metadata"]["annotations"][manifests.REPOSITORY_ANNOTATION] for job in warm_jobs(ghapp)} == {
        "alice/tools"
    }


def window_around(now: float, *, min_idle: int) -> dict[str, Any]:
    """A window open from an hour before `now` to an hour after it, every day, in UTC."""
    moment = datetime.fromtimestamp(now, UTC)
    start, end = moment - timedelta(hours=1), moment + timedelta(hours=1)
    days = list(warm.WEEKDAYS)
    return {
        "days": days,
        "start": start.strftime("%H:%M"),
        "end": end.strftime("%H:%M"),
        "timezone": "UTC",
        "min_idle": min_idle,
    }


async def test_scale_to_zero_outside_the_window(
    ghapp_with: StartGhapp, tmp_path: Path, clock: ManualClock
) -> None:
    entry = {"organization": "acme", "min_idle": 0, "schedule": [window_around(clock.now(), min_idle=3)]}
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[entry])
    assert (await reconcile(ghapp)).warm_started == 3
    come_online(ghapp)
    clock.advance(2 * 3600)  # the window has closed
    report = await reconcile(ghapp)
    assert (report.surplus_removed, report.warm_started) == (3, 0)
    assert warm_jobs(ghapp) == []
    assert idle_runners(ghapp) == set()
    assert ghapp.metric("ghapp_warm_min_idle", pool="linux", scope="org:acme") == 0


async def test_capacity_is_respected_and_queued_jobs_win(ghapp_with: StartGhapp, tmp_path: Path) -> None:
    ghapp = await start(
        ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 3}], max_runners=3
    )
    queued = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(2)
    ]
    await ghapp.settle()
    report = await reconcile(ghapp)
    # two runners for the queued jobs, and room for one warm runner only
    assert report.warm_started == 1
    assert len(ghapp.runner_jobs()) == 3
    assert len(queued) == 2
    # a job waiting for capacity wins over refilling: nothing warm starts while it waits
    ghapp.kube.finish_job(NAMESPACE, sorted(names(warm_jobs(ghapp)))[0])
    waiting = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(3)
    ]
    await ghapp.settle()
    assert ghapp.metric("ghapp_queue_length", pool="linux") >= 1
    before = names(ghapp.runner_jobs())
    report = await reconcile(ghapp)
    assert report.warm_started == 0
    assert not {n for n in names(ghapp.runner_jobs()) - before if warm.is_warm_name(n, prefix="ghapp")}
    assert len(waiting) == 3


async def test_ghapp_max_runners_caps_warm_runners_too(ghapp_with: StartGhapp, tmp_path: Path) -> None:
    ghapp = await start(
        ghapp_with,
        tmp_path,
        warm_entries=[{"organization": "acme", "min_idle": 3}],
        env={"GHAPP_MAX_RUNNERS": "2"},
    )
    report = await reconcile(ghapp)
    assert report.warm_started == 2
    assert len(warm_jobs(ghapp)) == 2


async def test_busy_runners_are_never_removed(
    ghapp_with: StartGhapp, tmp_path: Path, clock: ManualClock
) -> None:
    entry = {"organization": "acme", "min_idle": 0, "schedule": [window_around(clock.now(), min_idle=3)]}
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[entry])
    await reconcile(ghapp)
    come_online(ghapp)
    busy = sorted(idle_runners(ghapp))[:2]
    for runner in busy:
        job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        ghapp.github.start_job(job["id"], runner_name=runner)
    clock.advance(2 * 3600)  # closed: every idle runner is surplus, and both busy ones are past recycling age
    report = await reconcile(ghapp)
    assert report.surplus_removed == 1
    assert {r["name"] for r in ghapp.github.runners("org:acme")} == set(busy)
    assert names(warm_jobs(ghapp)) == set(busy)
    assert len(ghapp.github.calls_to("DELETE", r"/orgs/acme/actions/runners/\d+")) == 1


async def test_a_warm_runner_idle_too_long_is_replaced(ghapp_with: StartGhapp, tmp_path: Path) -> None:
    ghapp = await start(
        ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 1}], warm_recycle_seconds=600
    )
    await reconcile(ghapp)
    come_online(ghapp)
    (old,) = names(warm_jobs(ghapp))
    ghapp.services.clock.advance(300)
    report = await reconcile(ghapp)
    assert (report.warm_recycled, report.warm_started) == (0, 0)
    advance_past_creation(ghapp.services.clock, warm_jobs(ghapp), 601)  # by the Job's creationTimestamp
    report = await reconcile(ghapp)
    assert (report.warm_recycled, report.warm_started) == (1, 1)
    (new,) = names(warm_jobs(ghapp))
    assert new != old
    assert old not in {r["name"] for r in ghapp.github.runners("org:acme")}


async def test_a_new_leader_neither_doubles_nor_drops_the_buffer(
    ghapp_with: StartGhapp, tmp_path: Path
) -> None:
    first = await start(ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 3}])
    second = await start(ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 3}])
    await second.services.inventory.sync()
    # the old leader fills one slot and stops (its lease lost mid-refill)
    (name,) = warm.free_slots(prefix="ghapp", pool="linux", scope_key="org:acme", taken=set(), count=1)
    pool = first.services.settings.pools[0]
    scope = planner.RunnerScope(kind="org", owner="acme")
    plan = planner.warm_plan(
        first.services.settings, pool, scope=scope, installation_id=ORG_INSTALLATION, name=name
    )
    assert first.services.launcher.start_warm(plan)
    await first.settle()
    await first.stop()
    # the new leader derives the rest from the cluster and GitHub
    await second.services.inventory.sync()
    report = await reconcile(second)
    assert report.warm_started == 2
    assert len(warm_jobs(second)) == 3
    assert (await reconcile(second)).warm_started == 0


# -- the Kubernetes side on the real control plane ----------------------------------------------------------


async def real_warm_jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    jobs = await cluster.objects("jobs", namespace, selector=f"{manifests.WARM_LABEL}=true")
    return [job for job in jobs if not job["metadata"].get("deletionTimestamp")]


async def test_two_leaders_filling_at_once_on_a_real_api_server_make_the_buffer_once(
    real_ghapp_with: StartGhapp, cluster: Cluster, cluster_namespace: str, tmp_path: Path
) -> None:
    path = write_pools(tmp_path / "pools.yaml", warm=[{"organization": "acme", "min_idle": 3}], mode="jit")
    old = await real_ghapp_with(GHAPP_POOLS_FILE=str(path))
    new = await real_ghapp_with(GHAPP_POOLS_FILE=str(path))
    for ghapp in (old, new):
        await ghapp.services.inventory.sync()
    # a stale leader and the new one run a pass at the same moment: the same slots, so 409 for one of them
    await asyncio.gather(old.services.reconciler.reconcile_once(), new.services.reconciler.reconcile_once())
    await old.settle()
    await new.settle()
    jobs = await real_warm_jobs(cluster, cluster_namespace)
    assert len(jobs) == 3
    for job in jobs:
        name = job["metadata"]["name"]
        secret = await cluster.get("secret", name, cluster_namespace)
        assert secret is not None
        assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert job["spec"]["template"]["metadata"]["labels"][manifests.WARM_LABEL] == "true"
    # one JIT runner registered per slot, none twice and none left over
    assert sorted(r["name"] for r in new.github.runners("org:acme")) == sorted(
        j["metadata"]["name"] for j in jobs
    )


async def test_scale_to_zero_deletes_the_idle_runner_jobs_on_a_real_api_server(
    real_ghapp_with: StartGhapp, cluster: Cluster, cluster_namespace: str, tmp_path: Path, clock: ManualClock
) -> None:
    entry = {"organization": "acme", "min_idle": 0, "schedule": [window_around(clock.now(), min_idle=2)]}
    ghapp = await real_ghapp_with(GHAPP_POOLS_FILE=str(write_pools(tmp_path / "pools.yaml", warm=[entry])))
    await ghapp.services.inventory.sync()
    assert (await reconcile(ghapp)).warm_started == 2
    jobs = await real_warm_jobs(cluster, cluster_namespace)
    assert len(jobs) == 2
    busy, idle = sorted(job["metadata"]["name"] for job in jobs)
    for name in (busy, idle):
        ghapp.github.register_runner(scope="org:acme", name=name, labels=LINUX)
    job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    ghapp.github.start_job(job["id"], runner_name=busy)
    clock.advance(2 * 3600)
    report = await reconcile(ghapp)
    assert report.surplus_removed == 1

    async def only_the_busy_one_left() -> bool:
        return names(await real_warm_jobs(cluster, cluster_namespace)) == {busy}

    await eventually(only_the_busy_one_left, what="the idle warm runner's Job deleted, the busy one kept")


async def test_check_shows_each_warm_entry_now_and_a_missing_installation(
    environ: dict[str, str], github: FakeGitHub, tmp_path: Path, clock: ManualClock
) -> None:
    entries = [{"organization": "acme", "min_idle": 2}, {"organization": "initech", "min_idle": 1}]
    settings = load_settings(
        {**environ, "GHAPP_POOLS_FILE": str(write_pools(tmp_path / "p.yaml", warm=entries))}
    )
    results = await check.run_checks(settings, kube_configuration=None, clock=clock)
    lines = [r.line() for r in results if r.what.startswith("warm pool")]
    assert lines == [
        "PASS  warm pool linux for org:acme: pool linux, org:acme: min_idle now 2; no schedule",
        "FAIL  warm pool linux for org:initech: the App's installation on initech is missing;"
        " no runners are kept there",
    ]


async def test_an_account_the_account_rule_refuses_gets_no_warm_runners(
    ghapp_with: StartGhapp, tmp_path: Path
) -> None:
    entries = [{"organization": "globex", "min_idle": 1}, {"organization": "acme", "min_idle": 1}]
    ghapp = await start(ghapp_with, tmp_path, warm_entries=entries, env={"GHAPP_ALLOWED_ACCOUNTS": "acme"})
    report = await reconcile(ghapp)
    assert report.warm_started == 1
    assert [job["metadata"]["annotations"][manifests.SCOPE_ANNOTATION] for job in warm_jobs(ghapp)] == [
        "org:acme"
    ]
    assert report.errors == ["warm linux org:globex: account globex is not in GHAPP_ALLOWED_ACCOUNTS"]


async def test_a_runner_that_takes_a_job_while_it_is_being_removed_is_kept(
    ghapp_with: StartGhapp, tmp_path: Path, clock: ManualClock
) -> None:
    entry = {"organization": "acme", "min_idle": 0, "schedule": [window_around(clock.now(), min_idle=2)]}
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[entry])
    await reconcile(ghapp)
    come_online(ghapp)
    first, second = sorted(idle_runners(ghapp))
    github_client = ghapp.services.github
    find_runner, remove_runner = github_client.find_runner, github_client.remove_runner

    def take_a_job(runner: str) -> None:
        job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        ghapp.github.start_job(job["id"], runner_name=runner)

    async def busy_before_the_lookup(**kwargs: Any) -> Any:
        if kwargs["name"] == first:  # GitHub gives it a job after the listing, before the lookup by name
            take_a_job(first)
        return await find_runner(**kwargs)

    async def busy_before_the_delete(**kwargs: Any) -> bool:
        runner = next(r for r in ghapp.github.runners("org:acme") if r["id"] == kwargs["runner_id"])
        if runner["name"] == second:  # … or after the lookup, before the DELETE: GitHub answers 422
            take_a_job(second)
        return await remove_runner(**kwargs)

    github_client.find_runner = busy_before_the_lookup  # type: ignore[method-assign]
    github_client.remove_runner = busy_before_the_delete  # type: ignore[method-assign]
    clock.advance(2 * 3600)  # the window has closed: both idle runners are surplus
    report = await reconcile(ghapp)
    assert report.surplus_removed == 0
    assert {r["name"] for r in ghapp.github.runners("org:acme") if r["busy"]} == {first, second}
    assert names(warm_jobs(ghapp)) == {first, second}
    assert [c.status for c in ghapp.github.calls_to("DELETE", r"/orgs/acme/actions/runners/\d+")] == [422]


async def test_a_failed_warm_runner_is_replaced_by_the_warm_pass_not_as_a_workflow_jobs(
    ghapp_with: StartGhapp, tmp_path: Path
) -> None:
    ghapp = await start(ghapp_with, tmp_path, warm_entries=[{"organization": "acme", "min_idle": 1}])
    await reconcile(ghapp)
    (job,) = warm_jobs(ghapp)
    failed, failed_uid = job["metadata"]["name"], job["metadata"]["uid"]
    ghapp.kube.finish_job(NAMESPACE, failed, succeeded=False)
    await wait_for(
        lambda: ghapp.metric("ghapp_runner_failures_total", pool="linux", reason="killed") == 1,
        what="the failure seen by the pod watcher",
    )
    await ghapp.settle()
    report = await reconcile(ghapp)
    assert report.warm_started == 1
    (fresh,) = warm_jobs(ghapp)  # the failed Job was deleted by the pass; its slot is not reused at once
    assert fresh["metadata"]["uid"] != failed_uid
    assert fresh["metadata"]["name"] == warm.warm_name(
        prefix="ghapp", pool="linux", scope_key="org:acme", slot=1
    )
    assert "failed" not in fresh["status"]
    assert ghapp.github.calls_to("GET", r".*/actions/jobs/0") == []  # no workflow job 0


async def test_status_shows_each_warm_entry_now_and_its_next_change(
    ghapp_with: StartGhapp, tmp_path: Path, clock: ManualClock
) -> None:
    entries = [
        {"organization": "acme", "min_idle": 0, "schedule": [window_around(clock.now(), min_idle=2)]},
        {"repository": "alice/tools", "min_idle": 1},
    ]
    ghapp = await start(ghapp_with, tmp_path, warm_entries=entries)
    async with aiohttp.ClientSession() as session:
        async with session.get(ghapp.admin.make_url("/status.json")) as response:
            status = await response.json()
        async with session.get(ghapp.admin.make_url("/status"), headers={"Accept": "text/plain"}) as response:
            page = await response.text()
    closes = warm.next_change(ghapp.services.settings.pools[0].warm[0], clock.now())
    assert closes is not None
    assert status["warm"] == [
        {
            "pool": "linux",
            "scope": "org:acme",
            "min_idle": 2,
            "next_change_at": closes.at,
            "next_min_idle": 0,
        },
        {
            "pool": "linux",
            "scope": "repo:alice/tools",
            "min_idle": 1,
            "next_change_at": None,
            "next_min_idle": None,
        },
    ]
    assert "Warm pools" in page
    assert "no change within a week" in page
