"""Launching runners: which job gets a runner when, within capacity, and what a rate limit does to a launch.

The objects themselves (credential → Job → Secret owned by the Job, idempotent end to end) are made by
`ghapp.runnermaker`.

A launch that meets a GitHub rate limit lets go of its launch slot and its capacity reservation, waits out
the limit (one wait per installation, shared by its launches: `ghapp.cooldowns`), then goes through
capacity again: an installation at its limit never holds up another installation's launches.

Runners are not bound to jobs: when a job runs on the runner started for another, `ran` keeps the demand
right (see `ghapp.demand`): the entry or runner that stood for the job that ran stands for the other job
from then on, so a job that still waits keeps its place in the queue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ghapp import logs, planner
from ghapp.clock import Clock
from ghapp.config import Settings
from ghapp.cooldowns import Cooldowns
from ghapp.demand import Demand, Moved, Place, Replace
from ghapp.errors import GhappError, RateLimited, RunnerGroupNotFound
from ghapp.github import GitHubClient, no_rate_limit_waits
from ghapp.health import Health
from ghapp.inventory import Inventory
from ghapp.kube import KubeClient
from ghapp.limiter import Limiter
from ghapp.metrics import Metrics
from ghapp.models import WorkflowJob
from ghapp.planner import RunnerPlan
from ghapp.runnermaker import Outcome, RunnerMaker
from ghapp.sightings import Sightings
from ghapp.tasks import TaskSet
from ghapp.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaunchResult:
    """What launching one runner came to."""

    outcome: Outcome
    job_name: str


class Launcher:
    """Starts one ephemeral runner per plan, within capacity; duplicates are absorbed at every layer.

    Layers of dedupe: a workflow job already launching or waiting here is ignored; the Job name is
    deterministic, so a second replica or a later delivery meets 409 AlreadyExists, which counts as done.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        github: GitHubClient,
        kube: KubeClient,
        inventory: Inventory,
        limiter: Limiter,
        metrics: Metrics,
        clock: Clock,
        tasks: TaskSet,
        sightings: Sightings,
        health: Health | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or Health([pool.name for pool in settings.pools])
        self._timeline = timeline
        self.pool_errors: dict[str, tuple[float, str]] = {}
        """Pool → (when, what) of its last failed launch, until a launch of that pool succeeds."""
        self._github = github
        self._inventory = inventory
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self._tasks = tasks
        self._inflight: dict[int, asyncio.Task[LaunchResult]] = {}
        self._waiting: dict[int, float] = {}  # workflow job id → when its webhook arrived
        self._plans: dict[int, RunnerPlan] = {}  # plans waiting or launching, by workflow job id
        self._demand = Demand()
        self._launching: set[str] = set()  # runner names being created
        self._unknown_groups: set[tuple[str, str]] = set()
        self._slots = asyncio.Semaphore(settings.launch_concurrency)
        self._cooldowns = Cooldowns(clock=clock, tasks=tasks)
        self._maker = RunnerMaker(
            settings=settings,
            github=github,
            kube=kube,
            inventory=inventory,
            limiter=limiter,
            clock=clock,
            sightings=sightings,
        )
        inventory.subscribe(self.pump)

    def submit(self, plan: RunnerPlan, *, received_at: float, serves: int | None = None) -> None:
        """Launch `plan` now if its pool has room, else queue it; a job launching or waiting is ignored, and
        so is a job another entry or runner stands for. With `serves`, the runner stands for that job (whose
        runner another job took) from the start."""
        job_id = plan.workflow_job_id
        if job_id in self._inflight or job_id in self._waiting:
            return
        if job_id in self.health.given_up:
            why = self.health.given_up[job_id]
            log.info("no runner: ghapp gave up on this job: %s", why, extra={"job": plan.name})
            return
        if serves is None:
            if self._demand.settled(job_id):
                return  # it ran already (a late or redelivered webhook)
            if self._demand.token_for(job_id, where=self._where) not in (None, job_id):
                return
        elif plan.name in self._inventory.jobs:
            log.warning(
                "job %s lost its runner and the name %s is taken; the reconciler will find the job",
                serves,
                plan.name,
            )
            return
        else:
            self._demand.link(job_id, serves)
        self._plans[job_id] = plan
        if self._limiter.has_room(plan.pool.name):
            self._limiter.reserve(plan)
            self._start(plan, received_at)
            return
        self._waiting[job_id] = received_at
        self._limiter.enqueue(plan)
        self._metrics.queue_length.labels(plan.pool.name).set(self._limiter.waiting(plan.pool.name))
        log.info("pool at capacity; job waits", extra={"pool": plan.pool.name, "job": plan.name})

    def start_warm(self, plan: RunnerPlan) -> bool:
        """Start a warm runner (`plan.warm`) if its pool and ghapp have room and no queued job waits for
        that room (queued jobs win over refilling a warm buffer); False if it may not start now."""
        if plan.name in self._launching:
            return True
        global_wait = self.settings.max_runners is not None and any(
            self._limiter.waiting(pool.name) for pool in self.settings.pools
        )
        if global_wait or self._limiter.waiting(plan.pool.name) or not self._limiter.has_room(plan.pool.name):
            return False
        self._limiter.reserve(plan)
        task = self._tasks.spawn(self.launch(plan, received_at=self._clock.now()), name=f"launch-{plan.name}")
        self._launching.add(plan.name)

        def done(_: asyncio.Task[LaunchResult]) -> None:
            self._launching.discard(plan.name)
            self._limiter.release(plan)
            self.pump()

        task.add_done_callback(done)
        return True

    def cancel(self, workflow_job_id: int) -> None:
        """A job no longer needs a runner (it completed without one, or ran on a runner not ghapp's): the
        entry that stood for it leaves the queue; a runner that stood for it is surplus."""
        token = self._demand.done(workflow_job_id, where=self._where)
        if token is None or self._drop_waiting(token):
            return
        runner_job = self._inventory.jobs.get(self._name(token))
        if runner_job is not None and runner_job.active:
            # the reconciler removes it once it has been idle for the grace period (unless a job takes it)
            self._metrics.surplus_runners.labels(runner_job.pool).inc()
            log.info(
                "job needs no runner any more; its runner is surplus",
                extra={"pool": runner_job.pool, "job": runner_job.name},
            )

    def ran(self, job: WorkflowJob) -> Replace | None:
        """`job` was taken by the runner `job.runner_name` (``in_progress`` / ``completed``; idempotent).

        On the runner started for another job, that job still waits: what stood for `job` stands for it now.
        Returned: the job's runner needs replacing by a runner planned for `job` in the place given (the
        caller plans it and calls `submit` with `serves`).
        """
        runner = planner.job_id_of(job.runner_name or "", prefix=self.settings.runner_prefix)
        if runner is None:
            self.cancel(job.id)  # a runner that is not ghapp's
            return None
        outcome = self._demand.ran(
            job_id=job.id, runner=runner, runner_place=self._runner_place(runner), where=self._where
        )
        match outcome:
            case Moved(token, serves):
                log.info(
                    "job took the runner of job %s; what stood for this job stands for that one now",
                    serves,
                    extra={"runner_name": job.runner_name, "stand_in": self._name(token)},
                )
            case Replace(serves=serves, freed=freed):
                if freed is not None:
                    self._drop_waiting(freed)
                log.info(
                    "job took the runner of job %s, and nothing stood for this job: replacing that runner",
                    serves,
                    extra={"runner_name": job.runner_name},
                )
                return outcome
        return None

    def _drop_waiting(self, token: int) -> bool:
        """Take the entry of `token` out of the queue; False if it was not waiting."""
        if self._waiting.pop(token, None) is None:
            return False
        self._plans.pop(token, None)
        self._limiter.discard(token)
        self._update_queue_metrics()
        return True

    def _name(self, token: int) -> str:
        return planner.runner_name(prefix=self.settings.runner_prefix, workflow_job_id=token)

    def _where(self, token: int) -> Place | None:
        """Where the entry, launch or active runner Job of `token` is (None if it has none)."""
        plan = self._plans.get(token)
        if plan is not None:
            return plan.pool.name, plan.scope.key
        job = self._inventory.jobs.get(self._name(token))
        return (job.pool, job.scope) if job is not None and job.active else None

    def _runner_place(self, token: int) -> Place | None:
        """Where the runner of `token` was started, finished or not (None if ghapp no longer knows)."""
        job = self._inventory.jobs.get(self._name(token))
        return (job.pool, job.scope) if job is not None else self._where(token)

    def pump(self) -> None:
        """Start waiting jobs for which there is room now (called whenever capacity may have freed)."""
        for plan in self._limiter.ready():
            received_at = self._waiting.pop(plan.workflow_job_id, self._clock.now())
            self._start(plan, received_at, recheck=True)
        self._update_queue_metrics()

    def _update_queue_metrics(self) -> None:
        for pool in self.settings.pools:
            self._metrics.queue_length.labels(pool.name).set(self._limiter.waiting(pool.name))

    def _start(self, plan: RunnerPlan, received_at: float, *, recheck: bool = False) -> None:
        task = self._tasks.spawn(
            self.launch(plan, received_at=received_at, recheck=recheck), name=f"launch-{plan.name}"
        )
        self._inflight[plan.workflow_job_id] = task
        self._launching.add(plan.name)

        def done(finished: asyncio.Task[LaunchResult]) -> None:
            if self._inflight.get(plan.workflow_job_id) is finished:  # not a later launch of the same job
                del self._inflight[plan.workflow_job_id]
                self._launching.discard(plan.name)
                self._limiter.release(plan)
                if plan.workflow_job_id not in self._waiting:
                    self._plans.pop(plan.workflow_job_id, None)
            self.pump()

        task.add_done_callback(done)

    @property
    def busy(self) -> int:
        """Launches under way plus jobs waiting for capacity."""
        return len(self._inflight) + len(self._waiting)

    def waiting(self, pool: str) -> int:
        """How many jobs wait here for capacity in `pool`."""
        return self._limiter.waiting(pool)

    def is_waiting(self, workflow_job_id: int) -> bool:
        """True if this job waits here for capacity."""
        return workflow_job_id in self._waiting

    def is_known(self, workflow_job_id: int) -> bool:
        """True if this job is launching or waiting here, or another entry or runner stands for it."""
        return (
            workflow_job_id in self._inflight
            or workflow_job_id in self._waiting
            or self._demand.token_for(workflow_job_id, where=self._where) not in (None, workflow_job_id)
        )

    def serves(self, plan: RunnerPlan) -> int:
        """The workflow job that `plan`'s runner stands for now: its own, unless its own job took the runner
        started for another (the pre-launch re-check then does not ask GitHub about its own job: it ran)."""
        return self._demand.serves(plan.workflow_job_id)

    def is_launching(self, name: str) -> bool:
        """True while the runner called `name` is being created here (its objects may be half made)."""
        return name in self._launching

    async def launch(self, plan: RunnerPlan, *, received_at: float, recheck: bool = False) -> LaunchResult:
        """Create the runner's Job and Secret unless they exist; GitHub or Kubernetes failures are logged.

        With `recheck` (the job waited for capacity) GitHub is asked first whether the job is still queued:
        another replica may have seen it start or complete meanwhile.
        """
        with logs.bound(
            installation_id=plan.installation_id,
            repository=plan.repository,
            workflow_job_id=plan.workflow_job_id,
            pool=plan.pool.name,
        ):
            # An entry that stands for another job (whose runner the plan's own job took) is not re-checked by
            # its own job, which ran: the webhooks said which job it serves.
            if recheck and self.serves(plan) == plan.workflow_job_id:
                with no_rate_limit_waits():  # a rate limit must not hold the capacity reserved for it
                    queued = await self._still_queued(plan)
                if not queued:
                    self._metrics.runners_launched.labels(plan.pool.name, "skipped").inc()
                    log.info(
                        "the waiting job is no longer queued; no runner for it", extra={"job": plan.name}
                    )
                    return LaunchResult("skipped", plan.name)
            delay = self.health.launch_delay(plan.pool.name, now=self._clock.now())
            if delay > 0:
                log.info("pool %s is unhealthy; this launch waits %.0fs", plan.pool.name, delay)
                await self._clock.sleep(delay)
            try:
                async with self._slots:
                    with no_rate_limit_waits():
                        outcome: Outcome = await self._maker.make(plan)
            except RateLimited as exc:
                if plan.warm:  # no job waits for it: the next reconcile pass tries again
                    self._limiter.release(plan)
                    log.warning("GitHub rate limit; the warm runner waits for the next pass: %s", exc)
                    return LaunchResult("deferred", plan.name)
                await self._wait_out(plan, exc, received_at=received_at)
                return LaunchResult("deferred", plan.name)
            except RunnerGroupNotFound as exc:
                self._failed(plan, str(exc))
                self._metrics.jobs_skipped.labels("unknown-runner-group").inc()
                if (exc.org.lower(), exc.group.lower()) not in self._unknown_groups:
                    self._unknown_groups.add((exc.org.lower(), exc.group.lower()))
                    log.error(
                        "pool %s cannot start runners for %s: %s (pool setting runner_group)",
                        plan.pool.name,
                        exc.org,
                        exc,
                    )
                return LaunchResult("skipped", plan.name)
            except GhappError as exc:
                log.error("could not start a runner: %s", exc)
                self._failed(plan, str(exc))
                outcome = "failed"
            self._metrics.runners_launched.labels(plan.pool.name, outcome).inc()
            if outcome in ("created", "exists"):
                self.pool_errors.pop(plan.pool.name, None)
            if outcome == "created":
                now = self._clock.now()
                self._metrics.launch_seconds.labels(plan.pool.name).observe(now - received_at)
                if self._timeline is not None:
                    self._timeline.runner_job_created(
                        plan.workflow_job_id, pool=plan.pool.name, name=plan.name, at=now
                    )
                log.info("runner Job created", extra={"job": plan.name, "scope": plan.scope.key})
            elif outcome == "exists":
                log.info("runner Job exists already; nothing to do", extra={"job": plan.name})
            return LaunchResult(outcome, plan.name)

    async def _still_queued(self, plan: RunnerPlan) -> bool:
        """Whether GitHub still has the job queued; True when GitHub cannot say (better a spare runner)."""
        try:
            job = await self._github.workflow_job(
                installation_id=plan.installation_id, repository=plan.repository, job_id=plan.workflow_job_id
            )
        except GhappError as exc:
            log.warning("could not re-check a waiting job; launching anyway: %s", exc)
            return True
        return bool(job.get("status", "queued") == "queued")

    async def _wait_out(self, plan: RunnerPlan, limit: RateLimited, *, received_at: float) -> None:
        """Wait out a rate limit holding neither a launch slot nor capacity (other installations' launches go
        on meanwhile), then queue the plan again in its fair turn."""
        self._limiter.release(plan)
        self.pump()
        self._metrics.runners_launched.labels(plan.pool.name, "deferred").inc()
        log.warning(
            "GitHub rate limit; the launch waits without holding a slot: %s",
            limit,
            extra={"seconds": round(limit.retry_after, 1)},
        )
        await self._cooldowns.wait(limit.bucket, limit.retry_after)
        if self._demand.settled(self._demand.serves(plan.workflow_job_id)):
            log.info("the job needs no runner any more; not launching after the rate limit")
            return
        self._waiting[plan.workflow_job_id] = received_at
        self._limiter.enqueue(plan)
        self.pump()  # from inside this launch, so that its successor starts before it ends

    def _failed(self, plan: RunnerPlan, error: str) -> None:
        self.pool_errors[plan.pool.name] = (self._clock.now(), error)
        if self._timeline is not None:
            self._timeline.launch_failed(plan.workflow_job_id, error=error)
