"""ghapp's own Kubernetes transport: authentication from the loaded configuration, token rotation."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client as k8s

from ghapp.kubehttp import KubeTransport


async def test_bearer_token_is_sent_and_refreshed_by_the_configurations_hook() -> None:
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(
            (request.headers.get("Authorization"), request.headers.get("Content-Type"), await request.read())
        )
        return web.json_response({"kind": "Status"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    tokens = iter(["Bearer first", "Bearer rotated"])

    def refresh(configuration: k8s.Configuration) -> None:  # as the in-cluster loader rereads its token file
        configuration.api_key["BearerToken"] = next(tokens)

    configuration = k8s.Configuration()
    configuration.host = str(server.make_url("")).rstrip("/")
    configuration.api_key = {"BearerToken": "Bearer initial"}
    configuration.refresh_api_key_hook = refresh
    try:
        async with KubeTransport(configuration) as http:
            for body in ({"a": 1}, None):
                response = await http.request("POST" if body else "GET", "/api/v1/x", body=body)
                response.release()
    finally:
        await server.close()
    assert seen == [("Bearer first", "application/json", b'{"a":1}'), ("Bearer rotated", None, b"")]
