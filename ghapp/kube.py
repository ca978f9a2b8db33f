"""Kubernetes I/O for runner Jobs and Secrets: idempotent create, list, watch, delete — plain dicts.

Bodies and answers are plain JSON through `KubeTransport`: the generated models' (de)serialisation is the
slow part of kubernetes-asyncio, and ghapp needs none of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp

from ghapp.clock import Clock, parse_timestamp
from ghapp.errors import KubernetesError
from ghapp.kubehttp import KubeTransport
from ghapp.manifests import RUNNER_SELECTOR
from ghapp.metrics import Metrics
from ghapp.retry import Backoff

log = logging.getLogger(__name__)

Resource = Literal["jobs", "secrets", "leases", "pods", "events", "serviceaccounts"]
ClusterResource = Literal["selfsubjectaccessreviews"]
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Answer:
    """An API server's answer: status and parsed JSON body."""

    status: int
    body: dict[str, Any]
    warnings: tuple[str, ...] = ()
    """The API server's ``Warning`` headers (e.g. what a pod would violate of its namespace's PodSecurity)."""

    @property
    def reason(self) -> str:
        return str(self.body.get("reason") or self.body.get("message") or self.status)


COLLECTIONS: Final[dict[str, str]] = {
    "jobs": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "secrets": "/api/v1/namespaces/{namespace}/secrets",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
    "pods": "/api/v1/namespaces/{namespace}/pods",
    "events": "/api/v1/namespaces/{namespace}/events",
    "serviceaccounts": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "selfsubjectaccessreviews": "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
}
WATCH_SECONDS: Final = 240
"""Server-side timeout of one watch request; the watch is simply renewed after it."""
REACHABLE_PROBE: Final = "ghapp-reachable"
"""The Job `KubeClient.reachable` asks for (runner Jobs are named ``<prefix>-<id>``: none is named so)."""
LIST_PAGE: Final = 500
"""Objects per page of a list (``limit``); the rest follows with ``continue``, so no answer is huge."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch: ADDED, MODIFIED or DELETED, and the object after it."""

    type: str
    object: dict[str, Any]


