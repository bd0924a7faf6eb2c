"""The store's Lua scripts: read from ``lua/*.lua`` once at import, run by EVALSHA.

Every session and stream script starts with ``helpers.lua``; the two page
scripts share ``page_start.lua`` and ``load_touch.lua`` starts with
``pack.lua``. What each script takes and returns is written at the top of its
file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

_LUA = files(__package__ or __name__.rpartition(".")[0]).joinpath("lua")


def _read(name: str) -> str:
    return _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")


_HELPERS = _read("helpers")


class Script:
    """A Lua script run by EVALSHA, falling back to EVAL when the server lost its cache.

    ``parts`` name the files under ``lua/`` its source is joined from, after
    ``helpers.lua`` unless ``helpers`` is false.
    """

    def __init__(self, *parts: str, helpers: bool = True) -> None:
        self.name = parts[-1]
        body = "".join(_read(part) for part in parts)
        self.source = (_HELPERS + body) if helpers else body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as exc:
            from redis.exceptions import NoScriptError

            if not isinstance(exc, NoScriptError):
                raise
            # The server restarted or flushed its script cache; EVAL caches it again.
            return await client.execute_command("EVAL", self.source, len(keys), *keys, *args)


INSERT_SCRIPT = Script("insert")
PUT_SCRIPT = Script("put")
CAS_SCRIPT = Script("cas", helpers=False)
TOUCH_SCRIPT = Script("touch")
LOAD_TOUCH_SCRIPT = Script("pack", "load_touch")
DELETE_SCRIPT = Script("delete")
PURGE_EXPIRED_SCRIPT = Script("purge_expired")
OPEN_STREAM_SCRIPT = Script("open_stream")
SET_STREAM_FIELD_SCRIPT = Script("set_stream_field")
WRITE_SCRIPT = Script("write")
DELETE_STREAM_SCRIPT = Script("delete_stream")
DELETE_STREAMS_SCRIPT = Script("delete_streams")
RECORD_STREAMS_SCRIPT = Script("record_streams")
LOAD_STREAM_SCRIPT = Script("load_stream")
READ_SCRIPT = Script("read")
PAGE_SCRIPT = Script("page_start", "page", helpers=False)
PAGE_RECORDS_SCRIPT = Script("page_start", "page_records", helpers=False)
PRUNE_SCRIPT = Script("prune", helpers=False)
UNLOCK_SCRIPT = Script("unlock", helpers=False)
