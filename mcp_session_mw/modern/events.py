"""The SDK's subscription events on the wire between processes: JSON, one kind each."""

from __future__ import annotations

import json
import logging

from .sdk_types import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

logger = logging.getLogger("mcp_session_mw.modern")

MAX_EVENT_BYTES = 7000
"""Bounded by PostgreSQL's NOTIFY payload (8000 bytes), with room to spare."""
MSG_TOO_LARGE = f"a subscription event is at most {MAX_EVENT_BYTES} bytes as JSON"
MSG_NOT_AN_EVENT = "not one of the SDK's ServerEvent types: {kind}"

_SINGLETONS: dict[str, ServerEvent] = {
    "tools_list_changed": ToolsListChanged(),
    "prompts_list_changed": PromptsListChanged(),
    "resources_list_changed": ResourcesListChanged(),
}
_KINDS: dict[type[object], str] = {type(event): kind for kind, event in _SINGLETONS.items()}
RESOURCE_UPDATED = "resource_updated"


def encode_event(event: ServerEvent) -> str:
    """The event as the processes exchange it: ``{"kind": …}`` (and ``"uri"``)."""
    if isinstance(event, ResourceUpdated):
        text = json.dumps({"kind": RESOURCE_UPDATED, "uri": event.uri}, separators=(",", ":"))
    else:
        kind = _KINDS.get(type(event))
        if kind is None:
            raise TypeError(MSG_NOT_AN_EVENT.format(kind=type(event).__name__))
        text = json.dumps({"kind": kind}, separators=(",", ":"))
    if len(text.encode()) > MAX_EVENT_BYTES:
        raise ValueError(MSG_TOO_LARGE)
    return text


def decode_event(text: str | bytes) -> ServerEvent | None:
    """The event ``text`` carries, or None (logged) for anything else."""
    try:
        data = json.loads(text)
    except ValueError:
        logger.warning("subscription bus: dropped a message that is not JSON")
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if isinstance(kind, str) and kind in _SINGLETONS:
        return _SINGLETONS[kind]
    uri = data.get("uri")
    if kind == RESOURCE_UPDATED and isinstance(uri, str):
        return ResourceUpdated(uri=uri)
    logger.warning("subscription bus: dropped an event of unknown kind %r", kind)
    return None
