"""Tests of the fake GitHub (tests/fakes/github.py) through real HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gidgethub import BadRequest, GitHubBroken, RateLimitExceeded
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token, get_jwt
from gidgethub.sansio import Event

from tests.fakes.github import FakeGitHub

APP_ID = 4242
SECRET = "hook-secret"
ORG_INST = 11
USER_INST = 22
OTHER_ORG_INST = 33


@dataclass
class Keys:
    private_pem: bytes
    public_pem: bytes
    other_private_pem: bytes


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(_pem(key), public, _pem(other))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _populate(fake: FakeGitHub) -> None:
    fake.add_installation(
        installation_id=ORG_INST, account="acme", account_type="Organization", repositories=["app", "lib"]
    )
    fake.add_installation(
        installation_id=USER_INST,
        account="alice",
        account_type="User",
        repositories=["dotfiles"],
        permissions={"administration": "write", "actions": "read", "metadata": "read"},
    )
    fake.add_installation(
        installation_id=OTHER_ORG_INST,
        account="globex",
        account_type="Organization",
        repositories=["site"],
        permissions={"metadata": "read", "actions": "read"},  # no runner permissions
    )


@pytest.fixture
async def fake(keys: Keys, clock: Clock) -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub(app_id=APP_ID, public_key_pem=keys.public_pem, webhook_secret=SECRET, clock=clock)
    await gh.start()
    _populate(gh)
    yield gh
    await gh.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def api(session: aiohttp.ClientSession, fake: FakeGitHub) -> GitHubAPI:
    return GitHubAPI(session, "ghapp-tests", base_url=fake.api_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        rec.requests.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=rec.status, text="ok")

    app = web.Application()
    app.router.add_post("/webhook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    yield rec
    await runner.cleanup()


async def _token(api: GitHubAPI, keys: Keys, installation_id: int) -> str:
    resp = await get_installation_access_token(
        api, installation_id=str(installation_id), app_id=str(APP_ID), private_key=keys.private_pem
    )
    return str(resp["token"])


def _app_jwt(keys: Keys) -> str:
    return get_jwt(app_id=str(APP_ID), private_key=keys.private_pem)


# ------------------------------------------------------------------------------------------ App JWT
async def test_jwt_accepted(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    app = await api.getitem("/app", jwt=_app_jwt(keys))
    assert app["id"] == APP_ID
    assert app["owner"]["login"]
    installs = await api.getitem("/app/installations", jwt=_app_jwt(keys))
    assert [i["id"] for i in installs] == [ORG_INST, USER_INST, OTHER_ORG_INST]
    assert installs[0]["account"]["type"] == "Organization"
    assert installs[0]["target_type"] == "Organization"
    one = await api.getitem(f"/app/installations/{USER_INST}", jwt=_app_jwt(keys))
    assert one["account"]["login"] == "alice"
    call = fake.calls_to("GET", "/app")[0]
    assert (call.auth, call.status, call.installation_id) == ("jwt", 200, None)
    # An integer iss is accepted as well.
    now = int(time.time())
    claims = json.dumps({"iat": now - 60, "exp": now + 540, "iss": APP_ID}).encode()
    token = jwt.PyJWS().encode(claims, keys.private_pem, algorithm="RS256")
    assert (await api.getitem("/app", jwt=token))["id"] == APP_ID


async def test_jwt_bad_signature_and_expired(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    bad = get_jwt(app_id=str(APP_ID), private_key=keys.other_private_pem)
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/app", jwt=bad)
    assert exc.value.status_code == 401
    assert "could not be decoded" in str(exc.value)
    assert fake.calls[-1].auth == "invalid"

    now = int(time.time())
    expired = jwt.encode({"iat": now - 700, "exp": now - 100, "iss": str(APP_ID)}, keys.private_pem, "RS256")
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/app", jwt=expired)
    assert exc.value.status_code == 401
    assert "'Expiration time'" in str(exc.value)

    too_long = jwt.encode({"iat": now - 60, "exp": now + 900, "iss": str(APP_ID)}, keys.private_pem, "RS256")
    with pytest.raises(BadRequest, match="too far in the future"):
        await api.getitem("/app", jwt=too_long)

    wrong_iss = jwt.encode({"iat": now - 60, "exp": now + 500, "iss": "999"}, keys.private_pem, "RS256")
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/app", jwt=wrong_iss)
    assert exc.value.status_code == 401


async def test_jwt_route_rejects_installation_token(api: GitHubAPI, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/app/installations", oauth_token=token)
    assert exc.value.status_code == 401


# --------------------------------------------------------------------------------- installation token
async def test_token_minting_and_expiry(api: GitHubAPI, fake: FakeGitHub, keys: Keys, clock: Clock) -> None:
    resp = await api.post(f"/app/installations/{ORG_INST}/access_tokens", data=b"", jwt=_app_jwt(keys))
    token = resp["token"]
    assert token.startswith("ghs_")
    assert len(token) == 40
    assert resp["repository_selection"] == "selected"
    assert resp["permissions"]["organization_self_hosted_runners"] == "write"
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now + 3600))
    assert resp["expires_at"] == expected

    repos = await api.getitem("/installation/repositories", oauth_token=token)
    assert repos["total_count"] == 2
    assert {r["full_name"] for r in repos["repositories"]} == {"acme/app", "acme/lib"}
    assert (fake.calls[-1].installation_id, fake.calls[-1].auth) == (ORG_INST, "installation")

    clock.now += 3601
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert exc.value.status_code == 401
    assert "Bad credentials" in str(exc.value)
    assert [c.auth for c in fake.calls[-1:]] == ["invalid"]


async def test_unknown_installation_and_long_tokens(keys: Keys, session: aiohttp.ClientSession) -> None:
    gh = FakeGitHub(
        app_id=APP_ID, public_key_pem=keys.public_pem, webhook_secret=SECRET, installation_token_length=520
    )
    url = await gh.start()
    try:
        _populate(gh)
        api = GitHubAPI(session, "t", base_url=url)
        token = await _token(api, keys, USER_INST)
        assert len(token) == 520
        assert token.startswith("ghs_")
        assert (await api.getitem("/installation/repositories", oauth_token=token))["total_count"] == 1
        with pytest.raises(BadRequest) as exc:
            await _token(api, keys, 999)
        assert exc.value.status_code == 404
    finally:
        await gh.close()


async def test_revoked_token(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    fake.revoke_token(token)
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert exc.value.status_code == 401


async def test_bearer_installation_token(session: aiohttp.ClientSession, api: GitHubAPI, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    async with session.get(
        f"{api.base_url}/installation/repositories", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["x-ratelimit-limit"] == "5000"
        assert resp.headers["x-ratelimit-resource"] == "core"
        assert resp.headers["x-github-request-id"]


# ----------------------------------------------------------------------------------- runner endpoints
async def test_registration_tokens_scopes_and_permissions(
    api: GitHubAPI, fake: FakeGitHub, keys: Keys
) -> None:
    org_token = await _token(api, keys, ORG_INST)
    user_token = await _token(api, keys, USER_INST)
    other_token = await _token(api, keys, OTHER_ORG_INST)

    reg = await api.post("/orgs/acme/actions/runners/registration-token", data=b"", oauth_token=org_token)
    assert set(reg) >= {"token", "expires_at"}
    reg = await api.post(
        "/repos/acme/app/actions/runners/registration-token", data=b"", oauth_token=org_token
    )
    assert reg["token"]
    reg = await api.post(
        "/repos/alice/dotfiles/actions/runners/registration-token", data=b"", oauth_token=user_token
    )
    assert reg["token"]

    # A token for installation A on installation B's resources: 404.
    for path in (
        "/orgs/acme/actions/runners/registration-token",
        "/repos/acme/app/actions/runners/registration-token",
    ):
        with pytest.raises(BadRequest) as exc:
            await api.post(path, data=b"", oauth_token=user_token)
        assert exc.value.status_code == 404
    # A User account has no org runners.
    with pytest.raises(BadRequest) as exc:
        await api.post("/orgs/alice/actions/runners/registration-token", data=b"", oauth_token=user_token)
    assert exc.value.status_code == 404
    # Missing permission: 403.
    with pytest.raises(BadRequest) as exc:
        await api.post("/orgs/globex/actions/runners/registration-token", data=b"", oauth_token=other_token)
    assert exc.value.status_code == 403
    assert "Resource not accessible by integration" in str(exc.value)

    calls = fake.calls_to("POST", r"/(orgs|repos)/.*/registration-token")
    assert [c.installation_id for c in calls if c.status == 201] == [ORG_INST, ORG_INST, USER_INST]


async def test_jitconfig(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    fake.add_runner_group(org="acme", group_id=5, name="k8s")
    body = {"name": "r-1", "runner_group_id": 5, "labels": ["self-hosted", "linux", "gpu"]}
    resp = await api.post("/orgs/acme/actions/runners/generate-jitconfig", data=body, oauth_token=token)
    runner = resp["runner"]
    assert runner["name"] == "r-1"
    assert (runner["status"], runner["busy"]) == ("offline", False)
    assert {(x["name"], x["type"]) for x in runner["labels"]} == {
        ("self-hosted", "read-only"),
        ("linux", "read-only"),
        ("gpu", "custom"),
    }
    files = json.loads(base64.b64decode(resp["encoded_jit_config"]))
    settings = json.loads(base64.b64decode(files[".runner"]))
    assert settings["AgentName"] == "r-1"
    assert fake.runner_for_jitconfig(resp["encoded_jit_config"])["id"] == runner["id"]  # type: ignore[index]
    assert [r["name"] for r in fake.runners("org:acme")] == ["r-1"]

    with pytest.raises(BadRequest) as exc:
        await api.post("/orgs/acme/actions/runners/generate-jitconfig", data=body, oauth_token=token)
    assert exc.value.status_code == 409
    for bad in (
        {"name": "r-2", "labels": ["x"]},
        {"name": "r-2", "runner_group_id": 1, "labels": []},
        {"name": "r-2", "runner_group_id": 1, "labels": ["x"] * 101},
    ):
        with pytest.raises(BadRequest) as exc:
            await api.post("/orgs/acme/actions/runners/generate-jitconfig", data=bad, oauth_token=token)
        assert exc.value.status_code == 422
    # Repo scope works too and the same name is fine in another scope.
    repo_body = body | {"runner_group_id": 1}
    resp = await api.post(
        "/repos/acme/app/actions/runners/generate-jitconfig", data=repo_body, oauth_token=token
    )
    assert resp["runner"]["name"] == "r-1"
    assert fake.calls_to("POST", r".*/generate-jitconfig")[0].installation_id == ORG_INST


async def test_runner_list_delete_and_busy(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    for i in range(3):
        fake.register_runner(scope="org:acme", name=f"r{i}", labels=["self-hosted", "linux"])
    listing = await api.getitem("/orgs/acme/actions/runners?per_page=2", oauth_token=token)
    assert listing["total_count"] == 3
    assert len(listing["runners"]) == 2
    pages = api.getiter("/orgs/acme/actions/runners?per_page=2", iterable_key="runners", oauth_token=token)
    names = [r["name"] async for r in pages]
    assert names == ["r0", "r1", "r2"]
    only = await api.getitem("/orgs/acme/actions/runners?name=r1", oauth_token=token)
    assert [r["name"] for r in only["runners"]] == ["r1"]
    # fault injection: a runner slips between the pages of one listing; a lookup by name still finds it
    fake.skip_in_listings("r1")
    skipping = api.getiter("/orgs/acme/actions/runners?per_page=2", iterable_key="runners", oauth_token=token)
    assert [r["name"] async for r in skipping] == ["r0", "r2"]
    again = await api.getitem("/orgs/acme/actions/runners?name=r1", oauth_token=token)
    assert [r["name"] for r in again["runners"]] == ["r1"]
    assert set(only["runners"][0]) >= {"id", "name", "os", "status", "busy", "ephemeral", "labels"}

    job = fake.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["self-hosted", "linux"])
    fake.start_job(job["id"], runner_name="r1")
    r1 = only["runners"][0]["id"]
    assert (await api.getitem(f"/orgs/acme/actions/runners/{r1}", oauth_token=token))["busy"] is True
    with pytest.raises(BadRequest) as exc:
        await api.delete(f"/orgs/acme/actions/runners/{r1}", oauth_token=token)
    assert exc.value.status_code == 422
    assert "is still running a job" in str(exc.value)

    fake.complete_job(job["id"])
    assert "r1" not in [r["name"] for r in fake.runners("org:acme")]  # ephemeral: gone after its job
    with pytest.raises(BadRequest) as exc:
        await api.delete(f"/orgs/acme/actions/runners/{r1}", oauth_token=token)
    assert exc.value.status_code == 404
    r0 = fake.runners("org:acme")[0]["id"]
    await api.delete(f"/orgs/acme/actions/runners/{r0}", oauth_token=token)
    assert fake.calls[-1].status == 204
    assert [r["name"] for r in fake.runners("org:acme")] == ["r2"]

    groups = await api.getitem("/orgs/acme/actions/runner-groups", oauth_token=token)
    assert groups["total_count"] == 1
    default = groups["runner_groups"][0]
    assert (default["id"], default["name"], default["default"]) == (1, "Default", True)


# ------------------------------------------------------------------------------ runs, jobs, payloads
async def test_runs_jobs_and_webhook_payloads(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    job = fake.queue_job(
        installation_id=ORG_INST,
        repository="acme/app",
        labels=["self-hosted", "gpu"],
        head_repository="mallory/app",
        event="pull_request",
        private=False,
    )
    queued = await api.getitem("/repos/acme/app/actions/runs?status=queued", oauth_token=token)
    assert queued["total_count"] == 1
    run = queued["workflow_runs"][0]
    assert (run["id"], run["event"], run["status"]) == (job["run_id"], "pull_request", "queued")
    assert run["head_repository"]["full_name"] == "mallory/app"
    assert run["repository"]["full_name"] == "acme/app"
    got = await api.getitem(f"/repos/acme/app/actions/runs/{job['run_id']}", oauth_token=token)
    assert got["head_repository"]["owner"]["login"] == "mallory"
    jobs = await api.getitem(f"/repos/acme/app/actions/runs/{job['run_id']}/jobs", oauth_token=token)
    assert [j["id"] for j in jobs["jobs"]] == [job["id"]]
    one = await api.getitem(f"/repos/acme/app/actions/jobs/{job['id']}", oauth_token=token)
    assert (one["status"], one["labels"], one["runner_id"]) == ("queued", ["self-hosted", "gpu"], None)
    with pytest.raises(BadRequest) as exc:
        await api.getitem(f"/repos/acme/lib/actions/jobs/{job['id']}", oauth_token=token)
    assert exc.value.status_code == 404

    payload = fake.workflow_job_payload(job["id"], "queued")
    wj = payload["workflow_job"]
    assert payload["action"] == "queued"
    assert wj["status"] == "queued"
    assert wj["runner_id"] is None
    assert wj["runner_name"] is None
    assert wj["conclusion"] is None
    assert payload["repository"]["visibility"] == "public"
    assert payload["repository"]["owner"]["type"] == "Organization"
    assert payload["organization"]["login"] == "acme"
    assert payload["installation"]["id"] == ORG_INST
    for key in ("run_attempt", "head_branch", "workflow_name", "created_at", "steps", "run_url", "html_url"):
        assert key in wj

    fake.register_runner(scope="org:acme", name="gpu-1", labels=["self-hosted", "gpu"])
    fake.start_job(job["id"], runner_name="gpu-1")
    wj = fake.workflow_job_payload(job["id"], "in_progress")["workflow_job"]
    assert (wj["status"], wj["runner_name"], wj["runner_group_id"]) == ("in_progress", "gpu-1", 1)
    with pytest.raises(ValueError, match="conclusion"):
        fake.workflow_job_payload(job["id"], "completed")
    fake.complete_job(job["id"], conclusion="failure")
    wj = fake.workflow_job_payload(job["id"], "completed")["workflow_job"]
    assert (wj["status"], wj["conclusion"]) == ("completed", "failure")
    done = await api.getitem(f"/repos/acme/app/actions/runs/{job['run_id']}", oauth_token=token)
    assert (done["status"], done["conclusion"]) == ("completed", "failure")

    user_job = fake.queue_job(installation_id=USER_INST, repository="alice/dotfiles", labels=["self-hosted"])
    fake.cancel_job(user_job["id"])
    payload = fake.workflow_job_payload(user_job["id"], "completed")
    assert "organization" not in payload
    assert payload["workflow_job"]["conclusion"] == "cancelled"
    assert payload["repository"]["owner"]["type"] == "User"

    # Another installation's token on acme's repo: 404; a token without actions:read: 403.
    other = await _token(api, keys, OTHER_ORG_INST)
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/repos/acme/app/actions/runs", oauth_token=other)
    assert exc.value.status_code == 404
    fake.add_installation(
        installation_id=44,
        account="initech",
        account_type="Organization",
        repositories=["tps"],
        permissions={"metadata": "read"},
    )
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/repos/initech/tps/actions/runs", oauth_token=await _token(api, keys, 44))
    assert exc.value.status_code == 403


# ----------------------------------------------------------------------------------------- webhooks
async def test_deliver_signed_and_failed(fake: FakeGitHub, receiver: Receiver) -> None:
    fake.webhook_url = receiver.url
    job = fake.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["self-hosted"])
    payload = fake.workflow_job_payload(job["id"], "queued")
    delivery = await fake.deliver("workflow_job", payload)
    assert (delivery.status, delivery.status_code, delivery.redelivery) == ("OK", 200, False)
    headers, body = receiver.requests[0]
    event = Event.from_http(headers, body, secret=SECRET)
    assert event.event == "workflow_job"
    assert event.delivery_id == delivery.guid
    assert event.data["workflow_job"]["id"] == job["id"]
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert headers["x-github-hook-installation-target-id"] == str(APP_ID)
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    assert headers["x-hub-signature"].startswith("sha1=")
    assert (delivery.installation_id, delivery.repository_id) == (ORG_INST, payload["repository"]["id"])

    lost = await fake.deliver("workflow_job", payload, fail=True)
    assert len(receiver.requests) == 1
    assert (lost.status, lost.status_code) == ("Invalid HTTP Response: 503", 503)
    timed_out = await fake.deliver("workflow_job", payload, fail=True, failure="timeout")
    assert not timed_out.ok
    assert len(receiver.requests) == 1

    receiver.status = 500
    rejected = await fake.deliver("workflow_job", payload)
    assert (rejected.status, rejected.status_code) == ("Invalid HTTP Response: 500", 500)


async def test_hook_config_and_events(
    api: GitHubAPI, fake: FakeGitHub, keys: Keys, receiver: Receiver
) -> None:
    fake.webhook_url = receiver.url
    config = await api.getitem("/app/hook/config", jwt=_app_jwt(keys))
    # GitHub's webhook-config: the secret masked when set
    assert config == {"content_type": "json", "insecure_ssl": "0", "secret": "********", "url": receiver.url}
    assert (await api.getitem("/app", jwt=_app_jwt(keys)))["events"] == ["workflow_job"]

    fake.webhook_secret = ""  # an App without a secret: left out of the config, deliveries unsigned
    assert "secret" not in await api.getitem("/app/hook/config", jwt=_app_jwt(keys))
    await fake.deliver("ping", {"zen": "z"})
    headers, _ = receiver.requests[-1]
    assert "x-hub-signature-256" not in headers
    assert "x-hub-signature" not in headers


async def test_delivery_listing_and_redelivery(
    api: GitHubAPI, fake: FakeGitHub, keys: Keys, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    fake.webhook_url = receiver.url
    job = fake.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["self-hosted"])
    payload = fake.workflow_job_payload(job["id"], "queued")
    sent = [await fake.deliver("workflow_job", payload, fail=(i == 2)) for i in range(5)]

    async with session.get(
        f"{fake.api_url}/app/hook/deliveries?per_page=2",
        headers={"Authorization": f"Bearer {_app_jwt(keys)}"},
    ) as resp:
        first_page = await resp.json()
        link = resp.headers["Link"]
    assert [d["id"] for d in first_page] == [sent[4].id, sent[3].id]
    assert 'rel="next"' in link
    assert "cursor=" in link
    assert "per_page=2" in link

    listed = [d async for d in api.getiter("/app/hook/deliveries?per_page=2", jwt=_app_jwt(keys))]
    assert [d["id"] for d in listed] == [d.id for d in reversed(sent)]
    failed = [d for d in listed if d["status_code"] != 200]
    assert [d["guid"] for d in failed] == [sent[2].guid]
    item_keys = {"id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code", "event"}
    item_keys |= {"action", "installation_id", "repository_id", "throttled_at"}
    assert set(failed[0]) == item_keys
    assert (failed[0]["event"], failed[0]["action"], failed[0]["installation_id"]) == (
        "workflow_job",
        "queued",
        ORG_INST,
    )

    detail = await api.getitem(f"/app/hook/deliveries/{sent[2].id}", jwt=_app_jwt(keys))
    assert detail["request"]["payload"]["workflow_job"]["id"] == job["id"]
    assert detail["request"]["headers"]["X-GitHub-Delivery"] == sent[2].guid

    before = len(receiver.requests)
    await api.post(f"/app/hook/deliveries/{sent[2].id}/attempts", data=b"", jwt=_app_jwt(keys))
    assert fake.calls[-1].status == 202
    await fake.drain()
    assert len(receiver.requests) == before + 1
    headers, body = receiver.requests[-1]
    assert headers["x-github-delivery"] == sent[2].guid
    assert Event.from_http(headers, body, secret=SECRET).data == payload
    redelivered = fake.deliveries[-1]
    assert (redelivered.redelivery, redelivered.guid, redelivered.status) == (True, sent[2].guid, "OK")
    with pytest.raises(BadRequest) as exc:
        await api.post("/app/hook/deliveries/1/attempts", data=b"", jwt=_app_jwt(keys))
    assert exc.value.status_code == 404


# ---------------------------------------------------------------------------------- fault injection
async def test_fail_next_and_error_rate(api: GitHubAPI, fake: FakeGitHub, keys: Keys) -> None:
    token = await _token(api, keys, ORG_INST)
    fake.fail_next(2, status=502, path_contains="/installation/")
    for _ in range(2):
        with pytest.raises(GitHubBroken):
            await api.getitem("/installation/repositories", oauth_token=token)
    await api.getitem("/installation/repositories", oauth_token=token)
    fake.fail_next(1, status=429, headers={"retry-after": "7"})
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert exc.value.status_code == 429
    assert exc.value.headers["retry-after"] == "7"
    statuses = [c.status for c in fake.calls_to("GET", "/installation/repositories")]
    assert statuses == [502, 502, 200, 429]

    fake.error_rate = 1.0
    with pytest.raises(GitHubBroken) as broken:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert broken.value.status_code in (502, 503)
    fake.error_rate = 0.0

    fake.secondary_limit_rate = 1.0
    with pytest.raises(BadRequest) as exc:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert not isinstance(exc.value, RateLimitExceeded)
    assert exc.value.status_code == 403
    assert exc.value.headers["retry-after"] == "1"
    assert "secondary rate limit" in str(exc.value)
    fake.secondary_limit_rate = 0.0


async def test_error_rate_is_seeded(keys: Keys, session: aiohttp.ClientSession) -> None:
    async def pattern(seed: int) -> list[int]:
        gh = FakeGitHub(app_id=APP_ID, public_key_pem=keys.public_pem, webhook_secret=SECRET, seed=seed)
        url = await gh.start()
        gh.error_rate = 0.5
        try:
            for _ in range(12):
                async with session.get(f"{url}/rate_limit") as resp:
                    await resp.read()
            return [c.status for c in gh.calls]
        finally:
            await gh.close()

    first = await pattern(3)
    assert first == await pattern(3)
    assert set(first) == {200, 502, 503}


async def test_primary_rate_limit(api: GitHubAPI, fake: FakeGitHub, keys: Keys, clock: Clock) -> None:
    token = await _token(api, keys, ORG_INST)
    fake.set_rate_limit(installation_id=ORG_INST, remaining=1, reset_in=120)
    await api.getitem("/installation/repositories", oauth_token=token)
    assert api.rate_limit is not None
    assert api.rate_limit.remaining == 0
    with pytest.raises(RateLimitExceeded) as exc:
        await api.getitem("/installation/repositories", oauth_token=token)
    assert exc.value.headers["x-ratelimit-remaining"] == "0"
    assert "API rate limit exceeded" in str(exc.value)
    # Another installation has its own budget.
    other = await _token(api, keys, USER_INST)
    await api.getitem("/installation/repositories", oauth_token=other)
    limits = await api.getitem("/rate_limit", oauth_token=token)
    assert limits["resources"]["core"]["remaining"] == 0
    clock.now += 121
    await api.getitem("/installation/repositories", oauth_token=token)
    assert api.rate_limit.remaining == 4999


# ------------------------------------------------------------------------------------- misc routes
async def test_unknown_route_and_manifest(fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{fake.api_url}/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["message"] == "Not Found"
    manifest = {
        "name": "My Runner App",
        "url": "https://example.com",
        "hook_attributes": {"url": "https://example.com/hook"},
        "default_permissions": {"administration": "write"},
        "default_events": ["workflow_job"],
    }
    code = fake.create_manifest_code(manifest)
    async with session.post(f"{fake.api_url}/app-manifests/{code}/conversions") as resp:
        assert resp.status == 201
        app = await resp.json()
    assert app["slug"] == "my-runner-app"
    assert app["pem"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert app["webhook_secret"]
    assert app["client_secret"]
    assert app["permissions"] == {"administration": "write"}
    assert fake.manifests[code] == manifest
    async with session.post(f"{fake.api_url}/app-manifests/{code}/conversions") as resp:
        assert resp.status == 404


async def test_ghes_base_path(keys: Keys, session: aiohttp.ClientSession) -> None:
    gh = FakeGitHub(app_id=APP_ID, public_key_pem=keys.public_pem, webhook_secret=SECRET, base_path="/api/v3")
    url = await gh.start()
    try:
        _populate(gh)
        assert url.endswith("/api/v3")
        assert gh.api_url == url
        api = GitHubAPI(session, "t", base_url=url)
        token = await _token(api, keys, ORG_INST)
        reg = await api.post("/orgs/acme/actions/runners/registration-token", data=b"", oauth_token=token)
        assert reg["token"]
        assert [c.path for c in gh.calls] == [
            f"/app/installations/{ORG_INST}/access_tokens",
            "/orgs/acme/actions/runners/registration-token",
        ]
        root = url.removesuffix("/api/v3")
        async with session.get(f"{root}/app", headers={"Authorization": f"Bearer {_app_jwt(keys)}"}) as resp:
            assert resp.status == 404
        job = gh.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["x"])
        assert job["url"].startswith(url + "/repos/acme/app/")
    finally:
        await gh.close()


async def test_etag_and_if_none_match_answer_304_without_counting_it(
    session: aiohttp.ClientSession, api: GitHubAPI, fake: FakeGitHub, keys: Keys
) -> None:
    token = await _token(api, keys, ORG_INST)
    fake.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["self-hosted"])
    url = f"{fake.api_url}/repos/acme/app/actions/runs?status=queued"
    auth = {"Authorization": f"token {token}"}

    async def get(**headers: str) -> tuple[int, dict[str, str], bytes]:
        async with session.get(url, headers={**auth, **headers}) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()

    status, first, body = await get()
    assert status == 200
    etag = first["etag"]
    assert etag.startswith('W/"')
    assert json.loads(body)["total_count"] == 1

    status, again, body = await get(**{"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert again["etag"] == etag
    assert again["x-ratelimit-remaining"] == first["x-ratelimit-remaining"]  # a 304 is not counted
    assert again["x-ratelimit-used"] == first["x-ratelimit-used"]
    assert [c.status for c in fake.not_modified()] == [304]
    assert (await get(**{"If-None-Match": etag.removeprefix("W/")}))[0] == 304  # weak comparison
    assert (await get(**{"If-None-Match": 'W/"other"'}))[0] == 200  # another version: counted in full

    # the listing changes: the old tag no longer matches, the answer carries a new one
    fake.queue_job(installation_id=ORG_INST, repository="acme/app", labels=["self-hosted"])
    status, changed, body = await get(**{"If-None-Match": etag})
    assert status == 200
    assert changed["etag"] != etag
    assert json.loads(body)["total_count"] == 2
    assert int(changed["x-ratelimit-remaining"]) == int(first["x-ratelimit-remaining"]) - 2


async def test_gidgethub_cache_serves_304s_from_the_fake(
    session: aiohttp.ClientSession, fake: FakeGitHub, keys: Keys
) -> None:
    cached = GitHubAPI(session, "test", base_url=fake.api_url, cache={})
    token = await _token(cached, keys, ORG_INST)
    for i in range(2):
        fake.register_runner(scope="org:acme", name=f"r{i}", labels=["self-hosted"])
    first = await cached.getitem("/orgs/acme/actions/runners", oauth_token=token)
    second = await cached.getitem("/orgs/acme/actions/runners", oauth_token=token)
    assert second == first
    assert [c.status for c in fake.calls_to("GET", r"/orgs/acme/actions/runners")] == [200, 304]
