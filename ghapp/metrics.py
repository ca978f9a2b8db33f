"""Prometheus metrics, named once. Labels never carry secrets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WAIT_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Seconds a person waits: from a few seconds to hours."""
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600, 43200, 86400)
"""Seconds a workflow job runs."""


class Metrics:
    """All of ghapp's metrics, in a registry of their own (one per app, so tests do not share state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhook_deliveries = Counter(
            "ghapp_webhook_deliveries",
            "Webhook deliveries received, by event, action and outcome.",
            ["event", "action", "outcome"],
            registry=r,
        )
        self.jobs_skipped = Counter(
            "ghapp_jobs_skipped",
            "Queued workflow jobs ghapp did not start a runner for, by reason.",
            ["reason"],
            registry=r,
        )
        self.jobs_refused = Counter(
            "ghapp_jobs_refused",
            "Queued workflow jobs a policy rule refused a runner, by rule.",
            ["reason"],
            registry=r,
        )
        self.runners_launched = Counter(
            "ghapp_runners_launched",
            "Runner launches, by pool and outcome (created, exists, failed, deferred by a rate limit).",
            ["pool", "outcome"],
            registry=r,
        )
        self.launch_seconds = Histogram(
            "ghapp_launch_seconds",
            "Seconds from webhook received to runner Job created.",
            ["pool"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.workflow_jobs = Counter(
            "ghapp_workflow_job_events",
            "workflow_job events seen, by action (queued, in_progress, completed, waiting).",
            ["action"],
            registry=r,
        )
        self.surplus_runners = Counter(
            "ghapp_surplus_runners",
            "Jobs that completed without ever getting a runner, leaving a surplus runner.",
            ["pool"],
            registry=r,
        )
        self.github_requests = Counter(
            "ghapp_github_requests",
            "GitHub API requests, by endpoint template and HTTP status (0 = no response).",
            ["endpoint", "status"],
            registry=r,
        )
        self.github_rate_limit_remaining = Gauge(
            "ghapp_github_rate_limit_remaining",
            "Requests left in the current GitHub rate-limit window, by installation ('app' for the JWT).",
            ["installation"],
            registry=r,
        )
        self.github_rate_limit_reset = Gauge(
            "ghapp_github_rate_limit_reset_timestamp",
            "When the current GitHub rate-limit window resets (Unix time), by installation ('app': the JWT).",
            ["installation"],
            registry=r,
        )
        self.scan_budget_remaining = Gauge(
            "ghapp_scan_budget_remaining",
            "Requests the reconciler's queued-job scan may still spend in the installation's current "
            "rate-limit window (GHAPP_RECONCILE_RATE_SHARE of its limit, less what the scan spent in it).",
            ["installation"],
            registry=r,
        )
        self.scan_repositories_waiting = Gauge(
            "ghapp_scan_repositories_waiting",
            "Repositories the latest reconcile pass left for the next because its rate-limit budget (or the "
            "scan's half of the pass's time) was spent, by installation (0: every repository was scanned).",
            ["installation"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "ghapp_reconcile_pass_seconds",
            "Seconds one reconcile pass took.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.runner_jobs = Gauge(
            "ghapp_runner_jobs",
            "Runner Jobs in the cluster, by pool and state (active, finished, failed, deleting).",
            ["pool", "state"],
            registry=r,
        )
        self.runner_failures = Counter(
            "ghapp_runner_failures",
            "Runners that failed, by pool and reason (create_failed, image_pull, unschedulable, killed, "
            "runner_error, outdated).",
            ["pool", "reason"],
            registry=r,
        )
        self.pool_healthy = Gauge(
            "ghapp_pool_healthy",
            "1 while a pool's runners start; 0 once they fail the same way again and again "
            "(its launches back off).",
            ["pool"],
            registry=r,
        )
        self.queue_length = Gauge(
            "ghapp_queue_length", "Queued workflow jobs waiting for capacity, by pool.", ["pool"], registry=r
        )
        self.warm_min_idle = Gauge(
            "ghapp_warm_min_idle",
            "Idle runners a warm entry asks for now (its schedule applied), by pool and scope.",
            ["pool", "scope"],
            registry=r,
        )
        self.warm_idle = Gauge(
            "ghapp_warm_idle",
            "Idle and starting runners of a warm entry's pool in its scope at the last pass, by pool and "
            "scope.",
            ["pool", "scope"],
            registry=r,
        )
        self.reconcile_passes = Counter(
            "ghapp_reconcile_passes",
            "Reconcile passes, by outcome (ok, failed, timeout).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_fixes = Counter(
            "ghapp_reconcile_fixes",
            "What reconcile passes fixed, by action (redelivered, launched, surplus_removed, "
            "orphan_job_deleted, orphan_runner_removed, orphan_secret_deleted).",
            ["action"],
            registry=r,
        )
        self.repositories_dropped = Counter(
            "ghapp_repositories_dropped",
            "Scanned repositories GitHub answered 404 for (deleted, renamed, transferred, or no longer "
            "granted to the installation); they are no longer scanned.",
            registry=r,
        )
        self.installations_retired = Counter(
            "ghapp_installations_retired",
            "Installations taken out of service (their runner Jobs and Secrets removed), by reason "
            "(deleted, suspended).",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge("ghapp_leader", "1 while this replica holds the reconciler lease.", registry=r)
        self.job_queued_to_runner_job = Histogram(
            "ghapp_job_queued_to_runner_job_seconds",
            "Seconds from a workflow job queued (GitHub's created_at) to its runner Job created, by pool.",
            ["pool"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.job_runner_job_to_pod_running = Histogram(
            "ghapp_job_runner_job_to_pod_running_seconds",
            "Seconds from a runner Job created to its runner pod running, by pool.",
            ["pool"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.job_queued_to_started = Histogram(
            "ghapp_job_queued_to_started_seconds",
            "Seconds from a workflow job queued to a runner taking it (started_at), by pool of that runner.",
            ["pool"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.job_duration = Histogram(
            "ghapp_job_duration_seconds",
            "Seconds a workflow job ran on a runner (started_at to completed_at), by pool.",
            ["pool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.runner_seconds = Counter(
            "ghapp_runner_seconds",
            "Seconds runner pods ran (pod running to pod end), by pool and account (organisation or user).",
            ["pool", "account"],
            registry=r,
        )
        self.runner_repository_seconds = Counter(
            "ghapp_runner_repository_seconds",
            "Seconds runner pods ran, by pool and repository (only with GHAPP_USAGE_BY_REPOSITORY).",
            ["pool", "repository"],
            registry=r,
        )
        self.kubernetes_requests = Counter(
            "ghapp_kubernetes_requests",
            "Kubernetes API requests, by verb, resource and HTTP status (0 = no response).",
            ["verb", "resource", "status"],
            registry=r,
        )
