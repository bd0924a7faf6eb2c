"""A client sending a body far over max_body_size reads the 413, over a real socket (uvicorn)."""

from __future__ import annotations

import json
import socket
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import httpx

from mcp_session_mw import SessionMiddleware
from mcp_session_mw.jsonrpc import MSG_BODY_TOO_LARGE

from ..test_middleware import HEADERS, build_sdk_app
from .server import run_server

LIMIT = 64 * 1024
BODY = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * (16 * 2**20) + b'"}}'
"""16 MiB: far over the limit, and far more than the socket buffers on both sides hold."""
TIMEOUT = 30.0


def app() -> SessionMiddleware:
    """The uvicorn factory: the SDK's app behind the middleware, a 64 KiB body limit."""
    return SessionMiddleware(build_sdk_app(), store="memory://", max_body_size=LIMIT)


def serve() -> AbstractContextManager[str]:
    return run_server(["-m", "uvicorn", "--factory", f"{__name__}:app", "--log-level", "warning"])


def assert_413(status: int, body: bytes) -> None:
    assert status == 413
    answer = json.loads(body)
    assert answer["jsonrpc"] == "2.0"
    assert answer["error"]["message"] == MSG_BODY_TOO_LARGE


def test_httpx_reads_the_413_of_a_body_far_over_the_limit() -> None:
    with serve() as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        response = client.post("/mcp", content=BODY, headers=HEADERS)
        assert_413(response.status_code, response.content)
        assert response.headers["connection"] == "close"
        # The server is fine afterwards.
        assert client.post("/mcp", content=b"{}", headers=HEADERS).status_code == 400


def test_a_raw_socket_sending_all_of_it_reads_the_413() -> None:
    with serve() as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
            head = (
                f"POST /mcp HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nAccept: {HEADERS['accept']}\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n"
            )
            sock.sendall(head.encode() + BODY)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        status_line, _, rest = received.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413")
        _, _, body = rest.partition(b"\r\n\r\n")
        assert_413(413, body)
