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

from .bus import StoreSubscriptionBus
from .handles import HandleNotFoundError, HandleState, StateHandles
from .keyring import KeyRingEmptyError, StoreKeyRing
from .once import SingleUseGuard

__all__ = [
    "HandleNotFoundError",
    "HandleState",
    "KeyRingEmptyError",
    "SingleUseGuard",
    "StateHandles",
    "StoreKeyRing",
    "StoreSubscriptionBus",
]
