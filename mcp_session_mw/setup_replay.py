"""Session-setup requests, recorded so a re-created app session gets them again.

An app keeps the logging level and resource subscriptions a client asked for
in its own per-session memory. When the middleware re-creates the session in
another process (or after a restart), it replays them right after the
handshake, so the client does not silently lose them.
"""

from __future__ import annotations

from typing import Any

from .records import JSONValue

SET_LEVEL = "logging/setLevel"
SUBSCRIBE = "resources/subscribe"
UNSUBSCRIBE = "resources/unsubscribe"
SETUP_METHODS = frozenset({SET_LEVEL, SUBSCRIBE, UNSUBSCRIBE})
META_KEY = "setup"
MAX_SUBSCRIPTIONS = 1000


def is_setup_request(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and message.get("method") in SETUP_METHODS
        and "id" in message
        and isinstance(message.get("params"), dict)
    )


def record_setup(meta: dict[str, JSONValue], message: dict[str, Any]) -> dict[str, JSONValue]:
    """``meta`` with the effect of one successful setup request recorded."""
    setup = meta.get(META_KEY)
    setup = dict(setup) if isinstance(setup, dict) else {}
    params = message["params"]
    method = message["method"]
    if method == SET_LEVEL:
        level = params.get("level")
        if isinstance(level, str) and len(level) <= 32:
            setup["level"] = level
    else:
        uri = params.get("uri")
        if isinstance(uri, str) and len(uri) <= 4096:
            known = setup.get("subscriptions")
            uris = [u for u in known if isinstance(u, str)] if isinstance(known, list) else []
            if method == SUBSCRIBE and uri not in uris and len(uris) < MAX_SUBSCRIPTIONS:
                uris.append(uri)
            elif method == UNSUBSCRIBE and uri in uris:
                uris.remove(uri)
            setup["subscriptions"] = uris
    return {**meta, META_KEY: setup}


def setup_changes(old: JSONValue, new: JSONValue) -> list[dict[str, Any]]:
    """Requests that move an app session from setup ``old`` to ``new`` (recorded dicts)."""
    old_setup = old if isinstance(old, dict) else {}
    new_setup = new if isinstance(new, dict) else {}
    requests: list[dict[str, Any]] = []
    level = new_setup.get("level")
    if isinstance(level, str) and level != old_setup.get("level"):
        requests.append({"method": SET_LEVEL, "params": {"level": level}})
    before = _uris(old_setup)
    after = _uris(new_setup)
    requests.extend({"method": SUBSCRIBE, "params": {"uri": u}} for u in after if u not in before)
    requests.extend({"method": UNSUBSCRIBE, "params": {"uri": u}} for u in before if u not in after)
    for number, request in enumerate(requests):
        request["jsonrpc"] = "2.0"
        request["id"] = f"mcp-session-mw:sync-{number}"
    return requests


def _uris(setup: dict[str, Any]) -> list[str]:
    known = setup.get("subscriptions")
    return [u for u in known if isinstance(u, str)] if isinstance(known, list) else []


def setup_requests(meta: dict[str, JSONValue]) -> list[dict[str, Any]]:
    """The requests that bring a fresh app session to the recorded setup."""
    setup = meta.get(META_KEY)
    if not isinstance(setup, dict):
        return []
    requests: list[dict[str, Any]] = []
    level = setup.get("level")
    if isinstance(level, str):
        requests.append({"method": SET_LEVEL, "params": {"level": level}})
    subscriptions = setup.get("subscriptions")
    if isinstance(subscriptions, list):
        requests.extend(
            {"method": SUBSCRIBE, "params": {"uri": uri}}
            for uri in subscriptions
            if isinstance(uri, str)
        )
    for number, request in enumerate(requests):
        request["jsonrpc"] = "2.0"
        request["id"] = f"mcp-session-mw:setup-{number}"
    return requests
