"""Store backends and the URL factory.

This module imports no optional driver: each backend module is imported only
when its scheme is asked for, and a missing driver raises MissingExtraError
naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Store
from .memory import MemoryStore

# scheme -> (module, class name). Schemes are matched exactly, lower-cased.
BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("mcp_session_mw.stores.memory", "MemoryStore"),
    "sqlite+aiosqlite": ("mcp_session_mw.stores.sql", "SQLStore"),
    "sqlite": ("mcp_session_mw.stores.sql", "SQLStore"),
    "postgresql+asyncpg": ("mcp_session_mw.stores.sql", "SQLStore"),
    "postgresql": ("mcp_session_mw.stores.sql", "SQLStore"),
    "postgres": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mysql+asyncmy": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mysql+aiomysql": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mariadb+asyncmy": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mariadb+aiomysql": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mysql": ("mcp_session_mw.stores.sql", "SQLStore"),
    "mariadb": ("mcp_session_mw.stores.sql", "SQLStore"),
    "redis": ("mcp_session_mw.stores.redis", "RedisStore"),
    "rediss": ("mcp_session_mw.stores.redis", "RedisStore"),
    "unix": ("mcp_session_mw.stores.redis", "RedisStore"),
    "redis+cluster": ("mcp_session_mw.stores.redis", "RedisStore"),
    "rediss+cluster": ("mcp_session_mw.stores.redis", "RedisStore"),
    "dynamodb": ("mcp_session_mw.stores.dynamodb", "DynamoDBStore"),
}

DEFAULT_STORE_URL = "sqlite+aiosqlite:///./mcp_sessions.db"


def create_store(url: str, **options: Any) -> Store:
    """Build the store a URL names, e.g. ``memory://`` or ``redis://localhost:6379/0``.

    ``options`` go to the backend's constructor. An unknown scheme raises
    ConfigurationError listing the known ones.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"not a store URL: {url!r} (expected scheme://…)")
    scheme = urlsplit(url).scheme.lower()
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigurationError(f"unknown store scheme {scheme!r}; known schemes: {known}")
    module_name, class_name = target
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if cls is MemoryStore:
        return MemoryStore(**options)
    store: Store = cls.from_url(url, **options)
    return store


__all__ = ["BACKENDS", "DEFAULT_STORE_URL", "MemoryStore", "Store", "create_store"]
