"""``ghapp send-test-webhook``: send one correctly signed delivery to a running ghapp and report its answer,
so an operator can prove the webhook secret and the route without GitHub.

The ``workflow_job`` delivery has the action ``waiting`` (a job waiting for an environment's protection
rules): ghapp verifies, parses and logs it like any job, and starts nothing.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp

from ghapp.config import Settings
from ghapp.errors import ConfigError
from ghapp.planner import match_pool

Event = Literal["ping", "workflow_job"]
EVENTS: Final = ("ping", "workflow_job")
SAMPLE_PAYLOAD: Final = Path(__file__).with_name("data") / "sample-workflow-job.json"
TEST_ACTION: Final = "waiting"
"""The ``workflow_job`` action sent: handled and logged by ghapp, never launches a runner."""
USER_AGENT: Final = "ghapp-send-test-webhook"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed webhook delivery, ready to POST."""

    event: Event
    guid: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# -- pure ----------------------------------------------------------------------------------------------


def default_url(settings: Settings) -> str:
    """The local ghapp's webhook: GHAPP_HOST (loopback when it listens on every address) and GHAPP_PORT."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/webhook"


def payload(event: Event, *, labels: Sequence[str]) -> dict[str, Any]:
    """The body GitHub would send: a ``ping`` or a ``workflow_job`` (action ``waiting``) with `labels`."""
    if event == "ping":
        return {
            "zen": "Design for failure.",
            "hook_id": 0,
            "hook": {"type": "App", "events": ["workflow_job"]},
        }
    sample: dict[str, Any] = json.loads(SAMPLE_PAYLOAD.read_text(encoding="utf-8"))
    body = copy.deepcopy(sample)
    body["action"] = TEST_ACTION
    body["workflow_job"]["status"] = TEST_ACTION
    body["workflow_job"]["labels"] = list(labels)
    return body


def signature(data: bytes, *, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for `data`: ``sha256=`` HMAC-SHA256 hex digest."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def signed(event: Event, body: dict[str, Any], *, secret: str, guid: str | None = None) -> Delivery:
    """`body` as GitHub sends it: JSON, ``X-Hub-Signature-256`` (HMAC-SHA256 with `secret`), event and
    delivery headers."""
    data = json.dumps(body, separators=(",", ":")).encode()
    guid = guid or str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid,
        "X-Hub-Signature-256": signature(data, secret=secret),
    }
    return Delivery(event=event, guid=guid, body=data, headers=headers)


def describe(delivery: Delivery, *, url: str, labels: Sequence[str], settings: Settings) -> list[str]:
    """What is about to be sent, for people (never the secret)."""
    lines = [f"POST {url}: {delivery.event} delivery {delivery.guid}, signed with GHAPP_WEBHOOK_SECRET"]
    if delivery.event == "workflow_job":
        pool = match_pool(labels, settings.pools)
        where = f"pool {pool.name}" if pool else "no pool (a queued job with them would get no runner)"
        lines.append(
            f"workflow_job action {TEST_ACTION} with labels {list(labels)}: ghapp logs it and starts "
            f"nothing; in {settings.pools_file} these labels match {where}"
        )
    return lines


def verdict(answer: Answer) -> str:
    """The answer in words, with what to do when it is not a 2xx."""
    text = f"{answer.status} {answer.reason}: {answer.body.strip()}"
    if answer.ok:
        return text + " — the route and the secret work"
    if answer.status == 401:
        return (
            text + " — the signature was refused: GHAPP_WEBHOOK_SECRET here differs from the running ghapp's"
        )
    if answer.status == 404:
        return text + " — nothing serves POST there: check the URL's path (/webhook) and the Ingress / route"
    return text


# -- I/O -----------------------------------------------------------------------------------------------


async def send(delivery: Delivery, *, url: str, seconds: float = 15.0) -> Answer:
    """POST `delivery` to `url`; a connection failure is a `ConfigError` naming the URL."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.post(
                url, data=delivery.body, headers=delivery.headers, allow_redirects=False
            ) as response,
        ):
            return Answer(response.status, response.reason or "", (await response.text())[:2000])
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ConfigError(f"--url: cannot deliver to {url}: {reason}") from None
