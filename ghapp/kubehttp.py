"""HTTP to the Kubernetes API server, on a session of ghapp's own, from a loaded client `Configuration`.

kubernetes-asyncio's own session is made with ``trust_env=True``, which makes aiohttp look up proxy
variables and ``~/.netrc`` on every request — measured as half of ghapp's CPU in a burst. This transport
reads the same configuration (server, CA, client certificate, bearer token with its refresh hook, the
kubeconfig's ``proxy-url``) once, and sends JSON bytes without the generated models.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
from kubernetes_asyncio import client as k8s

CONNECTIONS = 64
"""Most connections to the API server at once for short requests (gets and writes: launches, renewals of the
reconciler's Lease; at least: ghapp allows its launch concurrency + `CONNECTIONS_SPARE`). Lists and watches
have connections of their own, as many as they need: a watch holds its connection for minutes, and a list
of thousands of objects may be slow, and neither must leave a renewal or a launch waiting for a connection
(HTTP/1.1: one request at a time on each)."""
CONNECTIONS_SPARE = 16
"""Short-request connections beyond the launches' (Lease renewals, the reconciler's gets and deletes)."""


class KubeTransport:
    """Sends requests to the API server; owns its aiohttp session (close it, or use ``async with``)."""

    def __init__(self, configuration: k8s.Configuration, *, connections: int = CONNECTIONS) -> None:
        self._configuration = configuration
        self._base = str(configuration.host).rstrip("/")
        self._proxy: str | None = configuration.proxy or None
        self._server_hostname: str | None = configuration.tls_server_name or None
        tls = _ssl_context(configuration)
        self._session = _session(aiohttp.TCPConnector(limit=connections, ssl=tls))
        self._reads = _session(aiohttp.TCPConnector(limit=0, ssl=tls))  # lists and watches

    async def _headers(self, *, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        auth = (await self._configuration.auth_settings()).get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        elif self._configuration.username is not None:
            headers["Authorization"] = str(self._configuration.get_basic_auth_token())
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Any = None,
        limits: aiohttp.ClientTimeout | None = None,
        collection: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the response unread (the caller reads and releases it).

        `collection`: a list or watch, sent on the connections kept for them (see `CONNECTIONS`).
        """
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        session = self._reads if collection else self._session
        return await session.request(
            method,
            self._base + path,
            params={key: str(value) for key, value in (query or {}).items()},
            data=data,
            headers=await self._headers(body=data is not None),
            proxy=self._proxy,
            server_hostname=self._server_hostname,
            timeout=limits if limits is not None else session.timeout,
        )

    async def close(self) -> None:
        await self._session.close()
        await self._reads.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()


def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        read_bufsize=2**21,  # a watch event of a large object can exceed aiohttp's default buffer
        timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
    )


def _ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext | bool:
    """TLS as the kubeconfig / in-cluster config says (the same rules as kubernetes-asyncio's client)."""
    if not str(configuration.host).startswith("https:"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
