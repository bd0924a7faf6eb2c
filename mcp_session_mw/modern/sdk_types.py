"""The SDK's subscription event types, or an error naming the ``modern`` extra."""

from __future__ import annotations

try:
    from mcp.shared.subscriptions import (
        PromptsListChanged,
        ResourcesListChanged,
        ResourceUpdated,
        ServerEvent,
        ToolsListChanged,
    )
except ImportError as exc:  # pragma: no cover - the modern extra is missing
    from ..errors import MissingExtraError

    raise MissingExtraError("modern", "mcp") from exc

__all__ = [
    "PromptsListChanged",
    "ResourceUpdated",
    "ResourcesListChanged",
    "ServerEvent",
    "ToolsListChanged",
]
