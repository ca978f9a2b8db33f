"""The reconciler's view of GitHub: which runs and jobs it scans, how it pages, what a pass may spend."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from ghapp.activity import Activity
from ghapp.budget import RateWindow, ScanBudgets
from ghapp.clock import ManualClock
from ghapp.planner import RunnerScope

from .conftest import ORG_INSTALLATION, OTHER_ORG_INSTALLATION, Ghapp, wait_for, write_pools
from .fakes.github import FakeGitHub

LINUX = ["self-hosted", "linux", "x64"]


def names(objects: list[dict[str, object]]) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects}  # type: ignore[index]


async def active_repositories(ghapp: Ghapp, github: FakeGitHub, count: int, *, lost: bool) -> dict[str, int]:
    """`count` repositories acme/r0, acme/r1, … granted to the org installation, each made active by a job
    planned there (a webhook); with `lost`, each also has a queued job whose webhook was lost. Repository →
    that lost job's id (empty without `lost`)."""
    repositories = [f"acme/r{i}" for i in range(count)]
    github.installation(ORG_INSTALLATION).repositories.extend(r.split("/")[1] for r in repositories)
    lost_jobs = {}
    for repository in repositories:
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)
        if lost:
            job = github.queue_job(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)
            lost_jobs[repository] = int(job["id"])
    await ghapp.settle()
    return lost_jobs


async def test_a_queued_job_inside_an_in_progress_run_gets_a_runner(ghapp: Ghapp, github: FakeGitHub) -> None:
    # a run of two jobs: the first was announced and has started, the second's webhook was lost for good
    first = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    run_id = github.job(first)["run_id"]
    second = github.queue_job(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, run_id=run_id, name="test"
    )["id"]
    github.register_runner(scope="org:acme", name=f"ghapp-{first}", labels=LINUX)
    github.start_job(first, runner_name=f"ghapp-{first}")
    assert github.run(run_id)["status"] == "in_progress"

    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert report.errors == []
    assert report.launched == 1
    assert names(ghapp.runner_jobs()) == {f"ghapp-{first}", f"ghapp-{second}"}


async def test_more_than_a_hundred_runs_and_jobs_are_all_found(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "big.yaml", max_runners=1000)
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(pools))
    announced = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    # 130 queued runs of one job each, and one started run with 120 more jobs: no webhooks for any of them
    lost = [
        github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)["id"]
        for _ in range(130)
    ]
    big_run = github.job(lost[0])["run_id"]
    lost += [
        github.queue_job(
            installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, run_id=big_run
        )["id"]
        for _ in range(120)
    ]
    github.register_runner(scope="org:acme", name="ghapp-elsewhere", labels=LINUX)
    github.start_job(lost[0], runner_name="ghapp-elsewhere")  # big_run is in progress now
    waiting = set(lost[1:])

    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert report.errors == []
    assert report.launched == len(waiting)
    assert names(ghapp.runner_jobs()) == {f"ghapp-{i}" for i in [announced, *waiting]}
    # it paged through runs and jobs with GitHub's Link header, 100 at a time
    run_pages = github.calls_to("GET", r"/repos/acme/webapp/actions/runs")
    assert {(c.query.get("status"), c.query.get("page")) for c in run_pages} == {
        ("queued", None),
        ("queued", "2"),
        ("in_progress", None),
    }
    job_pages = github.calls_to("GET", rf"/repos/acme/webapp/actions/runs/{big_run}/jobs")
    assert [c.query.get("page") for c in job_pages] == [None, "2"]
    assert all(c.query["per_page"] == "100" for c in run_pages + job_pages)


