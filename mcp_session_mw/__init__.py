"""Durable, shareable MCP Streamable HTTP sessions as one pure ASGI middleware."""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    ConflictError,
    CorruptRecordError,
    InvalidStateError,
    ItemTooLargeError,
    MissingExtraError,
    NoSessionError,
    SessionExistsError,
    SessionMiddlewareError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from .middleware import SessionMiddleware
from .mount import mount_mcp
from .options import SessionOptions
from .records import Page, SessionRecord, StoredEvent, StreamState
from .session import Session, current_session, current_session_or_none
from .stores import MemoryStore, Store, create_store

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "CorruptRecordError",
    "InvalidStateError",
    "ItemTooLargeError",
    "MemoryStore",
    "MissingExtraError",
    "NoSessionError",
    "Page",
    "Session",
    "SessionExistsError",
    "SessionMiddleware",
    "SessionMiddlewareError",
    "SessionNotFoundError",
    "SessionOptions",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StoredEvent",
    "StreamNotFoundError",
    "StreamState",
    "__version__",
    "create_store",
    "current_session",
    "current_session_or_none",
    "mount_mcp",
]
