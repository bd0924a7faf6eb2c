"""What the client is told when the upstream cannot answer: 502 or 504, a JSON-RPC error body.

A gateway answers for a request the upstream did not: ``502 Bad Gateway``
when the upstream cannot be reached or its answer is broken (not HTTP, cut
short, too large), ``504 Gateway Timeout`` when it does not answer within the
app's ``timeout``. Either way the body is a JSON-RPC error for the request's
id, and nothing reaches the session store: the middleware records a session
only on a 2xx ``initialize`` and stores only the events of a 200 SSE answer.
"""

from __future__ import annotations

import json

from starlette.types import Send

from ..jsonrpc import INTERNAL_ERROR, RequestId, request_id_of, send_error

BAD_GATEWAY = 502
GATEWAY_TIMEOUT = 504

# Messages tests assert on.
MSG_UNREACHABLE = "Bad Gateway: the upstream MCP server cannot be reached"
MSG_BROKEN_ANSWER = "Bad Gateway: the upstream MCP server sent a broken answer"
MSG_ANSWER_TOO_LARGE = "Bad Gateway: the upstream MCP server's answer is too large"
MSG_TIMEOUT = "Gateway Timeout: the upstream MCP server did not answer in time"
MSG_NOT_STARTED = (
    "Service Unavailable: the proxy's HTTP client is not open (the server did not run "
    "the app's lifespan)"
)


def request_id_in(body: bytes) -> RequestId:
    """The id of the single JSON-RPC request in ``body``, if it is one (else None)."""
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return None
    try:
        return request_id_of(json.loads(body))
    except ValueError:
        return None


async def send_gateway_error(send: Send, status: int, message: str, body: bytes) -> None:
    """Answer ``status`` with a JSON-RPC error for the request in ``body``."""
    await send_error(send, status, INTERNAL_ERROR, message, request_id_in(body))
