"""Each job's timeline, the per-pool histograms and runner seconds, checked against a scripted timeline:
signed webhooks from the fake GitHub, Job status changes as the job controller would make them."""

from __future__ import annotations

from ghapp.clock import ManualClock
from ghapp.inventory import RunnerJob
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob
from ghapp.timeline import Timeline
from ghapp.usage import DAY, WEEK, Usage

from .conftest import NAMESPACE, ORG_INSTALLATION, USER_INSTALLATION, Ghapp, new_github, wait_for
from .fakes.payloads import iso

LINUX = ["self-hosted", "linux", "x64"]


def runner_status(**status: object) -> dict[str, object]:
    return {"active": 1, **status}


async def run_a_job(ghapp: Ghapp, clock: ManualClock, *, installation_id: int, repository: str) -> int:
    """queued at T; webhook at T+3 (runner Job made); pod running at T+13; taken at T+15; completed at
    T+75; runner pod ends at T+80. Returns the workflow job id."""
    github, kube = ghapp.github, ghapp.kube
    job = github.queue_job(installation_id=installation_id, repository=repository, labels=LINUX)
    job_id = int(job["id"])
    name = f"ghapp-{job_id}"
    clock.advance(3)
    await github.deliver("workflow_job", github.workflow_job_payload(job_id, "queued"))
    await ghapp.settle()
    timeline = ghapp.services.timeline
    start = clock.now() - 3
    await wait_for(lambda: name in ghapp.services.inventory.jobs, what="runner Job in the inventory")

    clock.advance(10)
    kube.set_job_status(NAMESPACE, name, runner_status(ready=1, startTime=iso(start + 4)))
    await wait_for(lambda: timeline.get(job_id).pod_running_at is not None, what="pod running")  # type: ignore[union-attr]

    clock.advance(2)
    scope = "org:acme" if installation_id == ORG_INSTALLATION else f"repo:{repository}"
    github.register_runner(scope=scope, name=name, labels=LINUX)
    github.start_job(job_id, runner_name=name)
    in_progress = github.workflow_job_payload(job_id, "in_progress")
    await github.deliver("workflow_job", in_progress)
    clock.advance(60)
    github.complete_job(job_id, conclusion="success")
    completed = github.workflow_job_payload(job_id, "completed")
    await github.deliver("workflow_job", completed)
    # redelivered webhooks change nothing
    await github.deliver("workflow_job", in_progress)
    await github.deliver("workflow_job", completed)
    await ghapp.settle()

    clock.advance(7)  # the Job controller notices a little later; the pod ended at T+80
    done = {
        "active": 0,
        "succeeded": 1,
        "startTime": iso(start + 4),
        "completionTime": iso(start + 80),
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": iso(start + 80)}],
    }
    kube.set_job_status(NAMESPACE, name, done)
    await wait_for(lambda: ghapp.services.inventory.jobs[name].finished, what="Job finished")
    return job_id


async def test_a_jobs_timeline_and_histograms_exact_to_the_second(ghapp: Ghapp, clock: ManualClock) -> None:
    clock.current = float(int(clock.current))
    start = clock.now()
    job_id = await run_a_job(ghapp, clock, installation_id=ORG_INSTALLATION, repository="acme/webapp")

    entry = ghapp.services.timeline.get(job_id)
    assert entry is not None
    assert entry.queued_at == start
    assert entry.received_at == start + 3
    assert (entry.runner_job, entry.runner_job_created_at) == (f"ghapp-{job_id}", start + 3)
    assert entry.pod_running_at == start + 13
    assert (entry.started_at, entry.runner_name) == (start + 15, f"ghapp-{job_id}")
    assert (entry.completed_at, entry.conclusion) == (start + 75, "success")
    assert (entry.pool, entry.repository, entry.account) == ("linux", "acme/webapp", "acme")

    for histogram, seconds in (
        ("ghapp_job_queued_to_runner_job_seconds", 3),
        ("ghapp_job_runner_job_to_pod_running_seconds", 10),
        ("ghapp_job_queued_to_started_seconds", 15),
        ("ghapp_job_duration_seconds", 60),
    ):
        assert ghapp.metric(f"{histogram}_count", pool="linux") == 1, histogram  # once, despite redelivery
        assert ghapp.metric(f"{histogram}_sum", pool="linux") == seconds, histogram
    # the runner ran from pod running (T+13) to the Job's completionTime (T+80)
    assert ghapp.metric("ghapp_runner_seconds_total", pool="linux", account="acme") == 67
    assert ghapp.metric("ghapp_runner_repository_seconds_total", pool="linux", repository="acme/webapp") == 0

    usage = ghapp.services.usage.window(DAY, now=clock.now())
    assert [(r.account, r.pool, r.seconds) for r in usage.rows] == [("acme", "linux", 67)]
    assert not usage.complete  # this process has not been up for a day
    assert usage.covered == clock.now() - ghapp.services.usage.since  # since this process started


