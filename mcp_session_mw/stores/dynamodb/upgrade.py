"""``mcp-session-mw db upgrade`` for a DynamoDB store: create the table and switch on its TTL."""

from __future__ import annotations

import json
from typing import TextIO

from .items import TTL_ATTRIBUTE
from .store import DynamoDBStore

MSG_CREATED = "created the DynamoDB table {table!r} (on-demand capacity, TTL on {ttl!r})"
MSG_READY = "the DynamoDB table {table!r} is ready (TTL on {ttl!r})"


async def db_upgrade(store: DynamoDBStore, out: TextIO, *, as_json: bool) -> None:
    """Create the store's table if it is missing, make sure TTL is on, and say which."""
    created = await store.upgrade()
    table = store.table.name
    if as_json:
        body = {"table": table, "created": created, "ttl_attribute": TTL_ATTRIBUTE}
        out.write(json.dumps(body) + "\n")
    else:
        message = MSG_CREATED if created else MSG_READY
        out.write(message.format(table=table, ttl=TTL_ATTRIBUTE) + "\n")
