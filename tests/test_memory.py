"""Memory that must not only grow: what ghapp notes about deliveries, deleted Jobs and tokens is bounded."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from ghapp.cache import Expiring, ExpiringCache
from ghapp.clock import ManualClock
from ghapp.recent import RecentMap
from ghapp.reconciler import MAX_REDELIVERIES

from .conftest import NAMESPACE, ORG_INSTALLATION, Ghapp, wait_for
from .fakes.github import FakeGitHub
from .fakes.kube import KubeEmulator

LINUX = ["self-hosted", "linux", "x64"]


def test_a_recent_map_holds_at_most_its_limit_and_forgets_after_its_ttl() -> None:
    clock = ManualClock()
    recent: RecentMap[int, str] = RecentMap(clock=clock, ttl=60, max_entries=3)
    for key in range(5):
        recent.set(key, f"v{key}")
        clock.advance(1)
    assert len(recent) == 3  # the two set longest ago went first
    assert [recent.get(key, "") for key in range(5)] == ["", "", "v2", "v3", "v4"]
    recent.set(2, "again")  # setting again makes an entry the newest
    recent.set(5, "v5")
    assert 3 not in recent
    assert {key for key in range(6) if key in recent} == {2, 4, 5}
    clock.advance(60)  # key 4 was set 62 s ago; 2 and 5, 60 s ago: still within the ttl
    assert 4 not in recent
    assert recent.get(4, "gone") == "gone"
    recent.prune()
    assert len(recent) == 2
    clock.advance(1)
    recent.prune()
    assert len(recent) == 0


async def test_expired_cached_values_are_forgotten_when_anything_is_fetched() -> None:
    clock = ManualClock()

    async def fetch(key: str) -> Expiring[str]:
        return Expiring(f"token-{key}", clock.now() + 3600)

    cache: ExpiringCache[str, str] = ExpiringCache(fetch=fetch, clock=clock, margin=0)
    for repository in ("acme/a", "acme/b", "acme/c"):  # e.g. one registration token per repository scope
        await cache.get(repository)
    assert len(cache) == 3
    clock.advance(3600)  # all three expired; nobody asks for those repositories again
    await cache.get("acme/d")
    assert len(cache) == 1


async def test_redelivery_counts_are_forgotten(
    ghapp_with: Callable[..., Awaitable[Ghapp]], github: FakeGitHub, clock: ManualClock
) -> None:
    ghapp = await ghapp_with(GHAPP_REDELIVERY_LOOKBACK_SECONDS="3600")
    reconciler = ghapp.services.reconciler
    lost = []
    for _ in range(2):
        job = github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        payload = github.workflow_job_payload(job["id"], "queued")
        lost.append((payload, await github.deliver("workflow_job", payload, fail=True)))
    webhook_url, github.webhook_url = github.webhook_url, None  # ghapp is unreachable: redeliveries fail

    redelivered = []
    for _ in range(MAX_REDELIVERIES + 2):
        redelivered.append((await reconciler.reconcile_once()).redelivered)
        await github.drain()
        clock.advance(30)
    assert redelivered == [2] * MAX_REDELIVERIES + [0, 0]  # the cap per GUID still holds
    assert reconciler.remembered_deliveries == 2

    github.webhook_url = webhook_url  # reachable again; the first one is redelivered by hand and arrives
    payload, first = lost[0]
    assert (await github.deliver("workflow_job", payload, guid=first.guid)).ok
    await reconciler.reconcile_once()
    assert reconciler.remembered_deliveries == 1  # a GUID with a successful attempt is done with

    clock.advance(3601)  # the other's failures no longer show up within the lookback
    await reconciler.reconcile_once()
    assert reconciler.remembered_deliveries == 0


async def test_tombstones_end_when_a_relist_shows_the_job_gone(ghapp: Ghapp, kube: KubeEmulator) -> None:
    inventory = ghapp.services.inventory
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"
    await wait_for(lambda: name in inventory.jobs, what="the watch")
    inventory.forget(name, uid="another-job-of-that-name")  # a deletion that did not hit this very Job
    assert (name in inventory.jobs, inventory.tombstones) == (True, 0)
    # The watch ends before the Job is deleted and the next one is told its version expired (as after an
    # etcd compaction), so the DELETED event never arrives: ghapp lists the namespace again instead.
    expired = {"type": "ERROR", "object": {"kind": "Status", "status": "Failure", "code": 410}}
    kube.send_first_on_watches(1, json.dumps(expired).encode() + b"\n", resource="jobs")
    kube.end_watches()
    kube.delete_object("jobs", NAMESPACE, name)
    inventory.forget(name)  # as ghapp does after deleting a Job
    assert inventory.tombstones == 1
    await wait_for(lambda: kube.watch_lines_pending == 0, what="the expired watch")
    await wait_for(lambda: inventory.tombstones == 0, what="the relist")
    assert name not in inventory.jobs
