"""JSON-RPC on the wire: the error responses the middleware answers with, and strict body parsing.

Every refusal the middleware makes is an HTTP status with a JSON-RPC error
body, so clients built on either layer understand it. The messages are module
constants that tests import.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.types import Send

from . import metrics

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MSG_SESSION_REQUIRED = "Bad Request: Mcp-Session-Id header is required"
MSG_SESSION_NOT_FOUND = "Session not found"
MSG_PARSE_ERROR = "Parse error: the request body is not valid JSON"
MSG_BODY_TOO_LARGE = "Request body too large"
MSG_NOT_JSON_RPC = "Invalid Request: the body is not a JSON-RPC message"
MSG_INITIALIZE_BATCHED = "Invalid Request: initialize must not be part of a batch"
MSG_STORE_UNAVAILABLE = "Service Unavailable: the session store cannot be reached"
MSG_METHOD_NOT_ALLOWED = "Method Not Allowed"
MSG_NOT_ACCEPTABLE = "Not Acceptable: the client must accept text/event-stream"
MSG_NO_PENDING_REQUEST = "Invalid Request: no server request with this id is pending"
MSG_REPLY_NOT_TAKEN = (
    "Service Unavailable: the server process holding this request did not take the reply"
)
MSG_BAD_EVENT_ID = "Bad Request: unknown or malformed Last-Event-ID"
MSG_APP_SESSION_FAILED = "Internal error: the session could not be re-created in the server"
MSG_APP_FAILED = "Internal error: the server failed while answering the request"
MSG_HEADER_TOO_LARGE = "Request Header Fields Too Large"
MSG_UNSUPPORTED_MEDIA_TYPE = "Unsupported Media Type: Content-Type must be application/json"
MSG_BAD_INITIALIZE = (
    "Invalid params: initialize needs a request id, and protocolVersion, capabilities and "
    "clientInfo of the right types"
)
MSG_TOO_MANY_SESSIONS = "Service Unavailable: the server holds as many sessions as it allows"
MSG_PRINCIPAL_SESSION_LIMIT = "Too Many Requests: this principal holds as many sessions as allowed"

REASONS: dict[str, str] = {
    MSG_SESSION_REQUIRED: "session_required",
    MSG_SESSION_NOT_FOUND: "session_not_found",
    MSG_PARSE_ERROR: "parse_error",
    MSG_BODY_TOO_LARGE: "body_too_large",
    MSG_NOT_JSON_RPC: "not_json_rpc",
    MSG_INITIALIZE_BATCHED: "initialize_batched",
    MSG_STORE_UNAVAILABLE: "store_unavailable",
    MSG_METHOD_NOT_ALLOWED: "method_not_allowed",
    MSG_NOT_ACCEPTABLE: "not_acceptable",
    MSG_NO_PENDING_REQUEST: "no_pending_request",
    MSG_REPLY_NOT_TAKEN: "reply_not_taken",
    MSG_BAD_EVENT_ID: "bad_event_id",
    MSG_APP_SESSION_FAILED: "app_session_failed",
    MSG_APP_FAILED: "app_failed",
    MSG_HEADER_TOO_LARGE: "header_too_large",
    MSG_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    MSG_BAD_INITIALIZE: "bad_initialize",
    MSG_TOO_MANY_SESSIONS: "too_many_sessions",
    MSG_PRINCIPAL_SESSION_LIMIT: "principal_session_limit",
}
"""The ``reason`` label of ``mcp_session_rejected_requests_total`` for each message."""

RequestId = str | int | None


def request_id_of(message: Any) -> RequestId:
    """The id of a single JSON-RPC request, when it is one we may echo back."""
    if isinstance(message, dict):
        value = message.get("id")
        if type(value) is int:  # the usual id (a bool's type is bool)
            return value
        if isinstance(value, str) and len(value) <= 256:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def error_body(code: int, message: str, request_id: RequestId = None) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}},
        separators=(",", ":"),
    ).encode()


async def send_error(
    send: Send,
    status: int,
    code: int,
    message: str,
    request_id: RequestId = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer the request with ``status`` and a JSON-RPC error body."""
    metrics.rejected(REASONS.get(message, metrics.REASON_OTHER), status)
    body = error_body(code, message, request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- request bodies ---------------------------------------------------------------


def not_json(literal: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259); a store's JSON column would refuse them."""
    raise ValueError(f"{literal} is not JSON")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=not_json, parse_float=finite_float)


def parse_json(body: bytes) -> Any:
    """``json.loads`` with NaN, Infinity and overflowing numbers refused; one decoder for all."""
    if len(body) > 1 and body[1] and body[0] in b"{[":
        text = body.decode("utf-8", "surrogatepass")  # what json.loads detects for these
    else:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    return _DECODER.decode(text)


def is_json(content_type: str) -> bool:
    return (
        content_type == "application/json"
        or content_type.split(";", 1)[0].strip().lower() == "application/json"
    )