async def test_a_pass_spends_its_budget_then_the_next_ones_go_on_where_it_stopped(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    # 0.2 % of a 5,000-request window: the scan may spend 10 requests an hour on this installation; one
    # repository at a time, so which requests the budget allows is exact
    ghapp = await ghapp_with(
        GHAPP_RECONCILE_RATE_SHARE="0.002",
        GHAPP_REGISTRATION_TIMEOUT_SECONDS="86400",
        GHAPP_SCAN_CONCURRENCY="1",
    )
    lost = await active_repositories(ghapp, github, 4, lost=True)
    repositories = list(lost)

    def scan_calls(status: int | None = None) -> int:
        calls = github.calls_to("GET", r"/repos/acme/[^/]+/actions/runs(/\d+/jobs)?")
        return len([c for c in calls if status is None or c.status == status])

    reconcile = ghapp.services.reconciler.reconcile_once
    first = await reconcile()  # 9 requests (share of what remains): r0 and r1 in full (4 each), then r2 stops
    await ghapp.settle()
    assert (scan_calls(), first.repositories_deferred, first.errors) == (9, 2, [])
    inst = str(ORG_INSTALLATION)
    assert ghapp.metric("ghapp_scan_budget_remaining", installation=inst) == 1  # 10 a window, 9 spent
    reset = ghapp.metric("ghapp_github_rate_limit_reset_timestamp", installation=inst)
    assert clock.now() < reset <= clock.now() + 3600
    assert names(ghapp.runner_jobs()) >= {f"ghapp-{lost[r]}" for r in repositories[:2]}
    assert f"ghapp-{lost['acme/r2']}" not in names(ghapp.runner_jobs())

    # the window's allowance has one request left: r2's queued runs have not changed (a free 304), its
    # in-progress runs take the last request, and then nothing
    second = await reconcile()
    assert (scan_calls(), second.repositories_deferred, scan_calls(304)) == (11, 4, 1)
    third = await reconcile()  # and then no request at all until GitHub's window resets
    assert (scan_calls(), third.repositories_deferred, third.launched) == (11, 4, 0)
    assert ghapp.metric("ghapp_scan_budget_remaining", installation=inst) == 0

    clock.advance(3601)  # a new window: the scan goes on with r2 and r3, not from the start
    fourth = await reconcile()
    await ghapp.settle()
    assert (fourth.repositories_deferred, fourth.launched, fourth.errors) == (0, 2, [])
    assert ghapp.metric("ghapp_scan_budget_remaining", installation=inst) == 10 - 6  # a new window
    assert ghapp.metric("ghapp_github_rate_limit_reset_timestamp", installation=inst) > reset
    # r2's jobs and all of r3 cost 6 requests; r0 and r1 did not change since the first pass: 8 free 304s
    assert scan_calls() == 11 + 16
    assert scan_calls(304) == 1 + 2 + 8
    assert names(ghapp.runner_jobs()) >= {f"ghapp-{lost[r]}" for r in repositories}


async def test_the_scan_lists_repositories_at_once_up_to_its_setting_and_never_overdraws_its_budget(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    # 10 requests a window for the scan (0.2 % of 5,000); three repositories listed at once
    ghapp = await ghapp_with(
        GHAPP_RECONCILE_RATE_SHARE="0.002",
        GHAPP_REGISTRATION_TIMEOUT_SECONDS="86400",
        GHAPP_SCAN_CONCURRENCY="3",
    )
    lost = (await active_repositories(ghapp, github, 8, lost=True)).values()

    def counted_scan_calls() -> int:
        calls = github.calls_to("GET", r"/repos/acme/[^/]+/actions/runs(/\d+/jobs)?")
        return len([c for c in calls if c.status != 304])

    gate = github.gate(r"/repos/acme/[^/]+/actions/runs(/\d+/jobs)?")
    first = asyncio.create_task(ghapp.services.reconciler.reconcile_once())
    await wait_for(lambda: gate.in_flight >= 3, what="three listings in flight at once")
    gate.open()
    report = await first
    await ghapp.settle()
    assert gate.most_in_flight == 3
    assert report.errors == []
    assert 0 < counted_scan_calls() <= 10  # each repository costs 4 requests cold: the budget stops the pass
    assert report.repositories_deferred > 0
    waiting = ghapp.metric("ghapp_scan_repositories_waiting", installation=str(ORG_INSTALLATION))
    assert waiting == report.repositories_deferred

    for _window in range(8):  # each new window spends at most its 10 and goes on with what waited
        if report.repositories_deferred == 0:
            break
        clock.advance(3601)
        before = counted_scan_calls()
        report = await ghapp.services.reconciler.reconcile_once()
        await ghapp.settle()
        assert report.errors == []
        assert counted_scan_calls() - before <= 10
    assert report.repositories_deferred == 0
    assert ghapp.metric("ghapp_scan_repositories_waiting", installation=str(ORG_INSTALLATION)) == 0
    assert names(ghapp.runner_jobs()) >= {f"ghapp-{job}" for job in lost}


async def test_a_pass_cut_off_in_the_middle_of_its_scan_leaves_the_rest_to_the_next_pass(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_RECONCILE_TIMEOUT_SECONDS="60")
    await active_repositories(ghapp, github, 4, lost=False)

    def runs_listed(since: int) -> list[str]:
        runs = re.compile(r"/repos/acme/[^/]+/actions/runs")
        return [c.path for c in github.calls[since:] if runs.fullmatch(c.path)]

    gate = github.gate("/repos/acme/r2/actions/runs")  # GitHub does not answer for acme/r2
    since = len(github.calls)
    first = asyncio.create_task(ghapp.services.reconciler.reconcile_once())
    await wait_for(lambda: gate.in_flight == 1, what="the scan waiting for acme/r2")
    clock.advance(61)  # the pass's deadline
    report = await first
    assert report.errors == ["pass cut off after 60 s"]
    assert runs_listed(since)[0] == "/repos/acme/r0/actions/runs"  # one repository after another
    gate.open()

    since = len(github.calls)
    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []
    listed = runs_listed(since)
    assert listed[0] == "/repos/acme/r2/actions/runs"  # where the cut-off pass stopped, not from the start
    assert {path.split("/")[3] for path in listed} == {"r0", "r1", "r2", "r3"}


async def test_a_scan_that_took_half_the_pass_time_leaves_the_rest_and_the_pass_goes_on(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_RECONCILE_TIMEOUT_SECONDS="60")
    await active_repositories(ghapp, github, 4, lost=False)

    gate = github.gate("/repos/acme/r1/actions/runs")  # GitHub is slow to answer for acme/r1 ...
    first = asyncio.create_task(ghapp.services.reconciler.reconcile_once())
    await wait_for(lambda: gate.in_flight == 1, what="the scan waiting for acme/r1")
    clock.advance(31)  # ... so slow that half of the pass's 60 s have gone by
    gate.open()
    report = await first
    assert report.errors == []  # not cut off: the pass's other steps ran
    assert report.repositories_deferred == 2  # acme/r2 and acme/r3
    assert ghapp.metric("ghapp_scan_repositories_waiting", installation=str(ORG_INSTALLATION)) == 2

    since = len(github.calls)
    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.errors, report.repositories_deferred) == ([], 0)
    runs = re.compile(r"/repos/acme/[^/]+/actions/runs")
    first_listed = next(c.path for c in github.calls[since:] if runs.fullmatch(c.path))
    assert first_listed == "/repos/acme/r2/actions/runs"


async def test_a_pass_budgets_by_the_installations_own_limit_asked_of_github_when_unknown(
    ghapp: Ghapp, github: FakeGitHub, clock: ManualClock
) -> None:
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    clock.advance(3601)  # the window ghapp saw has reset; the new one is a large installation's
    github.set_rate_limit(installation_id=ORG_INSTALLATION, remaining=15_000, reset_in=3600, limit=15_000)
    asked = len(github.calls_to("GET", "/rate_limit"))
    scan_pattern = r"/repos/acme/[^/]+/actions/runs(/\d+/jobs)?"
    listed = len(github.calls_to("GET", scan_pattern))

    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []
    assert len(github.calls_to("GET", "/rate_limit")) == asked + 1  # free: GitHub does not count it
    spent = len([c for c in github.calls_to("GET", scan_pattern)[listed:] if c.status != 304])
    assert spent > 0
    inst = str(ORG_INSTALLATION)
    # half of the installation's own 15,000, not of GitHub's minimum 5,000
    assert ghapp.metric("ghapp_scan_budget_remaining", installation=inst) == 7_500 - spent
    used = github.installation_rate_used(ORG_INSTALLATION)
    assert ghapp.metric("ghapp_github_rate_limit_remaining", installation=inst) == 15_000 - used


async def test_a_repository_that_answers_404_is_dropped_counted_and_the_pass_still_succeeds(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    await ghapp.settle()
    lost = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)["id"]
    github.installation(ORG_INSTALLATION).repositories.remove("api")  # deleted, renamed or transferred

    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert (report.errors, report.repositories_dropped, report.launched) == ([], 1, 1)
    assert f"ghapp-{lost}" in names(ghapp.runner_jobs())
    assert ghapp.metric("ghapp_repositories_dropped_total") == 1
    assert ghapp.metric("ghapp_reconcile_passes_total", outcome="ok") == 1
    api_calls = len(github.calls_to("GET", r"/repos/acme/api/actions/runs"))
    assert api_calls == 1

    # its runner Job is still in the cluster, yet the repository is not asked about again
    again = await ghapp.services.reconciler.reconcile_once()
    assert (again.errors, again.repositories_dropped) == ([], 0)
    assert len(github.calls_to("GET", r"/repos/acme/api/actions/runs")) == api_calls
    assert ghapp.metric("ghapp_repositories_dropped_total") == 1

    # a job planned there again makes it scanned again
    github.installation(ORG_INSTALLATION).repositories.append("api")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    await ghapp.settle()
    await ghapp.services.reconciler.reconcile_once()
    assert len(github.calls_to("GET", r"/repos/acme/api/actions/runs")) == api_calls + 2


async def test_only_jobs_ghapp_plans_a_runner_for_make_a_repository_scanned(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub
) -> None:
    ghapp = await ghapp_with(GHAPP_ALLOWED_ACCOUNTS="acme,alice")
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=["ubuntu-latest"])
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    assert ghapp.metric("ghapp_jobs_refused_total", reason="account-not-allowed") == 1

    report = await ghapp.services.reconciler.reconcile_once()
    assert report.errors == []
    scanned = {c.path for c in github.calls if c.path.endswith("/actions/runs")}
    assert scanned == {"/repos/acme/webapp/actions/runs"}


