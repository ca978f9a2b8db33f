"""Demand and launch slots: a rate-limited installation does not stall the others' launches.

Time here is a `HeldClock`: whatever waits on it stays waiting until the test moves the clock, so a test
can look at what happens meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from ghapp.clock import HeldClock

from .conftest import ORG_INSTALLATION, OTHER_ORG_INSTALLATION, Ghapp, wait_for

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
