"""Composition root: builds the clients and the aiohttp application from settings; health routes."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from gidgethub import sansio
from kubernetes_asyncio import client as k8s
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ghapp import events, logs, statuspage
from ghapp.activity import Activity
from ghapp.admission import Admission
from ghapp.auth import AppAuth
from ghapp.clock import Clock, SystemClock
from ghapp.config import Settings
from ghapp.errors import ConfigError, GitHubError
from ghapp.github import GitHubClient
from ghapp.health import Health
from ghapp.installations import Installations
from ghapp.inventory import Inventory
from ghapp.kube import KubeClient
from ghapp.kubehttp import CONNECTIONS, CONNECTIONS_SPARE, KubeTransport
from ghapp.launcher import Launcher
from ghapp.leader import LeaderElector
from ghapp.limiter import Limiter
from ghapp.metrics import Metrics
from ghapp.pods import PodWatcher
from ghapp.reconciler import Reconciler
from ghapp.recovery import Recovery
from ghapp.sensitive import Secret
from ghapp.sightings import Sightings
from ghapp.status import StatusCollector
from ghapp.tasks import TaskSet
from ghapp.timeline import Timeline
from ghapp.usage import Usage
from ghapp.warmer import Warmer
from ghapp.webhook import webhook_handler

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    """The long-lived collaborators of one running ghapp, built from settings by `start_services`."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    session: aiohttp.ClientSession
    kube_http: KubeTransport
    github: GitHubClient
    kube: KubeClient
    inventory: Inventory
    launcher: Launcher
    admission: Admission
    activity: Activity
    installations: Installations
    reconciler: Reconciler
    elector: LeaderElector
    recovery: Recovery
    pods: PodWatcher
    timeline: Timeline
    usage: Usage
    tasks: TaskSet
    """Work started by webhooks (launches); drained on shutdown."""
    background: TaskSet = field(default_factory=TaskSet)
    """Long-running loops (watch, leader election); cancelled on shutdown."""
    ready: bool = field(default=False)

    async def dispatch(self, event: sansio.Event, received_at: float) -> None:
        """Route one verified event to its handlers (runs after the webhook was answered)."""
        with logs.bound(delivery_id=event.delivery_id):
            ctx = events.Context(
                launcher=self.launcher,
                admission=self.admission,
                metrics=self.metrics,
                activity=self.activity,
                installations=self.installations,
                timeline=self.timeline,
                received_at=received_at,
            )
            await events.router.dispatch(event, ctx)

    async def verify_app(self) -> None:
        """``GET /app`` once at start (``serve``): GitHub must accept the App's id and key.

        A refusal (401, 403, 404) can only be fixed by changing GHAPP_APP_ID or the key, so it is a
        `ConfigError` and ghapp does not start (exit 2, one error line): a rollout with a wrong key stops at
        the first pod, which never turns ready, instead of a ready ghapp failing every launch. If GitHub
        cannot be asked now (network, 5xx), an ERROR is logged and ghapp starts: it retries every call.
        """
        try:
            app = await self.github.app()
        except GitHubError as exc:
            if exc.status in (401, 403, 404):
                raise ConfigError(
                    f"GHAPP_APP_ID / GHAPP_PRIVATE_KEY: GitHub ({self.settings.github_api_url}) refuses the "
                    f"App's JWT ({exc}); check that GHAPP_APP_ID is the App's id and the key is one of its "
                    "private keys, not deleted"
                ) from None
            log.error(
                "could not verify the App with GitHub (GET /app); starting anyway", extra={"error": str(exc)}
            )
            return
        log.info("GitHub accepts the App", extra={"app": app.slug, "app_id": app.id, "owner": app.owner})
        if "workflow_job" not in app.events:
            log.error(
                "the App does not subscribe to workflow_job events: no job will reach ghapp; tick "
                "'Workflow job' under 'Subscribe to events' in the App's settings",
                extra={"app": app.slug, "events": list(app.events)},
            )

    async def start(self, *, reconcile: bool = True) -> None:
        """Rebuild state from the cluster, then keep it current and campaign for the reconciler's lease."""
        await self.inventory.sync()
        self.background.spawn(self.inventory.run(), name="watch-runner-jobs")
        self.background.spawn(self.pods.run(), name="watch-runner-pods")
        await self.recovery.verify_service_accounts()
        if reconcile:
            self.background.spawn(self.elector.run(self.reconciler.run_forever), name="leader-election")
        self.ready = True

    async def stop(self) -> None:
        """Graceful shutdown: not ready, stop the reconciler and release its lease, finish launches, close."""
        self.ready = False
        await self.background.drain(grace=0)
        await self.elector.release()
        cancelled = await self.tasks.drain(grace=self.settings.shutdown_grace_seconds)
        if cancelled:
            log.warning("shutdown cancelled %d unfinished launches; the reconciler will redo them", cancelled)
        await self.close()

    def spawn_dispatch(self, event: sansio.Event, received_at: float) -> None:
        self.tasks.spawn(self.dispatch(event, received_at), name=f"delivery-{event.delivery_id}")

    async def close(self) -> None:
        await self.session.close()
        await self.kube_http.close()


