"""What the middleware reads and rewrites in the app's answer to ``initialize``."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Send

from .asgi import CapturedResponse
from .jsonrpc import RequestId
from .protocol import SESSION_HEADER

_SESSION = SESSION_HEADER.encode()


def initialize_well_formed(message: dict[str, Any], request_id: RequestId) -> bool:
    """A JSON-RPC request with an id whose params, where given, have the types MCP says.

    Missing params are left to the app to refuse (some apps accept a bare
    initialize); present ones of the wrong type never reach the app or the store.
    """
    if message.get("jsonrpc") != "2.0" or request_id is None:
        return False
    params = message.get("params", {})
    if not isinstance(params, dict):
        return False
    version = params.get("protocolVersion")
    if version is not None and not (isinstance(version, str) and 0 < len(version) <= 64):
        return False
    return all(isinstance(params.get(name, {}), dict) for name in ("capabilities", "clientInfo"))


def initialize_succeeded(answer: CapturedResponse) -> bool:
    """True if the app's answer carries an initialize result (not a JSON-RPC error)."""
    return any(
        isinstance(message, dict) and isinstance(message.get("result"), dict)
        for message in json_messages(answer)
    )


def rewrite_session_header(message: Message, session_id: str | None) -> None:
    """Replace (or, with None, remove) the app's own session id in a response start."""
    headers = [
        (name, value) for name, value in message.get("headers", ()) if name.lower() != _SESSION
    ]
    if session_id is not None:
        headers.append((_SESSION, session_id.encode("latin-1")))
    message["headers"] = headers


async def send_captured(send: Send, answer: CapturedResponse, session_id: str | None) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": answer.status,
        "headers": answer.headers,
    }
    rewrite_session_header(start, session_id)
    await send(start)
    await send({"type": "http.response.body", "body": answer.body})


def negotiated_version(answer: CapturedResponse) -> str | None:
    """The protocolVersion of the app's initialize result, from a JSON or SSE body."""
    for message in json_messages(answer):
        result = message.get("result") if isinstance(message, dict) else None
        if isinstance(result, dict):
            version = result.get("protocolVersion")
            if isinstance(version, str) and len(version) <= 64:
                return version
    return None


def json_messages(answer: CapturedResponse) -> list[Any]:
    content_type = (answer.header("content-type") or "").lower()
    texts: list[str] = []
    if content_type.startswith("text/event-stream"):
        data: list[str] = []
        text = answer.body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        for line in [*text.split("\n"), ""]:
            if line == "":
                if data:
                    texts.append("\n".join(data))
                data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    else:
        texts.append(answer.body.decode("utf-8", "replace"))
    messages: list[Any] = []
    for text in texts:
        try:
            messages.append(json.loads(text))
        except ValueError:
            continue
    return messages