class Expired(KubernetesError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeClient:
    """Runner Jobs and Secrets, and the reconciler's Lease, through a caller-owned `KubeTransport`.

    Objects live in `namespace` unless a call names another one (a pool may have its own namespace);
    creations take the namespace from the manifest.
    """

    def __init__(
        self,
        *,
        http: KubeTransport,
        namespace: str,
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff | None = None,
    ) -> None:
        self.namespace = namespace
        self._http = http
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
        self,
        resource: Resource,
        *,
        selector: str = RUNNER_SELECTOR,
        fields: str = "",
        namespace: str | None = None,
        page_size: int = LIST_PAGE,
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects matching `selector` and the field selector `fields` (all pages of `page_size`,
        following ``continue``), and the list's resourceVersion (to watch from)."""
        items: list[dict[str, Any]] = []
        query = _selectors(selector, fields)
        query["limit"] = page_size
        while True:
            answer = await self._call("list", resource, query=query, accept=(200,), namespace=namespace)
            items.extend(answer.body.get("items") or [])
            metadata = answer.body.get("metadata") or {}
            if not metadata.get("continue"):
                return items, str(metadata.get("resourceVersion", ""))
            query = {**query, "continue": metadata["continue"]}

    async def delete(
        self, resource: Resource, name: str, *, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        """Delete an object and (Background propagation) what it owns; False if it was already gone.

        With `uid`, only that very object is deleted (a precondition): one made again under the same name
        since the caller looked is left alone, and the answer is False.
        """
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        answer = await self._call(
            "delete",
            resource,
            name=name,
            body=body,
            accept=(200, 202, 404, 409) if uid else (200, 202, 404),
            namespace=namespace,
        )
        return answer.status not in (404, 409)

    async def create(self, resource: Resource, body: dict[str, Any]) -> Answer:
        """Create any object (in the namespace its manifest names, else the client's); the answer is 201
        or 409 (exists), anything else raises."""
        namespace = body["metadata"].get("namespace")
        return await self._call("create", resource, body=body, accept=(201, 409), namespace=namespace)

    async def dry_run(self, resource: Resource, body: dict[str, Any]) -> Answer:
        """Ask the API server whether it would create `body` (``dryRun=All``: validation, admission, quota
        and webhooks run, nothing is stored). 201 is yes; a refusal (4xx) is answered, not raised."""
        return await self._call(
            "create",
            resource,
            body=body,
            query={"dryRun": "All"},
            accept=(201, 400, 403, 404, 409, 422),
            namespace=body["metadata"].get("namespace"),
        )

    async def record_event(self, body: dict[str, Any]) -> None:
        """Create a (core/v1) Event; it is informational, so a refusal is logged, not raised."""
        try:
            await self._call(
                "create", "events", body=body, accept=(201,), namespace=body["metadata"]["namespace"]
            )
        except KubernetesError as exc:
            log.warning("could not record a Kubernetes Event: %s", exc)

    async def replace(self, resource: Resource, body: dict[str, Any]) -> Answer:
        """Replace an object (optimistic: 409 when its resourceVersion is stale); 200 or 409."""
        name, namespace = body["metadata"]["name"], body["metadata"].get("namespace")
        return await self._call(
            "update", resource, name=name, body=body, accept=(200, 409), namespace=namespace
        )

    async def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        selector: str = RUNNER_SELECTOR,
        fields: str = "",
        timeout_seconds: int = WATCH_SECONDS,
    ) -> AsyncIterator[WatchEvent]:
        """Changes to the objects matching `selector` and `fields` (default: ghapp's runner objects) after
        `resource_version`, until the server ends the watch.

        Raises `Expired` when the version is too old, `KubernetesError` when the stream breaks.
        """
        path = COLLECTIONS[resource].format(namespace=namespace or self.namespace)
        query: dict[str, str | int] = {
            **_selectors(selector, fields),
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        try:
            response = await self._http.request(
                "GET",
                path,
                query=query,
                limits=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30),
                collection=True,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._metrics.kubernetes_requests.labels("watch", resource, "0").inc()
            raise KubernetesError(f"Kubernetes watch {resource} failed: {type(exc).__name__}") from None
        self._metrics.kubernetes_requests.labels("watch", resource, str(response.status)).inc()
        try:
            if response.status == 410:
                raise Expired("watch expired", status=410)
            if response.status != 200:
                raise KubernetesError(
                    f"Kubernetes watch {resource} failed: HTTP {response.status}", status=response.status
                )
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise KubernetesError(
                        f"Kubernetes watch {resource} broke: {type(exc).__name__}"
                    ) from None
                if not line:
                    return
                event = _json(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired("watch expired", status=410)
                    raise KubernetesError(
                        f"Kubernetes watch {resource} error: {obj.get('message')}", status=obj.get("code")
                    )
                if isinstance(kind, str):
                    yield WatchEvent(kind, obj)
        finally:
            response.release()

    async def reachable(self) -> bool:
        """True if the API server answers a cheap, permitted request: a GET of a runner Job by a name no
        runner has (404), never a list, which an API server busy with large collections may be slow to
        answer while it still takes writes."""
        try:
            await self._call("get", "jobs", name=REACHABLE_PROBE, accept=(200, 404), attempts=1)
        except KubernetesError:
            return False
        return True

    async def write_secret(self, body: dict[str, Any], *, replace: bool, dry_run: bool = False) -> bool:
        """Create a Secret, or with `replace` overwrite the one of that name; True if it was new.

        Without `replace` an existing Secret is an error (409). `dry_run` checks access, namespace and
        name without writing anything.
        """
        query: dict[str, str | int] = {"dryRun": "All"} if dry_run else {}
        answer = await self._call("create", "secrets", body=body, query=query, accept=(201, 409))
        if answer.status == 201:
            return True
        name = body["metadata"]["name"]
        if not replace:
            raise KubernetesError(f"Secret {name} exists already", status=409)
        await self._call("update", "secrets", name=name, body=body, query=query, accept=(200,))
        return False

    async def may(
        self, verb: str, resource: str, *, group: str = "", namespace: str | None = None
    ) -> tuple[bool, str]:
        """Whether our credentials may `verb` `resource` (of API `group`) in `namespace`, and why not.

        Asks the API server itself (a SelfSubjectAccessReview, which every authenticated user may create).
        """
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace or self.namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                }
            },
        }
        answer = await self._call("create", "selfsubjectaccessreviews", body=review, accept=(200, 201))
        status = answer.body.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")

    # -- the machinery -------------------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        resource: Resource | ClusterResource,
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
                response = await self._http.request(
                    method, path, query=query, body=body, collection=verb == "list"
                )
                try:
                    raw = await response.read()
                finally:
                    response.release()
                answer = Answer(response.status, _json(raw), tuple(response.headers.getall("Warning", ())))
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


def _selectors(selector: str, fields: str) -> dict[str, str | int]:
    query: dict[str, str | int] = {"labelSelector": selector} if selector else {}
    if fields:
        query["fieldSelector"] = fields
    return query


def age(metadata: dict[str, Any], now: float) -> float:
    """Seconds since an object's ``creationTimestamp`` (0 if it has none: too young to judge)."""
    created = metadata.get("creationTimestamp")
    try:
        return now - parse_timestamp(created) if isinstance(created, str) else 0.0
    except ValueError:
        return 0.0


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"items": value}
