"""End to end through real HTTP: signed webhooks in, GitHub calls to the fake, objects in the emulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re

import pytest

from .conftest import (
    ORG_INSTALLATION,
    OTHER_ORG_INSTALLATION,
    PRIVATE_KEY_PEM,
    USER_INSTALLATION,
    WEBHOOK_SECRET,
    Ghapp,
)

LINUX = ["self-hosted", "linux", "x64"]


def secret_value(secret: dict[str, object], key: str = "token") -> str:
    data = secret["data"]
    assert isinstance(data, dict)
    return base64.b64decode(data[key]).decode()


def signed_headers(
    body: bytes, *, event: str = "workflow_job", secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": f"sha256={signature}",
    }


async def test_queued_job_gets_one_job_and_one_secret(ghapp: Ghapp) -> None:
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()

    (job,) = ghapp.runner_jobs()
    (secret,) = ghapp.runner_secrets()
    name = f"ghapp-{job_id}"
    assert job["metadata"]["name"] == name
    assert secret["metadata"]["name"] == name
    for obj in (job, secret):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghapp"
        assert obj["metadata"]["labels"]["ghapp/workflow-job-id"] == str(job_id)
        assert obj["metadata"]["labels"]["ghapp/pool"] == "linux"
        assert obj["metadata"]["labels"]["ghapp/installation-id"] == str(ORG_INSTALLATION)
        assert obj["metadata"]["annotations"]["ghapp/repository"] == "acme/webapp"
    # the Secret is owned by the Job, so Kubernetes deletes it with the Job
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name, job["metadata"]["uid"])
    # it holds the registration token GitHub issued for the organisation
    token = secret_value(secret)
    assert token in ghapp.github.registration_tokens("org:acme")
    # the pod reads it from the Secret; the Job itself never contains it
    assert token not in json.dumps(job)
    pod = job["spec"]["template"]["spec"]
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["ACTIONS_RUNNER_INPUT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "token"}
    assert env["ACTIONS_RUNNER_INPUT_URL"]["value"] == f"{ghapp.services.settings.web_url}/acme"
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    assert pod["containers"][0]["image"] == "ghcr.io/actions/actions-runner:2.330.0"


async def test_redelivery_and_duplicate_deliveries_create_nothing_new(ghapp: Ghapp) -> None:
    job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    payload = ghapp.github.workflow_job_payload(job["id"], "queued")
    first = await ghapp.github.deliver("workflow_job", payload)
    await ghapp.settle()
    writes_after_first = len(ghapp.kube.writes())
    await ghapp.github.deliver("workflow_job", payload, guid=first.guid)  # a redelivery: same GUID
    await ghapp.github.deliver("workflow_job", payload)  # the same job in another delivery
    await ghapp.settle()

    assert len(ghapp.runner_jobs()) == 1
    assert len(ghapp.runner_secrets()) == 1
    assert writes_after_first == 2  # one Job, one Secret
    created = [w for w in ghapp.kube.writes() if w.verb == "create"]
    assert {(w.resource, w.status) for w in created} <= {("jobs", 201), ("secrets", 201), ("jobs", 409)}


async def test_concurrent_duplicates_in_one_burst(ghapp: Ghapp) -> None:
    job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/api", labels=LINUX)
    payload = ghapp.github.workflow_job_payload(job["id"], "queued")
    body = json.dumps(payload).encode()
    for _ in range(5):
        response = await ghapp.post(body, signed_headers(body))
        assert response.status == 202
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 1
    assert len(ghapp.runner_secrets()) == 1


async def test_org_repo_uses_org_endpoint_and_user_repo_uses_repo_endpoint(ghapp: Ghapp) -> None:
    org_job = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    user_job = await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()

    org_calls = ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/registration-token")
    repo_calls = ghapp.github.calls_to("POST", r"/repos/alice/tools/actions/runners/registration-token")
    assert [c.status for c in org_calls] == [201]
    assert [c.status for c in repo_calls] == [201]
    assert not ghapp.github.calls_to("POST", r"/repos/acme/.*/registration-token")
    jobs = {j["metadata"]["name"]: j for j in ghapp.runner_jobs()}
    env = {
        name: {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        for name, job in jobs.items()
    }
    web_url = ghapp.services.settings.web_url
    assert env[f"ghapp-{org_job}"]["ACTIONS_RUNNER_INPUT_URL"] == f"{web_url}/acme"
    assert env[f"ghapp-{user_job}"]["ACTIONS_RUNNER_INPUT_URL"] == f"{web_url}/alice/tools"
    assert jobs[f"ghapp-{user_job}"]["metadata"]["labels"]["ghapp/scope"] == "repo"


async def test_unmatched_labels_create_nothing(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["ubuntu-latest"])
    await ghapp.settle()
    assert ghapp.runner_jobs() == []
    assert ghapp.runner_secrets() == []
    assert not ghapp.github.calls_to("POST", r".*/registration-token")
    assert any("not ours" in r.getMessage() for r in caplog.records)
    skipped = ghapp.services.metrics.registry.get_sample_value(
        "ghapp_jobs_skipped_total", {"reason": "no-matching-pool"}
    )
    assert skipped == 1


async def test_gpu_label_picks_the_gpu_pool(ghapp: Ghapp) -> None:
    await ghapp.queue(
        installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=["self-hosted", "GPU"]
    )
    await ghapp.settle()
    (job,) = ghapp.runner_jobs()
    assert job["metadata"]["labels"]["ghapp/pool"] == "gpu"


def sha1_signature(body: bytes) -> str:
    """A correct HMAC-SHA1 signature of `body`, as GitHub writes it in ``X-Hub-Signature``."""
    return "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()


def sha1_instead(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Drop the SHA-256 signature from `headers`; the SHA-1 one to add instead."""
    del headers["X-Hub-Signature-256"]
    return {"X-Hub-Signature": sha1_signature(body)}