async def test_pod_scheduled_and_running_from_the_pod_watch(ghapp: Ghapp, clock: ManualClock) -> None:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    entry = ghapp.services.timeline.get(job_id)
    assert entry is not None
    assert entry.runner_job_created_at is not None
    clock.advance(4)
    ghapp.kube.run_pod(NAMESPACE, f"ghapp-{job_id}")  # the kubelet: scheduled, image pulled, running
    await wait_for(lambda: entry.pod_running_at is not None, what="the pod watch")
    assert entry.pod_scheduled_at == clock.now()  # the emulator's PodScheduled has no time: when seen
    assert entry.pod_running_at == clock.now()
    assert ghapp.metric("ghapp_job_runner_job_to_pod_running_seconds_sum", pool="linux") == 4
    assert ghapp.metric("ghapp_job_runner_job_to_pod_running_seconds_count", pool="linux") == 1


async def test_runner_seconds_per_repository_only_when_asked(ghapp_with, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    ghapp = await ghapp_with(GHAPP_USAGE_BY_REPOSITORY="true")
    clock.current = float(int(clock.current))
    await run_a_job(ghapp, clock, installation_id=USER_INSTALLATION, repository="alice/tools")
    assert ghapp.metric("ghapp_runner_seconds_total", pool="linux", account="alice") == 67
    assert ghapp.metric("ghapp_runner_repository_seconds_total", pool="linux", repository="alice/tools") == 67


async def test_a_job_taken_by_another_jobs_runner_counts_for_that_runners_pool(
    ghapp: Ghapp, clock: ManualClock
) -> None:
    github = ghapp.github
    first = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    clock.advance(5)
    second = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    await ghapp.settle()
    github.register_runner(scope="org:acme", name=f"ghapp-{first}", labels=LINUX)
    github.start_job(second, runner_name=f"ghapp-{first}")  # not bound: the first job's runner takes it
    await github.deliver("workflow_job", github.workflow_job_payload(second, "in_progress"))
    await ghapp.settle()
    assert ghapp.metric("ghapp_job_queued_to_started_seconds_count", pool="linux") == 1
    assert ghapp.services.timeline.took(f"ghapp-{first}").id == second  # type: ignore[union-attr]


async def test_jobs_on_runners_that_are_not_ghapps_are_not_in_the_histograms(ghapp: Ghapp) -> None:
    github = ghapp.github
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["windows"])
    github.register_runner(scope="org:acme", name="someone-elses", labels=["windows"])
    github.start_job(job_id, runner_name="someone-elses")
    await github.deliver("workflow_job", github.workflow_job_payload(job_id, "in_progress"))
    await ghapp.settle()
    entry = ghapp.services.timeline.get(job_id)
    assert entry is not None
    assert entry.skipped is not None  # not ours
    assert entry.runner_name == "someone-elses"
    assert ghapp.metric("ghapp_job_queued_to_started_seconds_count", pool="linux") == 0


def runner_job(name: str, **fields: object) -> RunnerJob:
    values: dict[str, object] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": name,
        "pool": "linux",
        "installation_id": 1,
        "workflow_job_id": int(name.rsplit("-", 1)[1]),
        "scope": "org:acme",
        "repository": "acme/webapp",
        "created_at": 0.0,
        "finished": False,
        "failed": False,
        "deleting": False,
        **fields,
    }
    return RunnerJob(**values)  # type: ignore[arg-type]


def test_the_timeline_keeps_only_the_most_recent_jobs() -> None:
    timeline = Timeline(capacity=100, metrics=Metrics(), pool_of_runner=lambda name: None)
    fake = new_github(clock=ManualClock())  # only for its payloads: not started
    for _ in range(150):
        job = fake.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
        payload = fake.workflow_job_payload(job["id"], "queued")
        timeline.webhook(WorkflowJob.from_payload(payload), received_at=0.0)
    kept = [entry.id for entry in timeline.recent()]
    assert len(kept) == len(timeline) == 100
    assert kept == sorted(kept)
    assert timeline.get(kept[0] - 1) is None  # the oldest went first


def test_usage_windows_clip_and_say_when_they_are_short() -> None:
    metrics = Metrics()
    usage = Usage(metrics=metrics, since=0.0, by_repository=False)
    a = runner_job("ghapp-1")
    b = runner_job("ghapp-2", repository="alice/tools", scope="repo:alice/tools")
    usage.add(start=1000.0, end=2000.0, job=a)  # 1000 s, ten days ago: outside both windows
    now = 10 * DAY
    usage.add(start=now - 2 * DAY, end=now - 2 * DAY + 600, job=a)  # in the week only
    usage.add(start=now - DAY - 100, end=now - DAY + 200, job=b)  # straddles the day's start: 200 s in it
    # first seen already running (a list after a restart): counted from the Job's start
    usage.runner_job_changed(None, runner_job("ghapp-3", ready=True, started_at=now - 50), now=now - 40)
    day = usage.window(DAY, now=now)
    week = usage.window(WEEK, now=now)
    assert [(r.account, r.seconds) for r in day.rows] == [("alice", 200), ("acme", 50)]
    assert [(r.account, r.seconds) for r in week.rows] == [("acme", 650), ("alice", 300)]
    assert day.complete
    assert week.complete
    assert (
        metrics.registry.get_sample_value("ghapp_runner_seconds_total", {"pool": "linux", "account": "acme"})
        == 1600
    )
    late = Usage(metrics=Metrics(), since=now - 3600, by_repository=False)
    window = late.window(DAY, now=now)
    assert (window.complete, window.covered) == (False, 3600)
