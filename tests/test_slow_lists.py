"""A list that never answers (an API server struggling with thousands of runner Jobs, Pods and Secrets)
holds nothing else: the leader keeps renewing its Lease and no other replica takes over, webhooks still
launch runners, both replicas stay ready, and a reconcile pass stuck in a list is cut off at its deadline
(GHAPP_RECONCILE_TIMEOUT_SECONDS) and the next pass runs as planned. However many runner namespaces there
are, their watches and lists take no connection a renewal or a launch waits for; nor do launches the API
server keeps waiting take every connection a renewal could use (the pool of gets and writes is larger than
the launch concurrency).

Time is a `HeldClock`: whatever waits on it (a renewal, the pause between passes, a pass's deadline) waits
until the test moves it, so the test sees each renewal land before it moves time on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from ghapp.clock import HeldClock, parse_timestamp
from ghapp.config import Settings, load_settings
from ghapp.kubehttp import CONNECTIONS

from .conftest import (
    NAMESPACE,
    ORG_INSTALLATION,
    USER_INSTALLATION,
    Ghapp,
    start_ghapp,
    wait_for,
    write_pools,
)
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator, RecordedRequest

LINUX = ["self-hosted", "linux", "x64"]
LEASE = 15.0
"""Lease duration: the leader renews every 5 s; another replica may take over after 15 s unrenewed."""
INTERVAL = 60.0
DEADLINE = 120.0


@pytest.fixture
def clock() -> HeldClock:
    return HeldClock(current=time.time())


async def replica(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, clock: HeldClock, identity: str
) -> Ghapp:
    changes = {
        "identity": identity,
        "lease_duration_seconds": LEASE,
        "reconcile_interval_seconds": INTERVAL,
        "reconcile_timeout_seconds": DEADLINE,
    }
    return await start_ghapp(settings.model_copy(update=changes), github, kube, reconcile=True, clock=clock)


def hanging_lists(kube: KubeEmulator, resource: str) -> list[RecordedRequest]:
    """Lists of `resource` the emulator has not answered (yet)."""
    return [r for r in kube.requests if r.verb == "list" and r.resource == resource and r.status == 0]


async def ready(ghapp: Ghapp) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(ghapp.server.make_url("/readyz")) as response,
    ):
        return response.status


class Renewals:
    """Moves the clock on one renewal interval at a time, and only once every replica's elector sleeps again
    (one still busy with its last campaign when time moves would sleep a whole interval too long, and then
    miss its renew deadline); each step waits for replica-a's renewal to land."""

    def __init__(self, clock: HeldClock, kube: KubeEmulator, *, lease: str, electors: int) -> None:
        self._clock = clock
        self._kube = kube
        self._lease = lease
        self._electors = electors
        self._slept = electors  # each elector's first campaign ends in its first sleep

    def renewed_now(self) -> bool:
        """The Lease is replica-a's, renewed at the clock's present time."""
        spec = (self._kube.get("leases", NAMESPACE, self._lease) or {}).get("spec") or {}
        renewed = parse_timestamp(str(spec.get("renewTime")))
        return spec.get("holderIdentity") == "replica-a" and abs(renewed - self._clock.now()) < 0.001

    async def next(self, what: str) -> None:
        await wait_for(
            lambda: self._clock.sleeps.count(LEASE / 3) >= self._slept, what="every elector asleep"
        )
        self._clock.advance(LEASE / 3)
        self._slept += self._electors
        await wait_for(self.renewed_now, what=what)


async def test_lists_that_never_answer_hold_neither_the_lease_nor_launches_and_a_stuck_pass_is_cut_off(
    settings: Settings, github: FakeGitHub, kube: KubeEmulator, clock: HeldClock
) -> None:
    a = await replica(settings, github, kube, clock, "replica-a")
    b = await replica(settings, github, kube, clock, "replica-b")

    renewals = Renewals(clock, kube, lease=settings.lease_name, electors=2)

    def passes(outcome: str) -> float:
        return a.metric("ghapp_reconcile_passes_total", outcome=outcome)

    try:
        await wait_for(lambda: passes("ok") == 1, what="a leads, and its first pass")
        await wait_for(lambda: b.services.elector.holder == "replica-a", what="b sees a's lease")

        # from now on the API server answers no list (no answer, no error); every cache lists again
        kube.stall(verb="list")
        kube.fail_next(100, status=410, verb="watch")  # each watch's version has expired: list again
        kube.end_watches()
        for resource in ("jobs", "pods", "events"):  # both replicas' caches of each
            await wait_for(
                lambda resource=resource: len(hanging_lists(kube, resource)) == 2,
                what=f"both replicas' lists of {resource} hanging",
            )
        kube.clear_faults()

        # webhooks still launch runners, on either replica, and both stay ready
        github.webhook_url = a.webhook_url
        on_a = await a.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        github.webhook_url = b.webhook_url
        on_b = await b.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
        await a.settle()
        await b.settle()
        launched = {f"ghapp-{on_a}", f"ghapp-{on_b}"}
        assert {job["metadata"]["name"] for job in a.runner_jobs()} == launched
        assert {secret["metadata"]["name"] for secret in a.runner_secrets()} == launched
        assert (await ready(a), await ready(b)) == (200, 200)

        # time passes a renewal at a time: each lands, and b never takes over
        async def renewals_until(done: Callable[[], bool], *, before: float, what: str) -> None:
            while not done():
                assert clock.now() < before, f"no {what} by then"
                await renewals.next("a's renewal")
                assert (a.services.elector.is_leader, b.services.elector.is_leader) == (True, False)

        # a's next pass hangs in its list of Secrets ...
        first_pass_at = a.services.reconciler.last_pass_at
        assert first_pass_at is not None
        await renewals_until(
            lambda: len(hanging_lists(kube, "secrets")) == 1,
            before=first_pass_at + INTERVAL + LEASE,
            what="second pass",
        )
        # ... is cut off at its deadline, not before ...
        stuck_at = clock.now()
        await renewals_until(
            lambda: passes("timeout") == 1, before=stuck_at + DEADLINE + LEASE, what="cut-off"
        )
        assert clock.now() >= first_pass_at + INTERVAL + DEADLINE
        assert a.services.reconciler.last_report is not None
        assert a.services.reconciler.last_report.errors == [f"pass cut off after {DEADLINE:g} s"]
        # ... and the pass after it runs as planned (and hangs the same way)
        cut_at = clock.now()
        await renewals_until(
            lambda: len(hanging_lists(kube, "secrets")) == 2,
            before=cut_at + INTERVAL + LEASE,
            what="third pass",
        )
        assert (passes("ok"), passes("timeout")) == (1, 1)
        assert (a.metric("ghapp_leader"), b.metric("ghapp_leader")) == (1, 0)

        # once lists answer again, the pass that waited on one ends, and the caches know both new Jobs
        kube.unstall()
        await wait_for(lambda: passes("ok") == 2, what="the pass that waited on its list")
        for replica_ in (a, b):
            await wait_for(
                lambda replica_=replica_: set(replica_.services.inventory.jobs) == launched,
                what="the relisted cache of runner Jobs",
            )
    finally:
        kube.unstall()
        await a.stop()
        await b.stop()


