"""The 2026-07-28 lane's shared seams on the project's stores.

That protocol revision has no sessions for the middleware to keep; what a
scaled-out server still needs is state every replica shares:

- :class:`StoreSubscriptionBus`: the SDK's ``SubscriptionBus`` across processes;
- :class:`StoreKeyRing`: the ``requestState`` key ring, held in the store;
- :class:`SingleUseGuard`: ``await once(token, ttl)``, refused on replay anywhere;
- :class:`StateHandles`: principal-bound state handles.

These import the official ``mcp`` SDK (the ``modern`` extra) where they speak
its types; the middleware itself never does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import StoreSubscriptionBus
    from .handles import HandleNotFoundError, HandleState, StateHandles
    from .keyring import KeyRingEmptyError, KeyRingError, StoreKeyRing
    from .once import SingleUseGuard

# Imported on first use, so that the command line (``keys``) loads without the SDK.
_WHERE = {
    "StoreSubscriptionBus": "bus",
    "HandleNotFoundError": "handles",
    "HandleState": "handles",
    "StateHandles": "handles",
    "KeyRingEmptyError": "keyring",
    "KeyRingError": "keyring",
    "StoreKeyRing": "keyring",
    "SingleUseGuard": "once",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "HandleNotFoundError",
    "HandleState",
    "KeyRingEmptyError",
    "KeyRingError",
    "SingleUseGuard",
    "StateHandles",
    "StoreKeyRing",
    "StoreSubscriptionBus",
]
