"""Demand and launch slots: a job keeps its place when another job takes its runner (runners are not bound
to jobs); a rate-limited installation does not stall the others' launches.

Time here is a `HeldClock`: whatever waits on it stays waiting until the test moves the clock, so a test
can look at what happens meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ghapp.clock import HeldClock
from ghapp.demand import Demand, Moved, Replace

from .conftest import NAMESPACE, ORG_INSTALLATION, OTHER_ORG_INSTALLATION, Ghapp, wait_for, write_pools

LINUX = ["self-hosted", "linux", "x64"]


@pytest.fixture
def clock() -> HeldClock:
    return HeldClock(current=time.time())


def job_names(ghapp: Ghapp) -> set[str]:
    return {job["metadata"]["name"] for job in ghapp.runner_jobs()}


async def test_a_rate_limited_installation_does_not_stall_another(
    ghapp_with: Callable[..., Awaitable[Ghapp]], clock: HeldClock
) -> None:
    ghapp = await ghapp_with(GHAPP_LAUNCH_CONCURRENCY="2", GHAPP_MAX_RUNNERS="3")
    ghapp.github.set_rate_limit(installation_id=ORG_INSTALLATION, remaining=0, reset_in=600)
    limited = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(5)
    ]
    other = await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)

    # acme's launches wait for its reset holding neither a launch slot nor capacity: globex's goes at once
    await wait_for(lambda: f"ghapp-{other}" in job_names(ghapp), what="globex's runner Job")
    assert job_names(ghapp) == {f"ghapp-{other}"}
    acme_calls = r"/orgs/acme/actions/runners/registration-token"
    assert [c.status for c in ghapp.github.calls_to("POST", acme_calls)] == [403]  # asked once, then waits
    assert len(clock.sleeps) == 1  # one wait for the installation, shared by its launches
    assert 599 <= clock.sleeps[0] <= 602

    # after the reset acme's jobs go through capacity again: two fit next to globex's, three wait
    clock.advance(601)
    await wait_for(lambda: len(job_names(ghapp)) == 3, what="acme's runners after the reset")
    await ghapp.settle()
    assert job_names(ghapp) <= {f"ghapp-{other}", *(f"ghapp-{job_id}" for job_id in limited)}
    assert [c.status for c in ghapp.github.calls_to("POST", acme_calls)] == [403, 201]
    assert ghapp.metric("ghapp_queue_length", pool="linux") == 3
    assert ghapp.metric("ghapp_runners_launched_total", pool="linux", outcome="deferred") >= 1


# -- runners are not bound to jobs: a job whose runner another job took keeps its place ----------------------


async def run_on(ghapp: Ghapp, job_id: int, runner: str, *, scope: str = "org:acme") -> None:
    """GitHub gives `job_id` to the runner called `runner`, which runs it to the end; webhooks tell ghapp."""
    github = ghapp.github
    if not any(r["name"] == runner for r in github.runners(scope)):
        github.register_runner(scope=scope, name=runner, labels=LINUX)
    github.start_job(job_id, runner_name=runner)
    await github.deliver("workflow_job", github.workflow_job_payload(job_id, "in_progress"))
    github.complete_job(job_id)
    await github.deliver("workflow_job", github.workflow_job_payload(job_id, "completed"))
    await ghapp.settle()


async def runner_ends(ghapp: Ghapp, name: str) -> None:
    """The ephemeral runner exited after its job: its Job completes and ghapp sees capacity free."""
    ghapp.kube.finish_job(NAMESPACE, name)
    await wait_for(lambda: not ghapp.services.inventory.jobs[name].active, what=f"{name} seen finished")


async def test_a_waiting_job_keeps_its_place_when_another_job_takes_its_runner(
    ghapp_with: Callable[..., Awaitable[Ghapp]], tmp_path: Path
) -> None:
    ghapp = await ghapp_with(GHAPP_POOLS_FILE=str(write_pools(tmp_path / "pools.yaml", max_runners=1)))
    first = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    second = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    assert job_names(ghapp) == {f"ghapp-{first}"}
    assert ghapp.metric("ghapp_queue_length", pool="linux") == 1

    # GitHub gives the second job to the runner started for the first: the first is the one that waits now
    await run_on(ghapp, second, f"ghapp-{first}")
    assert ghapp.metric("ghapp_queue_length", pool="linux") == 1
    await runner_ends(ghapp, f"ghapp-{first}")
    await wait_for(lambda: len(job_names(ghapp)) == 2, what="a runner for the first job as capacity frees")
    (stand_in,) = job_names(ghapp) - {f"ghapp-{first}"}
    await ghapp.settle()

    await run_on(ghapp, first, stand_in)
    await runner_ends(ghapp, stand_in)
    await ghapp.settle()
    assert len(job_names(ghapp)) == 2  # nothing more: both jobs ran
    assert ghapp.metric("ghapp_queue_length", pool="linux") == 0
    assert all(ghapp.github.job(job_id)["status"] == "completed" for job_id in (first, second))


async def test_a_job_whose_runner_an_unknown_job_took_gets_one_at_once(ghapp: Ghapp) -> None:
    first = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    # a job whose queued webhook was lost takes the runner started for the first job
    lost = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.github.deliver(
        "workflow_job", ghapp.github.workflow_job_payload(lost["id"], "queued"), fail=True
    )
    await run_on(ghapp, lost["id"], f"ghapp-{first}")
    assert len(job_names(ghapp)) == 2  # the first job got a new runner at once (and only one)
    (stand_in,) = job_names(ghapp) - {f"ghapp-{first}"}
    await run_on(ghapp, first, stand_in)
    assert len(job_names(ghapp)) == 2


async def test_jobs_that_swap_runners_need_no_new_ones(ghapp: Ghapp) -> None:
    first, second = [
        await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        for _ in range(2)
    ]
    await ghapp.settle()
    await run_on(ghapp, second, f"ghapp-{first}")
    await run_on(ghapp, first, f"ghapp-{second}")
    assert job_names(ghapp) == {f"ghapp-{first}", f"ghapp-{second}"}
    assert ghapp.metric("ghapp_queue_length", pool="linux") == 0


# -- the pure bookkeeping of `ghapp.demand` ------------------------------------------------------------------

LINUX_ACME = ("linux", "org:acme")
GPU_ACME = ("gpu", "org:acme")


def test_demand_moves_what_stood_for_a_job_to_the_job_whose_runner_it_took() -> None:
    places = {1: LINUX_ACME, 2: LINUX_ACME}  # 1 launched, 2 waiting
    demand = Demand()
    assert demand.ran(job_id=2, runner=1, runner_place=LINUX_ACME, where=places.get) == Moved(
        token=2, serves=1
    )
    assert demand.serves(2) == 1
    assert demand.token_for(1, where=places.get) == 2
    assert demand.token_for(2, where=places.get) is None  # 2 ran: nothing stands for it
    # told again (the completed webhook after in_progress): nothing changes
    assert demand.ran(job_id=2, runner=1, runner_place=LINUX_ACME, where=places.get) is None
    assert demand.serves(2) == 1
    # job 1 then runs on runner 2: served, nothing left standing for anyone
    assert demand.ran(job_id=1, runner=2, runner_place=LINUX_ACME, where=places.get) is None
    assert demand.token_for(1, where=places.get) is None


def test_demand_asks_for_a_replacement_when_nothing_stood_for_the_job() -> None:
    places = {1: LINUX_ACME}
    demand = Demand()
    assert demand.ran(job_id=9, runner=1, runner_place=LINUX_ACME, where=places.get) == Replace(
        serves=1, place=LINUX_ACME, freed=None
    )
    # a token in another pool cannot stand in: it is freed, and a replacement is asked for
    places = {1: GPU_ACME, 3: LINUX_ACME}
    assert Demand().ran(job_id=3, runner=1, runner_place=GPU_ACME, where=places.get) == Replace(
        serves=1, place=GPU_ACME, freed=3
    )


def test_demand_forgets_a_job_that_needs_no_runner_and_stays_bounded() -> None:
    places = {1: LINUX_ACME, 2: LINUX_ACME}
    demand = Demand(max_entries=3)
    demand.ran(job_id=2, runner=1, runner_place=LINUX_ACME, where=places.get)
    assert demand.done(1, where=places.get) == 2  # job 1 was cancelled: the entry 2 stood for it
    assert demand.serves(2) == 2
    assert demand.done(1, where=places.get) is None  # told again: nothing more is freed
    assert demand.done(2, where=places.get) is None  # job 2 ran: its entry (now free) stands for no one
    for job_id in range(100, 200):
        demand.link(job_id, job_id + 1000)
        demand.ran(job_id=job_id, runner=job_id, runner_place=None, where=places.get)
    assert len(demand._serves) <= 3
    assert len(demand._used) <= 3
    assert len(demand._served_by) <= 3


async def test_a_job_that_ends_while_its_launch_waits_out_a_rate_limit_gets_no_runner(
    ghapp: Ghapp, clock: HeldClock
) -> None:
    ghapp.github.set_rate_limit(installation_id=ORG_INSTALLATION, remaining=0, reset_in=600)
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await wait_for(lambda: len(clock.sleeps) == 1, what="the launch waiting out the rate limit")
    ghapp.github.cancel_job(job_id)
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "completed"))
    clock.advance(601)
    await ghapp.settle()
    assert job_names(ghapp) == set()
    assert ghapp.services.launcher.busy == 0


async def test_a_job_that_ran_elsewhere_leaves_its_runner_surplus_once(ghapp: Ghapp) -> None:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    await run_on(ghapp, job_id, "other-runner-1")  # a runner that is not ghapp's: in_progress, completed
    assert ghapp.metric("ghapp_surplus_runners_total", pool="linux") == 1

    # a job whose queued webhook came only after it ran elsewhere (a redelivery) gets no runner
    late = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    queued = ghapp.github.workflow_job_payload(late["id"], "queued")
    await run_on(ghapp, late["id"], "other-runner-2")
    await ghapp.github.deliver("workflow_job", queued)
    await ghapp.settle()
    assert job_names(ghapp) == {f"ghapp-{job_id}"}
