"""The headers a reverse proxy sends upstream and hands back to the client.

Hop-by-hop headers (RFC 9110 section 7.6.1: ``Connection``, the headers it
names, ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``, ``Proxy-*``) describe one connection and are dropped both ways.
Everything else passes, ``Authorization`` and the MCP headers
(``Mcp-Session-Id``, ``MCP-Protocol-Version``, ``Last-Event-ID``) included.

Upstream, as a reverse proxy does: ``Host`` is the upstream's own (a server
with DNS-rebinding protection checks it), the client's host goes in
``X-Forwarded-Host``, its address is appended to ``X-Forwarded-For`` and its
scheme is ``X-Forwarded-Proto``. ``Accept-Encoding: identity`` asks the
upstream not to compress: the middleware reads the SSE it stores, and
compressing on loopback or a LAN costs more than it saves. An upstream that
compresses anyway is decoded here, so ``Content-Encoding`` is dropped from the
answer and ``Content-Length`` set to what the client is sent. ``Date`` and
``Server`` are the proxy's own (its server adds them), as with nginx.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.types import Scope

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers that describe one connection, not the message: never forwarded either way."""

_REPLACED_UPSTREAM = frozenset(
    {
        b"host",
        b"content-length",
        b"accept-encoding",
        b"x-forwarded-host",
        b"x-forwarded-proto",
    }
)
"""Request headers set here rather than copied (``X-Forwarded-For`` is appended to)."""
_REPLACED_DOWNSTREAM = frozenset({b"content-length", b"content-encoding", b"date", b"server"})
"""Response headers set here or by the server the app runs on (``Date``, ``Server``)."""

Headers = list[tuple[bytes, bytes]]


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The extra hop-by-hop headers a ``Connection`` header names (``Connection: close, x-a``)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(named)


def upstream_headers(scope: Scope, extra: Mapping[bytes, bytes]) -> Headers:
    """The headers to send upstream for the client's request in ``scope``.

    ``extra`` (the app's ``headers`` option) is set over the client's. ``Host``
    and ``Content-Length`` are left to the HTTP client, which sets them from
    the upstream URL and the body it sends.
    """
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = HOP_BY_HOP | _connection_named(raw) | _REPLACED_UPSTREAM | extra.keys()
    forwarded_for: list[bytes] = []
    client_host: bytes | None = None
    headers: Headers = []
    for name, value in raw:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lower == b"host":
            client_host = client_host or value
        elif lower not in dropped:
            headers.append((lower, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(str(client[0]).encode("latin-1"))
    headers.append((b"accept-encoding", b"identity"))
    if forwarded_for:
        headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    if client_host is not None:
        headers.append((b"x-forwarded-host", client_host))
    headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode("latin-1")))
    headers.extend(extra.items())
    return headers


def client_headers(raw: Iterable[tuple[bytes, bytes]], content_length: int | None) -> Headers:
    """The upstream's response headers as the client gets them.

    ``content_length`` is the length of the body as it will be sent (a whole
    answer), or None for a streamed one (the server then chunks it).
    """
    pairs = list(raw)
    dropped = HOP_BY_HOP | _connection_named(pairs) | _REPLACED_DOWNSTREAM
    headers = [(name.lower(), value) for name, value in pairs if name.lower() not in dropped]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return headers