async def test_a_pass_over_unchanged_listings_pays_nothing_and_still_sees_a_change(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    first = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    await ghapp.services.reconciler.reconcile_once()
    window = github.installation_rate_used(ORG_INSTALLATION)

    quiet = await ghapp.services.reconciler.reconcile_once()  # nothing changed: every listing answers 304
    assert quiet.errors == []
    assert github.installation_rate_used(ORG_INSTALLATION) == window
    listings = github.calls_to("GET", r"/repos/acme/webapp/actions/runs(/\d+/jobs)?")
    assert [c.status for c in listings[-3:]] == [304, 304, 304]
    runs = "/repos/{owner}/{repo}/actions/runs"
    assert ghapp.metric("ghapp_github_requests_total", endpoint=runs, status="304") == 2

    # a second job of the run (whose webhook is lost) changes the run's jobs: the next pass sees it
    run_id = github.job(first)["run_id"]
    second = github.queue_job(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX, run_id=run_id
    )["id"]
    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert (report.errors, report.launched) == ([], 1)
    assert names(ghapp.runner_jobs()) == {f"ghapp-{first}", f"ghapp-{second}"}


def test_scan_budgets_per_window_and_per_pass() -> None:
    budgets = ScanBudgets(share=0.5)
    window = RateWindow(limit=1000, remaining=1000, reset_at=5000.0)
    budget = budgets.for_pass(7, window, now=1000.0)
    assert budget.left == 500  # half the window's limit
    for _ in range(300):
        assert budget.reserve()
        budget.settle()
    assert budget.reserve()
    budget.settle(unchanged=True)  # a 304: free
    assert budget.reserve()
    budget.release()  # no answer: free
    assert (budget.spent, budget.unchanged, budget.left) == (300, 1, 200)
    budgets.record(7, RateWindow(limit=1000, remaining=600, reset_at=5000.0), budget)
    # the same window: what is left of its allowance, and no more than half of what remains
    assert budgets.for_pass(7, RateWindow(limit=1000, remaining=600, reset_at=5000.0), now=1060.0).left == 200
    assert budgets.for_pass(7, RateWindow(limit=1000, remaining=100, reset_at=5000.0), now=1060.0).left == 50
    assert budgets.for_pass(8, window, now=1060.0).left == 500  # another installation: its own
    # a new window starts afresh; an unknown or expired one counts as GitHub's minimum
    assert (
        budgets.for_pass(7, RateWindow(limit=1000, remaining=1000, reset_at=8600.0), now=5001.0).left == 500
    )
    assert budgets.for_pass(7, None, now=1060.0).left == 2500
    assert budgets.for_pass(7, window, now=6000.0).left == 2500
    empty = budgets.for_pass(9, RateWindow(limit=1000, remaining=0, reset_at=5000.0), now=1000.0)
    assert not empty.reserve()
    assert empty.left == 0


def test_activity_drops_gone_repositories_until_touched_and_forgets_them_in_time() -> None:
    activity = Activity()
    activity.touch(installation_id=1, repository="acme/a", now=0.0)
    activity.touch(installation_id=1, repository="acme/b", now=0.0)
    activity.touch(installation_id=2, repository="globex/c", now=0.0)
    activity.drop(installation_id=1, repository="acme/b", now=10.0)
    assert activity.recent(now=20.0, ttl=100.0) == {(1, "acme/a"), (2, "globex/c")}
    assert activity.gone(installation_id=1, repository="acme/b")
    activity.touch(installation_id=1, repository="acme/b", now=30.0)  # a job planned there again
    assert not activity.gone(installation_id=1, repository="acme/b")
    activity.drop(installation_id=1, repository="acme/b", now=40.0)
    assert activity.recent(now=200.0, ttl=100.0) == set()  # stale entries, gone ones too, are forgotten
    assert not activity.gone(installation_id=1, repository="acme/b")
    activity.touch(installation_id=1, repository="acme/a", now=300.0)
    activity.touch(installation_id=2, repository="globex/c", now=300.0)
    activity.forget_installation(1)
    assert activity.recent(now=300.0, ttl=100.0) == {(2, "globex/c")}


async def test_runner_lists_follow_the_link_header_past_a_hundred(ghapp: Ghapp, github: FakeGitHub) -> None:
    for i in range(150):
        github.register_runner(scope="org:acme", name=f"ghapp-{i}", labels=LINUX)
    scope = RunnerScope(kind="org", owner="acme")
    listed = await ghapp.services.github.runners(installation_id=ORG_INSTALLATION, scope=scope)
    assert sorted(r["name"] for r in listed) == sorted(f"ghapp-{i}" for i in range(150))
    pages = github.calls_to("GET", r"/orgs/acme/actions/runners")
    assert [(c.query.get("per_page"), c.query.get("page")) for c in pages] == [("100", None), ("100", "2")]
