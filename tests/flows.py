"""A full end-to-end flow through ghapp, shared by the tests that check what it is allowed to do."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from ghapp import check

from .conftest import NAMESPACE, ORG_INSTALLATION, USER_INSTALLATION, Ghapp, wait_for

LINUX = ["self-hosted", "linux", "x64"]


async def full_flow(ghapp: Ghapp) -> None:
    """Everything a deployment does: readiness, org and user jobs (queued, duplicated, in progress,
    completed, cancelled), unmatched labels, and ``ghapp check``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(ghapp.server.make_url("/readyz")) as response,
    ):
        assert response.status == 200
    org_job = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    user_job = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    cancelled = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/api", labels=["windows"])
    await ghapp.settle()
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(org_job, "queued"))
    for job_id, scope in ((org_job, "org:acme"), (user_job, "repo:alice/tools")):
        ghapp.github.register_runner(scope=scope, name=f"ghapp-{job_id}", labels=LINUX)
        ghapp.github.start_job(job_id, runner_name=f"ghapp-{job_id}")
        await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "in_progress"))
        ghapp.github.complete_job(job_id, conclusion="success")
        await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(job_id, "completed"))
    ghapp.github.cancel_job(cancelled)
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(cancelled, "completed"))
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 3

    results = await check.run_checks(ghapp.services.settings, kube_configuration=ghapp.kube.configuration())
    assert [r.line() for r in results if not r.ok] == []
    # a dedicated runner ServiceAccount is looked up
    account = {"metadata": {"name": "ci-runner", "namespace": NAMESPACE}}
    ghapp.kube.put_object("serviceaccounts", account)
    dedicated = ghapp.services.settings.model_copy(update={"runner_service_account": "ci-runner"})
    results = await check.run_checks(dedicated, kube_configuration=ghapp.kube.configuration())
    assert [r.line() for r in results if not r.ok] == []

    # the reconciler cleans up: a failed runner Job and a Secret that lost its Job
    ghapp.kube.finish_job(NAMESPACE, f"ghapp-{cancelled}", succeeded=False)
    secret = ghapp.kube.get("secrets", NAMESPACE, f"ghapp-{cancelled}")
    assert secret is not None
    an_hour_ago = datetime.fromtimestamp(ghapp.services.clock.now() - 3600, UTC).isoformat()
    orphan = {
        **secret,
        "metadata": {
            **secret["metadata"],
            "name": "ghapp-1",
            "ownerReferences": [],
            "creationTimestamp": an_hour_ago,  # older than GHAPP_ORPHAN_GRACE_SECONDS
        },
    }
    ghapp.kube.put_object("secrets", orphan)
    await wait_for(lambda: not ghapp.services.inventory.jobs[f"ghapp-{cancelled}"].active, what="watch")
    report = await ghapp.services.reconciler.reconcile_once()
    assert (report.orphan_job_deleted, report.orphan_secret_deleted, report.errors) == (1, 1, [])

    # leader election: take the Lease, renew it, release it
    elector = ghapp.services.elector
    assert await elector.campaign_once()
    assert await elector.campaign_once()
    elector.is_leader = True
    await elector.release()
