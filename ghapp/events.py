"""gidgethub Routers: turn webhook events into calls on the launcher (one router per event family)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gidgethub import routing, sansio

from ghapp import logs, planner
from ghapp.activity import Activity
from ghapp.admission import Admission
from ghapp.errors import GhappError, InvalidPayload
from ghapp.installations import DELETED, SUSPENDED, Installations
from ghapp.launcher import Launcher
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob
from ghapp.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What every handler receives besides the event."""

    launcher: Launcher
    admission: Admission
    metrics: Metrics
    activity: Activity
    installations: Installations
    timeline: Timeline
    received_at: float


workflow_jobs = routing.Router()
installations = routing.Router()

RETIRING = {"deleted": DELETED, "suspend": SUSPENDED}
"""``installation`` actions that take an installation out of service, and why."""
RESTORING = frozenset({"unsuspend", "created", "new_permissions_accepted"})
"""``installation`` actions that show it is in service."""


def _parse(event: sansio.Event, ctx: Context) -> WorkflowJob | None:
    try:
        job = WorkflowJob.from_payload(event.data)
    except InvalidPayload as exc:
        log.warning("workflow_job payload unusable: %s", exc)
        ctx.metrics.jobs_skipped.labels("invalid-payload").inc()
        return None
    ctx.metrics.workflow_jobs.labels(job.action).inc()
    logs.bind(
        installation_id=job.installation_id, repository=job.repository.full_name, workflow_job_id=job.id
    )
    ctx.timeline.webhook(job, received_at=ctx.received_at)
    return job


@workflow_jobs.register("workflow_job", action="queued")
async def on_queued(event: sansio.Event, ctx: Context) -> None:
    job = _parse(event, ctx)
    if job is None:
        return
    match await ctx.admission.plan(job):
        case planner.Skip() as skip if skip.refused:
            ctx.timeline.skipped(job.id, reason=skip.reason, rule=skip.rule)
            ctx.admission.refused(job, skip, at=ctx.received_at)
        case planner.Skip(reason):
            ctx.timeline.skipped(job.id, reason=reason)
            ctx.metrics.jobs_skipped.labels("no-matching-pool").inc()
            log.info("not ours: %s", reason, extra={"labels": list(job.labels)})
        case planner.RunnerPlan() as plan:
            # only jobs ghapp starts runners for make their repository one the reconciler scans
            ctx.activity.touch(
                installation_id=job.installation_id, repository=job.repository.full_name, now=ctx.received_at
            )
            ctx.timeline.planned(job.id, pool=plan.pool.name)
            ctx.launcher.submit(plan, received_at=ctx.received_at)


@workflow_jobs.register("workflow_job", action="in_progress")
async def on_in_progress(event: sansio.Event, ctx: Context) -> None:
    job = _parse(event, ctx)
    if job is not None:
        log.info("runner took the job", extra={"runner_name": job.runner_name, "runner_id": job.runner_id})
        await _ran(job, ctx)


@workflow_jobs.register("workflow_job", action="completed")
async def on_completed(event: sansio.Event, ctx: Context) -> None:
    job = _parse(event, ctx)
    if job is None:
        return
    log.info(
        "job completed",
        extra={"conclusion": job.conclusion, "runner_name": job.runner_name, "runner_id": job.runner_id},
    )
    if job.runner_name:
        await _ran(job, ctx)  # again: the in_progress webhook may have been lost
    else:
        ctx.launcher.cancel(job.id)  # cancelled (or failed) before any runner took it


async def _ran(job: WorkflowJob, ctx: Context) -> None:
    """A runner took `job`: if it was started for another job, that job must not lose its place."""
    replace = ctx.launcher.ran(job)
    if replace is None:
        return
    pool = ctx.launcher.settings.pool(replace.place[0]) if replace.place is not None else None
    match await ctx.admission.plan(job, pool=pool):
        case planner.RunnerPlan() as plan if replace.place is None or plan.scope.key == replace.place[1]:
            ctx.launcher.submit(plan, received_at=ctx.received_at, serves=replace.serves)
        case _:
            log.warning("job %s lost its runner; the reconciler will find it", replace.serves)


@workflow_jobs.register("workflow_job", action="waiting")
async def on_waiting(event: sansio.Event, ctx: Context) -> None:
    if _parse(event, ctx) is not None:
        log.info("job waits for an environment's protection rules")


@installations.register("installation")
@installations.register("installation_repositories")
async def on_installation(event: sansio.Event, ctx: Context) -> None:
    installation = event.data.get("installation") or {}
    account = (installation.get("account") or {}).get("login")
    extra = {
        "event": event.event,
        "action": event.data.get("action"),
        "installation_id": installation.get("id"),
        "account": account,
    }
    log.info("installation event", extra=extra)
    installation_id = installation.get("id")
    if event.event == "installation" and isinstance(installation_id, int):
        action = event.data.get("action")
        if action in RETIRING:
            try:
                await ctx.installations.retire(installation_id, reason=RETIRING[action])
            except GhappError as exc:  # the reconciler finishes the removal
                log.error("removing the installation's runners failed: %s", exc, extra=extra)
            return
        if action in RESTORING:
            ctx.installations.restore(installation_id)
    if isinstance(account, str) and not await ctx.admission.account_allowed(account):
        log.warning(
            "installation on account %s, which may not get runners (GHAPP_ALLOWED_ACCOUNTS)",
            account,
            extra=extra,
        )


router = routing.Router(workflow_jobs, installations)
"""Every route ghapp handles."""
