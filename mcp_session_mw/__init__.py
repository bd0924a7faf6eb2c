"""Durable, shareable MCP Streamable HTTP sessions as one pure ASGI middleware."""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    ConflictError,
    InvalidStateError,
    MissingExtraError,
    SessionExistsError,
    SessionMiddlewareError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from .records import Page, SessionRecord, StoredEvent, StreamState
from .stores import MemoryStore, Store, create_store

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "InvalidStateError",
    "MemoryStore",
    "MissingExtraError",
    "Page",
    "SessionExistsError",
    "SessionMiddlewareError",
    "SessionNotFoundError",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StoredEvent",
    "StreamNotFoundError",
    "StreamState",
    "__version__",
    "create_store",
]