async def start_services(
    settings: Settings,
    *,
    kube_configuration: k8s.Configuration,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
) -> Services:
    """Build every client from validated settings (nothing starts before this, nothing reads config after)."""
    settings.require_credentials()
    assert settings.app_id is not None
    assert settings.private_key is not None
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    app_auth = AppAuth(
        app_id=settings.app_id, private_key_pem=Secret(settings.private_key.get_secret_value()), clock=clock
    )
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=10))
    kube_http = KubeTransport(
        kube_configuration, connections=max(CONNECTIONS, settings.launch_concurrency + CONNECTIONS_SPARE)
    )
    github = GitHubClient(
        session=session,
        api_url=settings.github_api_url,
        app_auth=app_auth,
        clock=clock,
        metrics=metrics,
        cache_entries=settings.github_cache_entries,
    )
    kube = KubeClient(http=kube_http, namespace=settings.namespace, clock=clock, metrics=metrics)
    tasks = TaskSet()
    inventory = Inventory(kube=kube, namespaces=settings.runner_namespaces, clock=clock, metrics=metrics)
    timeline = Timeline(
        capacity=settings.recent_jobs, metrics=metrics, pool_of_runner=lambda name: _pool_of(inventory, name)
    )
    usage = Usage(
        metrics=metrics,
        since=clock.now(),
        by_repository=settings.usage_by_repository,
        repository_of=lambda runner: _repository_taken(timeline, runner),
    )
    inventory.on_change(lambda before, after: timeline.runner_job_changed(before, after, now=clock.now()))
    inventory.on_change(lambda before, after: usage.runner_job_changed(before, after, now=clock.now()))
    limiter = Limiter(
        inventory=inventory,
        pool_limits={pool.name: pool.max_runners for pool in settings.pools},
        global_limit=settings.max_runners,
        weights=settings.installation_weights,
    )
    sightings = Sightings(clock=clock)  # runners' ages, shared by launches and the reconciler
    health = Health([pool.name for pool in settings.pools])
    launcher = Launcher(
        settings=settings,
        github=github,
        kube=kube,
        inventory=inventory,
        limiter=limiter,
        metrics=metrics,
        clock=clock,
        tasks=tasks,
        sightings=sightings,
        health=health,
        timeline=timeline,
    )
    recovery = Recovery(
        settings=settings,
        kube=kube,
        github=github,
        inventory=inventory,
        launcher=launcher,
        health=health,
        metrics=metrics,
        clock=clock,
        tasks=tasks,
    )
    pods = PodWatcher(
        kube=kube,
        settings=settings,
        clock=clock,
        on_failure=recovery.runner_failed,
        on_progress=recovery.runner_progressed,
        on_pod=lambda pod: timeline.pod_changed(pod, now=clock.now()),
    )
    inventory.on_job(pods.job_changed)
    admission = Admission(settings=settings, github=github, metrics=metrics)
    activity = Activity()
    installations = Installations(
        settings=settings,
        github=github,
        kube=kube,
        inventory=inventory,
        activity=activity,
        clock=clock,
        metrics=metrics,
    )
    warmer = Warmer(
        settings=settings,
        github=github,
        kube=kube,
        inventory=inventory,
        launcher=launcher,
        installations=installations,
        clock=clock,
        metrics=metrics,
    )
    reconciler = Reconciler(
        settings=settings,
        admission=admission,
        github=github,
        kube=kube,
        inventory=inventory,
        launcher=launcher,
        activity=activity,
        installations=installations,
        clock=clock,
        metrics=metrics,
        sightings=sightings,
        warmer=warmer,
    )
    elector = LeaderElector(
        kube=kube,
        name=settings.lease_name,
        namespace=settings.lease_ns,
        identity=settings.identity,
        duration=settings.lease_duration_seconds,
        clock=clock,
        metrics=metrics,
    )
    return Services(
        settings=settings,
        clock=clock,
        metrics=metrics,
        session=session,
        kube_http=kube_http,
        github=github,
        kube=kube,
        inventory=inventory,
        launcher=launcher,
        admission=admission,
        activity=activity,
        installations=installations,
        reconciler=reconciler,
        elector=elector,
        recovery=recovery,
        pods=pods,
        timeline=timeline,
        usage=usage,
        tasks=tasks,
    )


