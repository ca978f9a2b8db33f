"""HTTP intake of GitHub webhooks: size limit, signature check, a fast 2xx, work after the answer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from gidgethub import BadRequest, ValidationFailure, sansio

from ghapp import logs
from ghapp.metrics import Metrics

log = logging.getLogger(__name__)

REQUIRED_HEADERS: Final = ("x-github-event", "x-github-delivery")
JSON_TYPES: Final = frozenset({"application/json", "application/x-www-form-urlencoded"})
HANDLED_EVENTS: Final = frozenset({"workflow_job", "installation", "installation_repositories"})
SIGNATURE_HEADER: Final = "x-hub-signature-256"
SIGNATURE_PREFIX: Final = "sha256="
"""Only HMAC-SHA256 is accepted; gidgethub alone would fall back to SHA-1 (``X-Hub-Signature``)."""


def _sha256_only(headers: dict[str, str]) -> dict[str, str] | None:
    """`headers` with no signature but ``X-Hub-Signature-256: sha256=…``; None if that one is missing."""
    if not headers.get(SIGNATURE_HEADER, "").startswith(SIGNATURE_PREFIX):
        return None
    return {key: value for key, value in headers.items() if key != "x-hub-signature"}


def _refuse(status: int, reason: str, *, metrics: Metrics) -> web.Response:
    # The event name is not trusted before the signature is: refusals are counted under "unverified".
    metrics.webhook_deliveries.labels("unverified", "", reason).inc()
    log.warning("webhook refused: %s", reason, extra={"status": status})
    return web.json_response({"error": reason}, status=status)


def webhook_handler(
    *,
    secret: str,
    max_body_bytes: int,
    metrics: Metrics,
    spawn: Callable[[sansio.Event, float], None],
    clock_now: Callable[[], float],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``POST /webhook`` handler. `spawn` schedules the event's processing after the answer."""

    async def handle(request: web.Request) -> web.Response:
        received_at = clock_now()
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _refuse(413, "body too large", metrics=metrics)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, "body too large", metrics=metrics)
        all_headers = {key.lower(): value for key, value in request.headers.items()}
        with logs.bound(delivery_id=all_headers.get("x-github-delivery")):
            headers = _sha256_only(all_headers)
            if headers is None:
                return _refuse(401, "no sha256= X-Hub-Signature-256 (SHA-1 is not accepted)", metrics=metrics)
            try:
                event = sansio.Event.from_http(headers, body, secret=secret)
            except ValidationFailure:
                return _refuse(401, "bad or missing signature", metrics=metrics)
            except BadRequest:
                # gidgethub says 415 both for another content type and for a JSON body it cannot decode
                if headers.get("content-type", "").split(";")[0].strip() in JSON_TYPES:
                    return _refuse(400, "body is not valid JSON", metrics=metrics)
                return _refuse(415, "content type must be application/json", metrics=metrics)
            except KeyError:
                return _refuse(400, "missing X-GitHub-Event or X-GitHub-Delivery header", metrics=metrics)
            if not all(headers.get(name) for name in REQUIRED_HEADERS):
                return _refuse(400, "missing X-GitHub-Event or X-GitHub-Delivery header", metrics=metrics)
            if not isinstance(event.data, dict):
                return _refuse(400, "body is not a JSON object", metrics=metrics)
            action = str(event.data.get("action", ""))[:64]
            if event.event == "ping":
                metrics.webhook_deliveries.labels("ping", "", "pong").inc()
                log.info("ping received", extra={"hook_id": headers.get("x-github-hook-id")})
                return web.json_response({"msg": "pong"})
            if event.event not in HANDLED_EVENTS:
                metrics.webhook_deliveries.labels(event.event, action, "ignored").inc()
                log.info("event ignored: ghapp does not handle it", extra={"event": event.event})
                return web.json_response({"msg": "ignored"}, status=202)
            metrics.webhook_deliveries.labels(event.event, action, "accepted").inc()
            spawn(event, received_at)
            return web.json_response({"msg": "accepted"}, status=202)

    return handle
