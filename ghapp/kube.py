"""Kubernetes I/O for runner Jobs and Secrets: idempotent create, list, delete — plain dicts, no models.

Bodies go out as dicts and answers are read with ``_preload_content=False``: the generated models'
(de)serialisation is the slow part of kubernetes-asyncio and ghapp needs none of it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
from kubernetes_asyncio import client as k8s

from ghapp.clock import Clock
from ghapp.errors import KubernetesError
from ghapp.manifests import RUNNER_SELECTOR
from ghapp.metrics import Metrics
from ghapp.retry import Backoff

log = logging.getLogger(__name__)

Resource = Literal["jobs", "secrets", "pods"]
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Answer:
    """An API server's answer: status and parsed JSON body."""

    status: int
    body: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.body.get("reason") or self.body.get("message") or self.status)


COLLECTIONS: Final[dict[str, str]] = {
    "jobs": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "secrets": "/api/v1/namespaces/{namespace}/secrets",
    "pods": "/api/v1/namespaces/{namespace}/pods",
}


class KubeClient:
    """Runner Jobs, Secrets and Pods, through a caller-owned `ApiClient`.

    Objects live in `namespace` unless a call names another one (a pool may have its own namespace);
    creations take the namespace from the manifest.
    """

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str,
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff | None = None,
    ) -> None:
        self.namespace = namespace
        self._api = api_client
        self._clock = clock
        self._metrics = metrics
        self._backoff = backoff or Backoff()

    # -- runner objects ----------------------------------------------------------------------------------

    async def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a Job; if it exists already, return the existing one. The bool says whether it was new."""
        namespace = body["metadata"].get("namespace")
        answer = await self._call("create", "jobs", body=body, accept=(201, 409), namespace=namespace)
        if answer.status == 409:
            name = body["metadata"]["name"]
            existing = await self.get("jobs", name, namespace=namespace)
            if existing is None:  # deleted between our create and get: let the caller try again
                raise KubernetesError(f"Job {name} vanished while being created", status=409)
            return existing, False
        return answer.body, True

    async def create_secret(self, body: dict[str, Any]) -> bool:
        """Create a Secret; True if it was new, False if one of that name existed already."""
        namespace = body["metadata"].get("namespace")
        answer = await self._call("create", "secrets", body=body, accept=(201, 409), namespace=namespace)
        return answer.status == 201

    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """One object by name (in `namespace`, default: the client's), or None."""
        answer = await self._call("get", resource, name=name, accept=(200, 404), namespace=namespace)
        return answer.body if answer.status == 200 else None

    async def list(
        self, resource: Resource, *, selector: str = RUNNER_SELECTOR
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects matching `selector` (all pages), and the list's resourceVersion (to watch from)."""
        items: list[dict[str, Any]] = []
        query: dict[str, str | int] = {"labelSelector": selector, "limit": 500}
        while True:
            answer = await self._call("list", resource, query=query, accept=(200,))
            items.extend(answer.body.get("items") or [])
            metadata = answer.body.get("metadata") or {}
            if not metadata.get("continue"):
                return items, str(metadata.get("resourceVersion", ""))
            query = {**query, "continue": metadata["continue"]}

    async def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> bool:
        """Delete an object and (Background propagation) what it owns; False if it was already gone."""
        answer = await self._call(
            "delete",
            resource,
            name=name,
            body={"propagationPolicy": "Background"},
            accept=(200, 202, 404),
            namespace=namespace,
        )
        return answer.status != 404

    async def reachable(self) -> bool:
        """True if the API server answers a cheap, permitted request (a one-item list of runner Jobs)."""
        try:
            await self._call(
                "list",
                "jobs",
                query={"labelSelector": RUNNER_SELECTOR, "limit": 1},
                accept=(200,),
                attempts=1,
            )
        except KubernetesError:
            return False
        return True

    # -- the machinery -------------------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        resource: Resource,
        *,
        accept: tuple[int, ...],
        name: str | None = None,
        query: dict[str, str | int] | None = None,
        body: dict[str, Any] | None = None,
        attempts: int | None = None,
        namespace: str | None = None,
    ) -> Answer:
        """Send one request, retrying connection errors and 429/5xx with backoff; other answers are final."""
        collection = COLLECTIONS[resource].format(namespace=namespace or self.namespace)
        path = collection + (f"/{name}" if name else "")
        method = _METHODS[verb]
        limit = attempts or self._backoff.attempts
        attempt = 0
        while True:
            attempt += 1
            answer: Answer | None = None
            try:
                response = await self._api.call_api(
                    path,
                    method,
                    query_params=list((query or {}).items()),
                    header_params={"Accept": "application/json", "Content-Type": "application/json"},
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                )
                try:
                    raw = await response.read()
                finally:
                    response.release()
                answer = Answer(response.status, _json(raw))
                failure = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = type(exc).__name__
            status = answer.status if answer else 0
            self._metrics.kubernetes_requests.labels(verb, resource, str(status)).inc()
            if answer is not None and answer.status in accept:
                return answer
            if (answer is not None and answer.status not in RETRYABLE) or attempt >= limit:
                reason = answer.reason if answer is not None else failure
                raise KubernetesError(f"Kubernetes {verb} {resource} failed: {reason}", status=status or None)
            log.info(
                "Kubernetes call failed; retrying",
                extra={"verb": verb, "resource": resource, "failure": failure, "attempt": attempt},
            )
            await self._clock.sleep(self._backoff.delay(attempt))


_METHODS: Final = {
    "create": "POST",
    "get": "GET",
    "list": "GET",
    "delete": "DELETE",
    "update": "PUT",
    "patch": "PATCH",
}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"items": value}