@pytest.fixture
def many_namespaces(environ: dict[str, str], pools_file: Path) -> tuple[Settings, list[str]]:
    """Settings with enough runner namespaces that their watches (Jobs, Pods, Events: one stream each), and
    then their lists, outnumber the connections of the pool that short requests (renewals, launches) use."""
    namespaces = [f"runners-{n}" for n in range(CONNECTIONS // 3 + 1)]
    pools = [{"name": "linux", "labels": LINUX}] + [
        {"name": name, "labels": ["self-hosted", name], "namespace": name} for name in namespaces
    ]
    pools_file.write_text(yaml.safe_dump({"pools": pools}))
    return load_settings(environ), namespaces


async def test_streams_and_hanging_lists_of_many_namespaces_leave_connections_for_the_lease_and_launches(
    many_namespaces: tuple[Settings, list[str]], github: FakeGitHub, kube: KubeEmulator, clock: HeldClock
) -> None:
    settings, namespaces = many_namespaces
    a = await replica(settings, github, kube, clock, "replica-a")

    renewals = Renewals(clock, kube, lease=settings.lease_name, electors=1)

    try:
        await wait_for(lambda: a.services.reconciler.last_pass_at is not None, what="a leads, and passes")
        watches = 3 * (len(namespaces) + 1)
        await wait_for(lambda: kube.watching == watches, what="every namespace watched")
        await wait_for(renewals.renewed_now, what="a's first renewal")  # before all the streams started

        # streams alone: a webhook launches a runner and the lease is renewed
        first = await a.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await wait_for(lambda: len(a.runner_jobs()) == 1, what="a runner launched beside the streams")
        await renewals.next("a renewal beside the streams")

        # every cache lists again, and no list answers: the same
        kube.stall(verb="list")
        kube.fail_next(watches, status=410, verb="watch")
        kube.end_watches()
        await wait_for(lambda: kube.stalled >= watches, what="every cache's list hanging")
        second = await a.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await wait_for(lambda: len(a.runner_jobs()) == 2, what="a runner launched beside the lists")
        assert {job["metadata"]["name"] for job in a.runner_jobs()} == {f"ghapp-{first}", f"ghapp-{second}"}
        for _ in range(3):
            await renewals.next("a renewal beside the hanging lists")
        assert a.services.elector.is_leader
    finally:
        kube.unstall()
        await a.stop()


@pytest.fixture
def busy(environ: dict[str, str], pools_file: Path) -> Settings:
    """More launches at once than the pool of short requests has by default (`CONNECTIONS`)."""
    write_pools(pools_file, max_runners=2 * CONNECTIONS)
    return load_settings({**environ, "GHAPP_LAUNCH_CONCURRENCY": str(CONNECTIONS + 1)})


async def test_launches_that_hang_on_the_api_server_leave_the_lease_a_connection(
    busy: Settings, github: FakeGitHub, kube: KubeEmulator, clock: HeldClock
) -> None:
    # an admission webhook that takes its time over runner Jobs: every launch waits for the API server
    settings = busy
    a = await replica(settings, github, kube, clock, "replica-a")

    renewals = Renewals(clock, kube, lease=settings.lease_name, electors=1)

    try:
        await wait_for(lambda: a.services.reconciler.last_pass_at is not None, what="a leads, and passes")
        kube.stall(verb="create", resource="jobs")
        for _ in range(CONNECTIONS + 1):
            await a.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        await wait_for(lambda: kube.stalled >= CONNECTIONS, what="the pool's every connection waiting")
        for _ in range(3):
            await renewals.next("a renewal beside the launches")
        assert a.services.elector.is_leader
    finally:
        kube.unstall()
        await a.stop()
