"""A round-robin HTTP reverse proxy for end-to-end tests: each request to the next upstream.

A TCP-level balancer would pin every request of one keep-alive connection to
one upstream, so a client that reuses its connection would never reach the
second process. This proxy is an ASGI app under uvicorn instead: uvicorn
parses HTTP/1.1 (keep-alive, chunked bodies), and every request, whatever its
method, is forwarded with httpx to the next upstream in turn. Responses are
streamed as they come (SSE must not be buffered), and when the client goes
away the upstream connection is closed too, so the server sees the disconnect
a direct client would have caused.

Run it like the example servers (see :func:`tests.e2e.server.run_server`)::

    python tests/e2e/proxy.py --upstream http://127.0.0.1:8001 --upstream http://127.0.0.1:8002
        --host 127.0.0.1 --port 8000

Only for tests: no limits, no TLS, no ``X-Forwarded-*`` headers.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator

import anyio
import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
"""Headers that describe one connection, not the message; never forwarded."""
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, read=None)
"""No read timeout: an SSE stream may stay quiet for as long as the test wants."""
BAD_GATEWAY = b"upstream unreachable"


class RoundRobinProxy:
    """Pure ASGI app forwarding each HTTP request to the next of ``upstreams``."""

    def __init__(self, upstreams: list[str]) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self._upstreams: Iterator[httpx.URL] = itertools.cycle(httpx.URL(u) for u in upstreams)
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
        upstream = next(self._upstreams)
        url = upstream.copy_with(
            raw_path=scope["raw_path"]
            + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        )
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        client = self._client
        assert client is not None, "the proxy runs only under a server that runs its lifespan"
        request = client.build_request(scope["method"], url, headers=headers, content=bytes(body))
        async with anyio.create_task_group() as tg:

            async def watch_client() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()  # the client left: drop the upstream connection

            tg.start_soon(watch_client)
            await self._relay(client, request, send)
            tg.cancel_scope.cancel()

    async def _relay(self, client: httpx.AsyncClient, request: httpx.Request, send: Send) -> None:
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": BAD_GATEWAY})
            return
        try:
            start: Message = {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP],
            }
            await send(start)
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError:
                pass  # the upstream died mid-stream: end the response where it broke
            await send({"type": "http.response.body", "body": b""})
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", action="append", required=True, help="base URL; repeat")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run(RoundRobinProxy(args.upstream), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