def sha256_hex(headers: dict[str, str]) -> str:
    """The correct HMAC-SHA256 in `headers`, without its ``sha256=`` prefix."""
    return headers["X-Hub-Signature-256"].removeprefix("sha256=")


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda body, headers: headers.update({"X-Hub-Signature-256": "sha256=" + "0" * 64}), 401),
        (lambda body, headers: headers.pop("X-Hub-Signature-256"), 401),
        (lambda body, headers: headers.update(signed_headers(body, secret="another-secret")), 401),
        # a correct SHA-1 signature (GitHub still sends one alongside): not enough alone, nor as the SHA-256
        (lambda body, headers: headers.update(sha1_instead(body, headers)), 401),
        (lambda body, headers: headers.update({"X-Hub-Signature-256": sha1_signature(body)}), 401),
        # the right HMAC-SHA256 without its prefix, or under another one
        (lambda body, headers: headers.update({"X-Hub-Signature-256": sha256_hex(headers)}), 401),
        (lambda body, headers: headers.update({"X-Hub-Signature-256": "SHA256=" + sha256_hex(headers)}), 401),
    ],
    ids=[
        "bad-signature",
        "no-signature",
        "wrong-secret",
        "sha1-only",
        "sha1-as-256",
        "no-prefix",
        "upper-prefix",
    ],
)
async def test_bad_signatures_are_refused(ghapp: Ghapp, mutate, status: int) -> None:  # type: ignore[no-untyped-def]
    job = ghapp.github.queue_job(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    body = json.dumps(ghapp.github.workflow_job_payload(job["id"], "queued")).encode()
    headers = signed_headers(body)
    mutate(body, headers)
    response = await ghapp.post(body, headers)
    await ghapp.settle()
    assert response.status == status
    assert ghapp.runner_jobs() == []
    assert ghapp.github.calls == []


async def test_malformed_body_is_400(ghapp: Ghapp) -> None:
    body = b'{"action": "queued", "workflow_job": '
    response = await ghapp.post(body, signed_headers(body))
    assert response.status == 400
    body = b"[1, 2, 3]"
    response = await ghapp.post(body, signed_headers(body))
    assert response.status == 400
    await ghapp.settle()
    assert ghapp.runner_jobs() == []


async def test_wrong_content_type_is_415(ghapp: Ghapp) -> None:
    body = b"payload=%7B%7D"
    headers = signed_headers(body)
    headers["Content-Type"] = "text/plain"
    response = await ghapp.post(body, headers)
    assert response.status == 415


async def test_missing_event_header_is_400(ghapp: Ghapp) -> None:
    body = b"{}"
    headers = signed_headers(body)
    del headers["X-GitHub-Event"]
    response = await ghapp.post(body, headers)
    assert response.status == 400


async def test_oversize_body_is_413(ghapp: Ghapp) -> None:
    limit = ghapp.services.settings.max_body_bytes
    body = b'{"padding": "' + b"x" * limit + b'"}'
    response = await ghapp.post(body, signed_headers(body))
    assert response.status == 413
    await ghapp.settle()
    assert ghapp.runner_jobs() == []
    assert ghapp.github.calls == []


async def test_ping_answers_200_and_other_events_are_ignored(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ping = await ghapp.github.deliver("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert ping.status_code == 200
    push = await ghapp.github.deliver("push", {"ref": "refs/heads/main"})
    assert push.status_code == 202
    await ghapp.settle()
    assert any("event ignored" in r.getMessage() for r in caplog.records)
    assert ghapp.github.calls == []


async def test_twenty_jobs_for_one_repo_cost_one_registration_token(ghapp: Ghapp) -> None:
    for _ in range(20):
        await ghapp.queue(installation_id=USER_INSTALLATION, repository="alice/tools", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 20
    assert len(ghapp.runner_secrets()) == 20
    assert len(ghapp.github.calls_to("POST", r"/repos/alice/tools/actions/runners/registration-token")) == 1
    assert len(ghapp.github.calls_to("POST", r"/app/installations/\d+/access_tokens")) == 1
    tokens = {secret_value(s) for s in ghapp.runner_secrets()}
    assert len(tokens) == 1  # every Secret has its own object, all hold the one shared token


async def test_each_installation_uses_its_own_token(ghapp: Ghapp) -> None:
    await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)
    await ghapp.settle()
    acme = ghapp.github.calls_to("POST", r"/orgs/acme/actions/runners/registration-token")
    globex = ghapp.github.calls_to("POST", r"/orgs/globex/actions/runners/registration-token")
    assert [c.installation_id for c in acme] == [ORG_INSTALLATION]
    assert [c.installation_id for c in globex] == [OTHER_ORG_INSTALLATION]
    minted = ghapp.github.calls_to("POST", r"/app/installations/\d+/access_tokens")
    assert sorted(c.path for c in minted) == sorted(
        f"/app/installations/{i}/access_tokens" for i in (ORG_INSTALLATION, OTHER_ORG_INSTALLATION)
    )
    assert all(c.auth == "jwt" for c in minted)
    assert len(ghapp.runner_jobs()) == 2


async def test_in_progress_and_completed_are_recorded(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    taken = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    cancelled = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    ghapp.github.register_runner(scope="org:acme", name=f"ghapp-{taken}", labels=LINUX)
    ghapp.github.start_job(taken, runner_name=f"ghapp-{taken}")
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(taken, "in_progress"))
    ghapp.github.complete_job(taken, conclusion="success")
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(taken, "completed"))
    ghapp.github.cancel_job(cancelled)
    await ghapp.github.deliver("workflow_job", ghapp.github.workflow_job_payload(cancelled, "completed"))
    await ghapp.settle()

    took = [r for r in caplog.records if r.getMessage() == "runner took the job"]
    assert [getattr(r, "runner_name", None) for r in took] == [f"ghapp-{taken}"]
    surplus = ghapp.services.metrics.registry.get_sample_value(
        "ghapp_surplus_runners_total", {"pool": "linux"}
    )
    assert surplus == 1
    assert len(ghapp.runner_jobs()) == 2  # recording only: removal is the reconciler's job


async def test_installation_events_are_accepted(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    payload = {
        "action": "created",
        "installation": {"id": 777, "account": {"login": "initech"}},
        "sender": {"login": "bob"},
    }
    delivery = await ghapp.github.deliver("installation", payload)
    assert delivery.status_code == 202
    await ghapp.settle()
    assert any(getattr(r, "account", None) == "initech" for r in caplog.records)


async def test_health_and_readiness(ghapp: Ghapp) -> None:
    client = ghapp.server
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(client.make_url("/healthz")) as response:
            assert response.status == 200
        async with session.get(client.make_url("/readyz")) as response:
            assert response.status == 200
        await ghapp.kube.close()  # the API server goes away
        async with session.get(client.make_url("/readyz")) as response:
            assert response.status == 503
            assert "kubernetes" in await response.text()
        async with session.get(client.make_url("/healthz")) as response:
            assert response.status == 200


async def test_no_secret_reaches_the_logs(ghapp: Ghapp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything, from every library
    for installation, repo in ((ORG_INSTALLATION, "acme/webapp"), (USER_INSTALLATION, "alice/tools")):
        await ghapp.queue(installation_id=installation, repository=repo, labels=LINUX)
    bad = b'{"action": "queued"}'
    await ghapp.post(bad, signed_headers(bad, secret="wrong"))
    ghapp.github.fail_next(1, status=401, path_contains="registration-token")  # forces a re-mint path
    await ghapp.queue(installation_id=OTHER_ORG_INSTALLATION, repository="globex/site", labels=LINUX)
    await ghapp.settle()
    assert len(ghapp.runner_jobs()) == 3

    text = "\n".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in caplog.records)
    secrets = [WEBHOOK_SECRET, *PRIVATE_KEY_PEM.strip().splitlines()[1:-1]]
    for installation in (ORG_INSTALLATION, USER_INSTALLATION, OTHER_ORG_INSTALLATION):
        secrets += ghapp.github.tokens_for(installation)
    for scope in ("org:acme", "repo:alice/tools", "org:globex"):
        secrets += ghapp.github.registration_tokens(scope)
    secrets += [secret_value(s) for s in ghapp.runner_secrets()]
    assert len(secrets) > 10
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    # JWTs neither
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", text)


async def test_the_app_check_at_start_logs_and_carries_on_when_github_is_down(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ghapp.github.fail_next(10, status=503, path_contains="/app")
    await ghapp.services.verify_app()  # no exception: a GitHub outage must not keep ghapp down
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "could not verify the App with GitHub (GET /app); starting anyway"
    ]
    assert "503" in errors[0].__dict__["error"]


async def test_the_app_check_at_start_says_when_the_app_lacks_workflow_job(
    ghapp: Ghapp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await ghapp.services.verify_app()
    assert any(r.getMessage() == "GitHub accepts the App" for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ghapp.github.events = ["installation"]
    await ghapp.services.verify_app()
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage().startswith("the App does not subscribe to workflow_job events")
