"""The follower's watch on Redis: one pub/sub subscription per store, on its own connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from ..follower import Follower
from .values import text

LISTEN_CHECK = 0.5
"""Seconds between two looks, while subscribed, at whether anyone still waits."""
CLOSE_TIMEOUT = 5.0
"""Seconds the subscription's connection may take to close (it is closed even if cancelled)."""
CHANNEL_SUFFIX = "follow"
"""The channel is the key prefix and this: ``helpers.lua``'s ``notify`` publishes there."""


class RedisWatch:
    """Wakes the waiters of each stream the store's scripts announce on ``<prefix>follow``.

    The scripts publish ``<digest>:<stream id>`` when events are appended and
    ``<digest>:`` when a stream of the session is (re)opened, finished or
    removed. Run by the store's follower while anyone waits: one connection,
    whatever the number of waiters. Once subscribed it wakes every waiter (one
    may have read before the subscription was in place), and again each time
    redis-py reconnects the subscription by itself (messages of the gap are
    lost: every waiter re-reads). A connection redis-py cannot get back
    raises, and the follower wakes everyone and subscribes again.
    """

    def __init__(self, client: Callable[[], Any], prefix: str) -> None:
        self._client = client
        self.channel = prefix + CHANNEL_SUFFIX
        self.subscribed = False
        self.connects = 0
        """How many times the subscription's connection was (re)established."""
        self._follower: Follower | None = None

    def on_connect(self, _connection: Any) -> None:
        """redis-py's connect callback (a method: it keeps a weak reference to it)."""
        self.connects += 1
        if self._follower is not None:
            self._follower.wake_all()

    async def __call__(self, follower: Follower) -> None:
        pubsub = self._client().pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self._follower = follower
            pubsub.connection.register_connect_callback(self.on_connect)
            self.connects += 1
            self.subscribed = True
            follower.wake_all()
            while follower.wanted():
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=LISTEN_CHECK
                )
                if message is None or message.get("type") != "message":
                    continue
                key, _, stream_id = text(message["data"]).partition(":")
                if stream_id:
                    follower.wake((key, stream_id))
                else:
                    follower.wake_session(key)
        finally:
            self.subscribed = False
            self._follower = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await pubsub.aclose()
