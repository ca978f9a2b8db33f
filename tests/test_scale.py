"""Scale: a pass over an unchanged organisation pays only 304s; many lost jobs in one pass, within budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from ghapp.clock import ManualClock

from .conftest import ORG_INSTALLATION, OTHER_ORG_INSTALLATION, Ghapp, write_pools
from .fakes.github import FakeGitHub
from .test_scan import LINUX, names


async def test_a_steady_pass_with_nothing_changed_spends_no_counted_request(
    ghapp: Ghapp, github: FakeGitHub
) -> None:
    # three repositories of two installations, a runner busy with a started job in one of them: everything
    # the next passes list stays as it is
    jobs = [
        await ghapp.queue(installation_id=installation, repository=repository, labels=LINUX)
        for installation, repository in (
            (ORG_INSTALLATION, "acme/webapp"),
            (ORG_INSTALLATION, "acme/api"),
            (OTHER_ORG_INSTALLATION, "globex/site"),
        )
    ]
    await ghapp.settle()
    github.installation(ORG_INSTALLATION).repositories.append("api")
    github.register_runner(scope="org:acme", name=f"ghapp-{jobs[0]}", labels=LINUX, status="online")
    github.start_job(jobs[0], runner_name=f"ghapp-{jobs[0]}")
    reconcile = ghapp.services.reconciler.reconcile_once
    await reconcile()
    await reconcile()  # the cache now holds every listing a pass makes
    used = {i: github.installation_rate_used(i) for i in (ORG_INSTALLATION, OTHER_ORG_INSTALLATION)}
    calls = len(github.calls)

    quiet = await reconcile()
    assert (quiet.errors, quiet.launched, quiet.orphan_job_deleted) == ([], 0, 0)
    made = github.calls[calls:]
    # runs (queued and in progress) of 3 repositories, the started run's jobs, runners of 2 scopes, deliveries
    assert {(c.method, c.path) for c in made} >= {
        ("GET", "/repos/acme/webapp/actions/runs"),
        ("GET", f"/repos/acme/webapp/actions/runs/{github.job(jobs[0])['run_id']}/jobs"),
        ("GET", "/orgs/acme/actions/runners"),
        ("GET", "/orgs/globex/actions/runners"),
        ("GET", "/app/hook/deliveries"),
    }
    assert [c for c in made if c.status != 304] == []
    assert {i: github.installation_rate_used(i) for i in used} == used


async def test_five_hundred_lost_jobs_in_five_hundred_repositories_all_launch_within_one_pass(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock, tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "big.yaml", max_runners=1000)
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(pools))  # half of 5,000 a window: 1,500 fit
    repositories = [f"acme/r{i:03}" for i in range(500)]
    github.installation(ORG_INSTALLATION).repositories.extend(r.split("/")[1] for r in repositories)
    lost = set()
    for repository in repositories:
        ghapp.services.activity.touch(
            installation_id=ORG_INSTALLATION, repository=repository, now=clock.now()
        )
        lost.add(
            github.queue_job(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)["id"]
        )

    report = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert (report.errors, report.repositories_deferred, report.launched) == ([], 0, 500)
    assert names(ghapp.runner_jobs()) == {f"ghapp-{i}" for i in lost}


async def test_lost_jobs_beyond_a_pass_budget_are_said_to_wait_and_launch_in_the_next_window(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock, tmp_path: Path
) -> None:
    # 0.04 of a 5,000-request window: 200 requests a window; each repository costs 3 (queued runs,
    # in-progress runs, the run's jobs), so 100 repositories (300) do not fit in one window
    pools = write_pools(tmp_path / "big.yaml", max_runners=1000)
    ghapp = await ghapp_with(
        GHAPP_POOLS_FILE=str(pools),
        GHAPP_RECONCILE_RATE_SHARE="0.04",
        GHAPP_REGISTRATION_TIMEOUT_SECONDS="86400",
    )
    repositories = [f"acme/r{i:03}" for i in range(100)]
    github.installation(ORG_INSTALLATION).repositories.extend(r.split("/")[1] for r in repositories)
    lost = set()
    for repository in repositories:  # active lately (jobs planned there), and every webhook of now lost
        ghapp.services.activity.touch(
            installation_id=ORG_INSTALLATION, repository=repository, now=clock.now()
        )
        lost.add(
            github.queue_job(installation_id=ORG_INSTALLATION, repository=repository, labels=LINUX)["id"]
        )

    first = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert first.errors == []
    # the pass launched what its budget let it scan and says how many repositories wait for the next one
    assert first.repositories_deferred > 0
    assert first.launched + first.repositories_deferred == 100
    assert len(ghapp.runner_jobs()) == first.launched

    clock.advance(3601)  # GitHub's window resets: the next pass scans the rest and launches the rest
    second = await ghapp.services.reconciler.reconcile_once()
    await ghapp.settle()
    assert (second.errors, second.repositories_deferred, second.launched) == ([], 0, 100 - first.launched)
    assert names(ghapp.runner_jobs()) == {f"ghapp-{i}" for i in lost}
