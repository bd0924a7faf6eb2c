"""UpstreamApp: an ASGI app that forwards every request to one MCP server over HTTP.

Put :class:`~mcp_session_mw.SessionMiddleware` in front of it and a server in
any language gets durable sessions: the middleware drives the upstream the way
it drives a stateful Python app in re-hydration mode (it re-creates sessions
with ``initialize`` and rewrites ``Mcp-Session-Id``), only over HTTP.

How a request goes through:

- One pooled ``httpx.AsyncClient`` per app (HTTP/1.1, keep-alive), opened at
  lifespan startup and closed at shutdown. The pool has no cap on
  connections by default: every SSE answer and every app session's GET
  stream holds one for as long as it runs, and a cap would make the next
  request wait behind them.
- The request body is streamed upstream as the server hands it over (sent
  whole, with its length, when it came in one piece, as the middleware hands
  it). Headers go through :mod:`.headers` (hop-by-hop dropped, ``Host`` and
  ``X-Forwarded-*`` set as a reverse proxy does).
- An SSE answer is streamed to the client chunk by chunk as it arrives, with
  no read timeout (a tool may be quiet for as long as it works). Any other
  answer is small (a JSON-RPC reply, a 202, an error) and is read whole first,
  within ``timeout`` and ``max_answer_size``, so a broken one becomes a clean
  502 instead of a half-sent response.
- Until the upstream's answer starts, a failure is answered for it with 502 or
  504 (see :mod:`.errors`). Once an SSE answer has started, an upstream that
  breaks off ends the body cleanly: the middleware then stores and sends the
  JSON-RPC error for the request that a stream without its answer gets, on
  this connection and to any client that resumes it. No upstream error
  escapes this app after its response started.
- The app reads the upstream's answer to its end whatever the client does,
  as long as ``receive`` does not say ``http.disconnect``: the middleware
  never says it before the app is done, so a tool the client left keeps
  running and its events are stored. Used bare, a client that leaves closes
  the upstream connection, as a direct client would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import anyio
from starlette.types import Message, Receive, Scope, Send

from ..errors import ConfigurationError, MissingExtraError
from .errors import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    MSG_ANSWER_TOO_LARGE,
    MSG_BROKEN_ANSWER,
    MSG_NOT_STARTED,
    MSG_TIMEOUT,
    MSG_UNREACHABLE,
    send_gateway_error,
)
from .headers import client_headers, upstream_headers

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingExtraError("proxy", "httpx") from _exc

logger = logging.getLogger("mcp_session_mw.proxy")

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ANSWER_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_KEEPALIVE = 100
MSG_STREAM_BROKEN = "the upstream broke off an SSE answer: %s"
_SSE = b"text/event-stream"
_SERVICE_UNAVAILABLE = 503
_CLIENT_DEFAULTS = ("accept", "user-agent")
"""httpx's own default request headers that a proxy must not add to the client's."""


class _ClientGone(Exception):
    """The client left while its request body was still being sent upstream."""


class _TooLarge(Exception):
    """A whole (non-SSE) answer is larger than ``max_answer_size``."""


class UpstreamApp:
    """Pure ASGI app forwarding each HTTP request to the MCP endpoint at ``url``.

    ``timeout`` bounds, in seconds, connecting, sending the request, the wait
    for the answer's head and the reading of a whole (non-SSE) answer; an SSE
    answer, once started, may take as long as it takes. ``headers`` are set on
    every upstream request, over the client's own (an upstream API key, say).
    ``max_answer_size`` caps a whole answer; ``max_connections`` caps the pool
    (None: no cap, see the module docstring) and ``max_keepalive`` the idle
    connections kept.

    The HTTP client is opened in the lifespan (or with ``async with app:``);
    a request before that is answered 503.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE,
        max_connections: int | None = None,
        max_keepalive: int = DEFAULT_MAX_KEEPALIVE,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"the upstream URL {url!r} is not a URL: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(f"the upstream URL must be http:// or https://, not {url!r}")
        if not timeout > 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        if max_answer_size <= 0:
            raise ConfigurationError("max_answer_size must be a positive number of bytes")
        if max_connections is not None and max_connections <= 0:
            raise ConfigurationError("max_connections must be positive (or None)")
        if max_keepalive < 0:
            raise ConfigurationError("max_keepalive must not be negative")
        self.url = parsed
        self.timeout = timeout
        self.max_answer_size = max_answer_size
        self._extra = {
            name.lower().encode("latin-1"): value.encode("latin-1")
            for name, value in (headers or {}).items()
        }
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive
        )
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Open the pooled HTTP client (the lifespan does this at startup)."""
        if self._client is not None:
            return
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, read=None),
            limits=self._limits,
            follow_redirects=False,
            trust_env=False,
        )
        for name in _CLIENT_DEFAULTS:
            client.headers.pop(name, None)
        self._client = client

    async def aclose(self) -> None:
        """Close the HTTP client and its connections (the lifespan does this at shutdown)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> UpstreamApp:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no WebSocket in Streamable HTTP; the server closes it
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        first: bytes = message.get("body", b"")
        client = self._client
        if client is None:
            await send_gateway_error(send, _SERVICE_UNAVAILABLE, MSG_NOT_STARTED, first)
            return
        content: bytes | AsyncIterator[bytes] = (
            _rest(first, receive) if message.get("more_body", False) else first
        )
        query: bytes = scope.get("query_string", b"")
        request = client.build_request(
            scope["method"],
            self.url.copy_with(query=query) if query else self.url,
            headers=upstream_headers(scope, self._extra),
            content=content,
        )
        deadline = anyio.current_time() + self.timeout
        try:
            with anyio.fail_after(self.timeout):
                response = await client.send(request, stream=True)
        except _ClientGone:
            return
        except (TimeoutError, httpx.TimeoutException):
            await send_gateway_error(send, GATEWAY_TIMEOUT, MSG_TIMEOUT, first)
            return
        except httpx.ConnectError:
            await send_gateway_error(send, BAD_GATEWAY, MSG_UNREACHABLE, first)
            return
        except httpx.HTTPError:
            await send_gateway_error(send, BAD_GATEWAY, MSG_BROKEN_ANSWER, first)
            return
        try:
            content_type = response.headers.get("content-type", "").encode("latin-1")
            if content_type.lower().startswith(_SSE):
                await _stream(response, receive, send)
            else:
                await self._whole(response, send, first, deadline)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _whole(
        self, response: httpx.Response, send: Send, first: bytes, deadline: float
    ) -> None:
        """Read a non-SSE answer whole (bounded in time and size), then send it."""
        chunks: list[bytes] = []
        try:
            with anyio.fail_after(max(deadline - anyio.current_time(), 0)):
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_answer_size:
                        raise _TooLarge
                    chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException):
            await send_gateway_error(send, GATEWAY_TIMEOUT, MSG_TIMEOUT, first)
            return
        except _TooLarge:
            await send_gateway_error(send, BAD_GATEWAY, MSG_ANSWER_TOO_LARGE, first)
            return
        except httpx.HTTPError:
            await send_gateway_error(send, BAD_GATEWAY, MSG_BROKEN_ANSWER, first)
            return
        body = b"".join(chunks)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": client_headers(response.headers.raw, len(body)),
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _rest(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    """The request body, streamed: the first chunk, then what the server hands over."""
    yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _stream(response: httpx.Response, receive: Receive, send: Send) -> None:
    """Send an SSE answer on as it comes; end the body cleanly whatever the upstream does."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": client_headers(response.headers.raw, None),
        }
    )
    gone = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            async for chunk in response.aiter_bytes():
                if chunk:
                    await send(_more(chunk))
        except httpx.HTTPError as exc:
            logger.warning(MSG_STREAM_BROKEN, exc)
        tg.cancel_scope.cancel()
    if not gone:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _more(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}
