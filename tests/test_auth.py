"""App JWTs and the token caches, against the fake GitHub over real HTTP, with a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest

from ghapp.auth import AppAuth
from ghapp.clock import ManualClock
from ghapp.github import REGISTRATION_TOKEN_MARGIN, GitHubClient
from ghapp.metrics import Metrics
from ghapp.planner import RunnerScope
from ghapp.sensitive import Secret

from .conftest import APP_ID, ORG_INSTALLATION, USER_INSTALLATION, WEBHOOK_SECRET
from .fakes.github import FakeGitHub
from .keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeGitHub]:
    github = FakeGitHub(
        app_id=APP_ID,
        public_key_pem=PUBLIC_KEY_PEM,
        webhook_secret=WEBHOOK_SECRET,
        clock=clock.now,
        installation_token_length=600,  # tokens are opaque: never assume a length
    )
    github.add_installation(
        installation_id=ORG_INSTALLATION, account="acme", account_type="Organization", repositories=["webapp"]
    )
    github.add_installation(
        installation_id=USER_INSTALLATION, account="alice", account_type="User", repositories=["tools"]
    )
    await github.start()
    yield github
    await github.close()


@pytest.fixture
async def client(fake: FakeGitHub, clock: ManualClock) -> AsyncIterator[GitHubClient]:
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(app_id=str(APP_ID), private_key_pem=Secret(PRIVATE_KEY_PEM), clock=clock)
        yield GitHubClient(
            session=session, api_url=fake.api_url, app_auth=auth, clock=clock, metrics=Metrics()
        )


def test_jwt_claims(clock: ManualClock) -> None:
    auth = AppAuth(app_id=str(APP_ID), private_key_pem=Secret(PRIVATE_KEY_PEM), clock=clock)
    token = auth.jwt().reveal()
    claims = jwt.decode(
        token, PUBLIC_KEY_PEM, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
    )
    now = int(clock.now())
    assert claims["iss"] == str(APP_ID)
    assert claims["iat"] == now - 60
    assert now < claims["exp"] <= now + 600
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_jwt_is_reused_then_renewed(clock: ManualClock) -> None:
    auth = AppAuth(app_id=str(APP_ID), private_key_pem=Secret(PRIVATE_KEY_PEM), clock=clock)
    first = auth.jwt()
    clock.advance(60)
    assert auth.jwt() == first
    clock.advance(480)  # within a minute of exp
    assert auth.jwt() != first


async def test_concurrent_callers_share_one_mint(client: GitHubClient, fake: FakeGitHub) -> None:
    tokens = await asyncio.gather(*(client.tokens.get(ORG_INSTALLATION) for _ in range(25)))
    assert len({t.reveal() for t in tokens}) == 1
    assert len(tokens[0].reveal()) == 600
    assert len(fake.calls_to("POST", rf"/app/installations/{ORG_INSTALLATION}/access_tokens")) == 1


async def test_token_is_cached_then_refreshed_before_expiry(
    client: GitHubClient, fake: FakeGitHub, clock: ManualClock
) -> None:
    first = await client.tokens.get(ORG_INSTALLATION)
    clock.advance(3600 - 301)  # still more than the refresh margin left
    assert await client.tokens.get(ORG_INSTALLATION) == first
    clock.advance(2)  # now inside the margin: refreshed while still valid
    second = await client.tokens.get(ORG_INSTALLATION)
    assert second != first
    assert len(fake.calls_to("POST", rf"/app/installations/{ORG_INSTALLATION}/access_tokens")) == 2


async def test_tokens_are_per_installation(client: GitHubClient, fake: FakeGitHub) -> None:
    acme = await client.tokens.get(ORG_INSTALLATION)
    alice = await client.tokens.get(USER_INSTALLATION)
    assert acme != alice
    assert acme.reveal() in fake.tokens_for(ORG_INSTALLATION)
    assert alice.reveal() in fake.tokens_for(USER_INSTALLATION)


async def test_failed_mint_is_not_cached(client: GitHubClient, fake: FakeGitHub) -> None:
    fake.fail_next(1, status=404, path_contains="access_tokens")
    with pytest.raises(Exception, match="404"):
        await client.tokens.get(ORG_INSTALLATION)
    assert (await client.tokens.get(ORG_INSTALLATION)).reveal() in fake.tokens_for(ORG_INSTALLATION)


async def test_registration_token_reused_only_while_45_minutes_of_it_remain(
    client: GitHubClient, fake: FakeGitHub, clock: ManualClock
) -> None:
    assert REGISTRATION_TOKEN_MARGIN == 45 * 60
    scope = RunnerScope(kind="org", owner="acme")
    first = await client.registration_token(installation_id=ORG_INSTALLATION, scope=scope)
    clock.advance(15 * 60)  # the token lives an hour: exactly 45 minutes of it remain
    assert await client.registration_token(installation_id=ORG_INSTALLATION, scope=scope) == first
    clock.advance(1)  # a second less: a pod that starts slowly could outlive it
    second = await client.registration_token(installation_id=ORG_INSTALLATION, scope=scope)
    assert second != first
    assert len(fake.calls_to("POST", r"/orgs/acme/actions/runners/registration-token")) == 2
    clock.advance(15 * 60)  # the new token is reused the same way
    assert await client.registration_token(installation_id=ORG_INSTALLATION, scope=scope) == second
