"""The official ``mcp`` SDK, imported on demand, with an error naming the extra when absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError


def import_sdk(module: str) -> ModuleType:
    """``importlib.import_module(module)``, raising MissingExtraError when mcp is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError("modern", "mcp") from exc