def _pool_of(inventory: Inventory, runner_name: str) -> str | None:
    job = inventory.jobs.get(runner_name)
    return None if job is None else job.pool


def _repository_taken(timeline: Timeline, runner_name: str) -> str | None:
    taken = timeline.took(runner_name)
    return None if taken is None else taken.repository


SERVICES = web.AppKey("services", Services)


RECONCILE = web.AppKey("reconcile", bool)


def build_app(services: Services, *, reconcile: bool = True) -> web.Application:
    """The public application: ``POST /webhook``, ``/healthz``, ``/readyz`` (and nothing internal: that is
    on the admin application). It owns the services' lifecycle."""
    settings = services.settings
    assert settings.webhook_secret is not None
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SERVICES] = services
    app[RECONCILE] = reconcile
    app.on_shutdown.append(_not_ready)
    app.router.add_post(
        "/webhook",
        webhook_handler(
            secret=settings.webhook_secret.get_secret_value(),
            max_body_bytes=settings.max_body_bytes,
            metrics=services.metrics,
            spawn=services.spawn_dispatch,
            clock_now=services.clock.now,
        ),
    )
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.cleanup_ctx.append(_lifecycle)
    return app


def build_admin_app(services: Services) -> web.Application:
    """The admin application, for the cluster only: ``/metrics``, ``/status`` (HTML), ``/status.json``."""
    app = web.Application()
    app[SERVICES] = services
    app[STATUS] = StatusCollector(services=services)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status_page)
    app.router.add_get("/status.json", _status_json)
    app.router.add_get("/", _to_status)
    return app


STATUS = web.AppKey("status", StatusCollector)


async def _status_page(request: web.Request) -> web.Response:
    status = await request.app[STATUS].collect()
    return web.Response(
        text=statuspage.html(status.as_dict()),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def _status_json(request: web.Request) -> web.Response:
    status = await request.app[STATUS].collect()
    return web.json_response(status.as_dict(), headers={"Cache-Control": "no-store"})


async def _to_status(request: web.Request) -> web.Response:
    raise web.HTTPFound("/status")


def admin_listener(
    admin: web.Application, *, host: str, port: int, sock: socket.socket | None = None
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """A cleanup context for the public application that serves `admin` on its own port while the
    public application runs (started after the services, stopped before them). With `sock` (bound
    already, on `host`:`port`), it serves there."""

    @contextlib.asynccontextmanager
    async def listen(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(admin, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port) if sock is None else web.SockSite(runner, sock)
            await site.start()
            log.info("admin listener is serving", extra={"host": host, "port": port})
            yield
        finally:
            await runner.cleanup()

    return listen


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    try:
        await services.start(reconcile=app[RECONCILE])
    except BaseException:
        await services.background.drain(grace=0)
        await services.close()
        raise
    log.info(
        "ghapp is serving",
        extra={"namespace": services.settings.namespace, "pools": [p.name for p in services.settings.pools]},
    )
    yield
    await services.stop()
    log.info("ghapp stopped")


async def _not_ready(app: web.Application) -> None:
    app[SERVICES].ready = False


async def _healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    broken = services.inventory.broken_for()
    if broken >= services.settings.watch_broken_limit_seconds:
        return web.Response(status=503, text=f"the watch of runner Jobs has failed for {broken:.0f} s\n")
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not services.ready:
        return web.Response(status=503, text="shutting down\n")
    if not await services.kube.reachable():
        return web.Response(status=503, text="kubernetes unreachable\n")
    return web.Response(text="ready\n")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SERVICES].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
