"""Redis store: standalone, TLS, unix socket or Cluster, on ``redis.asyncio``.

Layout. Every key of one session shares the hash tag ``{<digest>}``, so one
session lives in one hash slot and the same Lua scripts run on Redis Cluster::

    <prefix>{<digest>}                session hash (p payload, u principal, c a x t
                                      timestamps and ttl, v version, g expiry of
                                      the stream keys, q the streams noted for
                                      max_streams_per_session)
    <prefix>{<digest>}:streams        set of the session's stream ids
    <prefix>{<digest>}:st:<stream>    stream state hash (r o l f n z)
    <prefix>{<digest>}:ev:<stream>    Redis Stream of events, entry id ``0-<seq>``
    <prefix>{<digest>}:wake           Redis Stream poked when a stream is (re)opened,
                                      finished or deleted, or the session is deleted,
                                      so blocked readers wake
    <prefix>index                     sorted set: digest scored by expires_at
    <prefix>lock:<name>               a named lock: the holder, with the lease as PEXPIRE

Expiry is Redis's own: the session hash carries the session's PEXPIRE, which a
touch renews in one script, so an expired session disappears without a sweeper.
Its stream keys expire too, at most one ttl after it (see the Lua notes below),
and are invisible meanwhile; ``cleanup_expired`` removes them at once.

The index sorted set spans sessions, so on Cluster it lives in its own slot and
is updated by a separate command right after the session script; on standalone
Redis the same scripts update it atomically. In the Cluster window between the
two commands ``list_active`` may miss a session that was just created or
touched, and ``cleanup_expired`` repairs such index scores.

Updates are compare-and-swap on the ``v`` field in Lua (the base class retries),
so concurrent writers on any number of processes never lose each other's
changes. Blocking reads (XREAD BLOCK) for live follow run on a dedicated client
with its own connections, so followers never starve the command pool.

Needs Redis 6.2 or later (ZADD GT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import (
    ConfigurationError,
    MissingExtraError,
    SessionExistsError,
    SessionMiddlewareError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from ..records import Page, SessionRecord, StoredEvent, StreamState
from .base import Store, stored_batch
from .redis_wire import WireLane, script_head

DEFAULT_PREFIX = "mcp:"
UNAVAILABLE_MESSAGE = "Redis is unreachable"
FAILED_MESSAGE = "Redis command failed"
SESSION_NOT_FOUND = "session not found"
SESSION_EXISTS = "session already exists"
STREAM_NOT_FOUND = "stream not found"
BAD_CURSOR = "not a cursor this store returned"
BAD_PREFIX = "a Redis key prefix must be a string without '{' or '}'"
BAD_MAX_EVENTS = "max_events must be a positive integer or None"
NEED_CLIENT_OR_URL = "RedisStore needs exactly one of client= or url="
BLOCK_SLICE = 5.0
"""Longest single XREAD BLOCK; longer waits are several blocks."""
WAKE_AFTER_DELETE_MS = 10_000
"""How long the wake stream outlives a deleted session (long enough for blocked readers)."""
DEFAULT_RETRIES = 2
"""Retries per command on a connection error; redis-py's own default waits seconds."""
_UNCAPPED = 2**31 - 1
_SCAN_BATCH = 1000
_CLEANUP_BATCH = 500

# -- Lua ---------------------------------------------------------------------------
# KEYS[1] is always the session hash; the other keys of the session are derived
# from it (same hash tag, hence the same slot). KEYS[2], when given, is the index
# sorted set: only on standalone Redis, where a script may span slots.
#
# Stream keys (the set, states, events, wake) expire at the session hash's field
# 'g', which is kept at or past the session's own expiry 'x': when a touch moves
# 'x' past 'g', every stream key is renewed to x + ttl in that same script. So a
# touch costs O(1), plus O(streams) at most once per ttl, and stream keys outlive
# their session by at most one ttl (invisible: every read checks the session).

_LUA_HELPERS = """
local function write_record(base, a)
  redis.call('HSET', base, 'p', a[5], 'c', a[6], 'a', a[7], 'x', a[8], 't', a[9], 'v', a[10])
  if a[11] == '1' then
    redis.call('HSET', base, 'u', a[12])
  else
    redis.call('HDEL', base, 'u')
  end
end
local function live(base, now)
  local x = redis.call('HGET', base, 'x')
  return x and tonumber(x) > now
end
local function ms(seconds)
  return math.max(1, math.ceil(seconds * 1000))
end
local function purge(base)
  local set = base .. ':streams'
  for _, sid in ipairs(redis.call('SMEMBERS', set)) do
    redis.call('DEL', base .. ':st:' .. sid, base .. ':ev:' .. sid)
  end
  redis.call('DEL', base, set, base .. ':wake')
end
local function renew_streams(base, now, until_)
  local px = ms(until_ - now)
  local set = base .. ':streams'
  redis.call('PEXPIRE', base .. ':wake', px)
  if redis.call('PEXPIRE', set, px) == 1 then
    for _, sid in ipairs(redis.call('SMEMBERS', set)) do
      redis.call('PEXPIRE', base .. ':st:' .. sid, px)
      redis.call('PEXPIRE', base .. ':ev:' .. sid, px)
    end
  end
  redis.call('HSET', base, 'g', string.format('%.17g', until_))
end
-- Milliseconds a new stream key of a live session must live (until 'g').
local function stream_px(base, now)
  local cur = redis.call('HMGET', base, 'x', 't', 'g')
  local x = tonumber(cur[1])
  local g = cur[3] and tonumber(cur[3])
  if not g or g < x then
    g = x + tonumber(cur[2])
    renew_streams(base, now, g)
  end
  return ms(g - now)
end
-- Slide a live session's expiry; returns the new expires_at, or false if it is gone.
local function slide(keys, now_s, ttl_s)
  local now = tonumber(now_s)
  local cur = redis.call('HMGET', keys[1], 'x', 't', 'g')
  if not cur[1] or tonumber(cur[1]) <= now then return false end
  if not ttl_s then ttl_s = cur[2] end
  local ttl = tonumber(ttl_s)
  local x = now + ttl
  local xs = string.format('%.17g', x)
  redis.call('HSET', keys[1], 'a', now_s, 'x', xs, 't', ttl_s)
  redis.call('PEXPIRE', keys[1], ms(ttl))
  if cur[3] and tonumber(cur[3]) < x then renew_streams(keys[1], now, x + ttl) end
  if #keys > 1 then redis.call('ZADD', keys[2], xs, string.match(keys[1], '{(.-)}')) end
  return xs
end
local function wake(base, px)
  redis.call('XADD', base .. ':wake', 'MAXLEN', '1', '*', 'w', '1')
  redis.call('PEXPIRE', base .. ':wake', px)
end
"""

# ARGV: now, px, member, score, then the record: p c a x t v, has principal, principal.
_INSERT = """
if live(KEYS[1], tonumber(ARGV[1])) then return 0 end
purge(KEYS[1])
write_record(KEYS[1], ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
return 1
"""

# ARGV: as for _INSERT. Keeps 'g' and the streams; renews them if the expiry moved past.
_PUT = """
write_record(KEYS[1], ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local g = redis.call('HGET', KEYS[1], 'g')
local x = tonumber(ARGV[8])
if g and tonumber(g) < x then renew_streams(KEYS[1], tonumber(ARGV[1]), x + tonumber(ARGV[9])) end
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
return 1
"""

# ARGV: now, expected version, payload, new version, has principal, principal.
# Timing fields are touch's business: a touch between our read and this write is kept.
_CAS = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'x')
if not cur[1] or not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[1]) then return -1 end
if cur[1] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[3], 'v', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'u', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'u')
end
return 1
"""

# The record as one string, fields joined by NUL: x c a t v p [u]. One bulk reply
# parses far faster in redis-py than seven. The payload is JSON, which never holds
# a raw NUL, and the principal comes last, so the split is unambiguous.
_PACK = """
local function pack(v)
  if v[7] then return table.concat(v, '\\0', 1, 7) end
  return table.concat(v, '\\0', 1, 6)
end
"""
_RECORD_HMGET = "redis.call('HMGET', KEYS[1], 'x', 'c', 'a', 't', 'v', 'p', 'u')"

# ARGV: now[, ttl] (without ttl, the session's own). Returns the new expires_at.
_TOUCH = """
return slide(KEYS, ARGV[1], ARGV[2])
"""

# As _TOUCH, but returns the touched record, packed: load and touch in one round trip.
_LOAD_TOUCH = (
    _PACK
    + f"""
if not slide(KEYS, ARGV[1], ARGV[2]) then return false end
return pack({_RECORD_HMGET})
"""
)

# ARGV: now, member, wake ms. Returns 1 if a live session was deleted.
_DELETE = """
local was = live(KEYS[1], tonumber(ARGV[1]))
local watched = redis.call('EXISTS', KEYS[1] .. ':wake') == 1
purge(KEYS[1])
if #KEYS > 1 then redis.call('ZREM', KEYS[2], ARGV[2]) end
if watched then wake(KEYS[1], tonumber(ARGV[3])) end
if was then return 1 end
return 0
"""

# ARGV: now. Removes what is left of a session that expired (by the caller's clock) or
# whose hash Redis already expired: its stream keys outlive it by up to one ttl.
_PURGE_EXPIRED = """
local x = redis.call('HGET', KEYS[1], 'x')
if x and tonumber(x) > tonumber(ARGV[1]) then return 0 end
purge(KEYS[1])
return 1
"""

# ARGV: now, stream id, request id JSON, owner, lease. Returns {first, last} or -1.
_OPEN_STREAM = """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
local cur = redis.call('HMGET', st, 'f', 'n')
local f = cur[1] or '1'
local n = cur[2] or '0'
redis.call('HSET', st, 'r', ARGV[3], 'o', ARGV[4], 'l', ARGV[5], 'f', f, 'n', n, 'z', '0')
redis.call('SADD', KEYS[1] .. ':streams', ARGV[2])
local px = stream_px(KEYS[1], now)
redis.call('PEXPIRE', st, px)
redis.call('PEXPIRE', KEYS[1] .. ':streams', px)
wake(KEYS[1], px)
return {f, n}
"""

# ARGV: now, stream id, field, value, wake ('1'/'0'). Returns 1, -1 (no session), -2 (no stream).
_SET_STREAM_FIELD = """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 then return -2 end
redis.call('HSET', st, ARGV[3], ARGV[4])
if ARGV[5] == '1' then wake(KEYS[1], stream_px(KEYS[1], now)) end
return 1
"""

# ARGV: now, stream id, max events ('' for no trimming), open ('1'/'0'), the open's
# request id JSON, owner and lease, finish ('1'/'0'), then the events packed in four
# arguments (a few large arguments cost the client far less than two per event): their
# data concatenated, the data sizes in bytes (space-separated, '' for no events), their
# names concatenated, and the name sizes (-1 for an event without a name). Opens (or
# takes over) the stream if asked, appends every event as one XADD each, marks the
# stream done if asked: one script, so atomic, and the seqs of a batch are
# consecutive. Returns the last seq (the batch holds the seqs up to it), -1 (no
# session) or -2 (no stream). A stream opened by this call (most often a whole
# response) wakes nobody: no reader can be waiting on a stream that did not exist.
_WRITE = """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
local cur = redis.call('HMGET', st, 'f', 'n')
local new_stream = not cur[2]
local px = false
if ARGV[4] == '1' then
  cur[1] = cur[1] or '1'
  cur[2] = cur[2] or '0'
  redis.call('HSET', st, 'r', ARGV[5], 'o', ARGV[6], 'l', ARGV[7],
    'f', cur[1], 'n', cur[2], 'z', '0')
  redis.call('SADD', KEYS[1] .. ':streams', ARGV[2])
  px = stream_px(KEYS[1], now)
  redis.call('PEXPIRE', st, px)
  redis.call('PEXPIRE', KEYS[1] .. ':streams', px)
elseif not cur[2] then
  return -2
end
local n = tonumber(cur[2])
if ARGV[10] ~= '' then
  local f = tonumber(cur[1])
  local ev = KEYS[1] .. ':ev:' .. ARGV[2]
  local fresh = redis.call('EXISTS', ev) == 0
  local max = ARGV[3]
  local data, names = ARGV[9], ARGV[11]
  local next_name_size = string.gmatch(ARGV[12], '%S+')
  local at, name_at = 1, 1
  for size in string.gmatch(ARGV[10], '%d+') do
    n = n + 1
    local stop = at + tonumber(size)
    local d = string.sub(data, at, stop - 1)
    at = stop
    local id = string.format('0-%d', n)
    local name_size = tonumber(next_name_size())
    if name_size < 0 then
      if max == '' then
        redis.call('XADD', ev, id, 'd', d)
      else
        redis.call('XADD', ev, 'MAXLEN', max, id, 'd', d)
      end
    else
      local name_stop = name_at + name_size
      local e = string.sub(names, name_at, name_stop - 1)
      name_at = name_stop
      if max == '' then
        redis.call('XADD', ev, id, 'd', d, 'e', e)
      else
        redis.call('XADD', ev, 'MAXLEN', max, id, 'd', d, 'e', e)
      end
    end
  end
  if max ~= '' then
    local m = tonumber(max)
    if n - f + 1 > m then f = n - m + 1 end
  end
  if ARGV[8] == '1' then
    redis.call('HSET', st, 'n', string.format('%d', n), 'f', string.format('%d', f), 'z', '1')
  else
    redis.call('HSET', st, 'n', string.format('%d', n), 'f', string.format('%d', f))
  end
  if fresh then
    px = px or stream_px(KEYS[1], now)
    redis.call('PEXPIRE', ev, px)
  end
elseif ARGV[8] == '1' then
  redis.call('HSET', st, 'z', '1')
end
if (ARGV[4] == '1' or ARGV[8] == '1') and not (ARGV[4] == '1' and new_stream) then
  wake(KEYS[1], px or stream_px(KEYS[1], now))
end
return n
"""

# ARGV: now, stream id, wake ms. Returns 1 if the live session had that stream.
# Wakes blocked readers: on a live session the wake stream lives until 'g' as usual;
# on a dead one only if someone watches it, for as long as after a session delete.
_DELETE_STREAM = """
local now = tonumber(ARGV[1])
local was = live(KEYS[1], now)
local st = KEYS[1] .. ':st:' .. ARGV[2]
local existed = redis.call('DEL', st, KEYS[1] .. ':ev:' .. ARGV[2]) > 0
redis.call('SREM', KEYS[1] .. ':streams', ARGV[2])
if was then
  wake(KEYS[1], stream_px(KEYS[1], now))
elseif redis.call('EXISTS', KEYS[1] .. ':wake') == 1 then
  wake(KEYS[1], tonumber(ARGV[3]))
end
if was and existed then return 1 end
return 0
"""

# ARGV: now, wake ms, then the stream ids. Returns how many the live session had.
_DELETE_STREAMS = """
local now = tonumber(ARGV[1])
local was = live(KEYS[1], now)
local removed = 0
for i = 3, #ARGV do
  local existed = redis.call('DEL', KEYS[1] .. ':st:' .. ARGV[i], KEYS[1] .. ':ev:' .. ARGV[i]) > 0
  redis.call('SREM', KEYS[1] .. ':streams', ARGV[i])
  if existed then removed = removed + 1 end
end
if was then
  wake(KEYS[1], stream_px(KEYS[1], now))
  return removed
elseif redis.call('EXISTS', KEYS[1] .. ':wake') == 1 then
  wake(KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

# ARGV: now, keep, then the stream ids to note. The noted streams are the session
# hash's field 'q' (ids joined by spaces, oldest first), outside the payload a load
# reads. Returns the ids dropped (oldest first), or -1 if the session is gone.
_RECORD_STREAMS = """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local keep = tonumber(ARGV[2])
local noted, seen = {}, {}
local function note(sid)
  if not seen[sid] then
    seen[sid] = true
    noted[#noted + 1] = sid
  end
end
for sid in string.gmatch(redis.call('HGET', KEYS[1], 'q') or '', '%S+') do note(sid) end
for i = 3, #ARGV do note(ARGV[i]) end
local dropped = {}
local excess = #noted - keep
for i = 1, excess do
  local sid = noted[i]
  redis.call('DEL', KEYS[1] .. ':st:' .. sid, KEYS[1] .. ':ev:' .. sid)
  redis.call('SREM', KEYS[1] .. ':streams', sid)
  dropped[i] = sid
end
if excess > 0 then
  redis.call('HSET', KEYS[1], 'q', table.concat(noted, ' ', excess + 1))
  wake(KEYS[1], stream_px(KEYS[1], now))
else
  redis.call('HSET', KEYS[1], 'q', table.concat(noted, ' '))
end
return dropped
"""

# ARGV: now, stream id. Returns {r, o, l, f, n, z} or nil.
_LOAD_STREAM = """
if not live(KEYS[1], tonumber(ARGV[1])) then return false end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 then return false end
return redis.call('HMGET', st, 'r', 'o', 'l', 'f', 'n', 'z')
"""

# ARGV: now, stream id, first entry id, count.
# Returns {status, entries, last wake id}; status -1 no session, 0 no stream, 1 open, 2 done.
_READ = """
if not live(KEYS[1], tonumber(ARGV[1])) then return {-1, {}, '0-0'} end
local rows = redis.call('XRANGE', KEYS[1] .. ':ev:' .. ARGV[2], ARGV[3], '+', 'COUNT', ARGV[4])
local done = redis.call('HGET', KEYS[1] .. ':st:' .. ARGV[2], 'z')
local status = 0
if done == '1' then status = 2 elseif done then status = 1 end
local w = redis.call('XREVRANGE', KEYS[1] .. ':wake', '+', '-', 'COUNT', 1)
local wid = '0-0'
if #w > 0 then wid = w[1][1] end
return {status, rows, wid}
"""

# On the index. ARGV: now, cursor score ('' for the first page), cursor member, count.
# Finds the first entry after the cursor whose score is above now; entries are in
# (score, member) order. The cursor's member usually still has the cursor's score
# (ZRANK finds it at once); if it was touched or deleted, skip the ties before it.
_PAGE_START = """
local idx = KEYS[1]
local n = tonumber(ARGV[4])
local floor = redis.call('ZCOUNT', idx, '-inf', ARGV[1])
local start = floor
if ARGV[2] ~= '' then
  local cs = tonumber(ARGV[2])
  local cm = ARGV[3]
  local s = redis.call('ZSCORE', idx, cm)
  if s and tonumber(s) == cs then
    start = redis.call('ZRANK', idx, cm) + 1
  else
    start = redis.call('ZCOUNT', idx, '-inf', '(' .. ARGV[2])
    local scanning = true
    while scanning do
      local batch = redis.call('ZRANGE', idx, start, start + 99, 'WITHSCORES')
      if #batch == 0 then break end
      for i = 1, #batch, 2 do
        if tonumber(batch[i + 1]) == cs and batch[i] <= cm then
          start = start + 1
        else
          scanning = false
          break
        end
      end
    end
  end
  if start < floor then start = floor end
end
local entries = redis.call('ZRANGE', idx, start, start + n - 1, 'WITHSCORES')
"""

# Cluster: the session hashes live in other slots; returns a flat {member, score, ...}.
_PAGE = _PAGE_START + "return entries"

# Standalone: one round trip for the whole page. ARGV[5] is the key prefix. Returns one
# JSON document, [[member, score, p, u, c, a, x, t, v], ...] (false for missing fields),
# because one bulk string decodes far faster than thousands of nested replies.
_PAGE_RECORDS = (
    _PAGE_START
    + """
local rows = {}
for i = 1, #entries, 2 do
  local base = ARGV[5] .. '{' .. entries[i] .. '}'
  local v = redis.call('HMGET', base, 'p', 'u', 'c', 'a', 'x', 't', 'v')
  rows[#rows + 1] = {entries[i], entries[i + 1], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
end
if #rows == 0 then return '[]' end
return cjson.encode(rows)
"""
)

# On the index. ARGV: now, member, ... Removes members still scored at or below now.
_PRUNE = """
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= now then removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return removed
"""


# A named lock's key. ARGV: owner. Deletes it only for its holder.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Script:
    """A Lua script run by EVALSHA, falling back to EVAL when the server lost its cache."""

    def __init__(self, body: str, *, helpers: bool = True) -> None:
        self.source = (_LUA_HELPERS + body) if helpers else body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self._head = script_head(self.sha)

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            if type(client) is WireLane:
                return await client.evalsha(self._head, (len(keys), *keys, *args))
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as exc:
            from redis.exceptions import NoScriptError

            if not isinstance(exc, NoScriptError):
                raise
            # The server restarted or flushed its script cache; EVAL caches it again.
            return await client.execute_command("EVAL", self.source, len(keys), *keys, *args)


_INSERT_SCRIPT = _Script(_INSERT)
_PUT_SCRIPT = _Script(_PUT)
_CAS_SCRIPT = _Script(_CAS, helpers=False)
_TOUCH_SCRIPT = _Script(_TOUCH)
_LOAD_TOUCH_SCRIPT = _Script(_LOAD_TOUCH)
_DELETE_SCRIPT = _Script(_DELETE)
_PURGE_EXPIRED_SCRIPT = _Script(_PURGE_EXPIRED)
_OPEN_STREAM_SCRIPT = _Script(_OPEN_STREAM)
_SET_STREAM_FIELD_SCRIPT = _Script(_SET_STREAM_FIELD)
_WRITE_SCRIPT = _Script(_WRITE)
_DELETE_STREAM_SCRIPT = _Script(_DELETE_STREAM)
_DELETE_STREAMS_SCRIPT = _Script(_DELETE_STREAMS)
_RECORD_STREAMS_SCRIPT = _Script(_RECORD_STREAMS)
_LOAD_STREAM_SCRIPT = _Script(_LOAD_STREAM)
_READ_SCRIPT = _Script(_READ)
_PAGE_SCRIPT = _Script(_PAGE, helpers=False)
_PAGE_RECORDS_SCRIPT = _Script(_PAGE_RECORDS, helpers=False)
_PRUNE_SCRIPT = _Script(_PRUNE, helpers=False)
_UNLOCK_SCRIPT = _Script(_UNLOCK, helpers=False)

_RECORD_FIELDS = (b"p", b"u", b"c", b"a", b"x", b"t", b"v")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(value: float) -> str:
    """A float as the shortest text that reads back as the same float (Lua reads it too)."""
    return repr(float(value))


def _px(seconds: float) -> int:
    """Milliseconds for PEXPIRE: rounded up, at least 1 (0 would delete at once)."""
    return max(1, math.ceil(seconds * 1000))


def _record_values(record: SessionRecord) -> list[str]:
    """The record as the write scripts take it: p c a x t v, has principal, principal."""
    return [
        record.payload(),
        _num(record.created_at),
        _num(record.last_accessed),
        _num(record.expires_at),
        _num(record.ttl),
        str(record.version),
        "0" if record.principal is None else "1",
        record.principal or "",
    ]


_encode_json_string = json.encoder.encode_basestring_ascii  # json.dumps of a str


def _request_id_json(state: StreamState) -> str:
    request_id = state.request_id
    if type(request_id) is int:  # the usual id: what json.dumps writes for it
        return str(request_id)
    if type(request_id) is str:
        return _encode_json_string(request_id)
    try:
        return json.dumps(request_id)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stream request id is not JSON-encodable: {exc}") from exc


def _import_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as exc:
        raise MissingExtraError("redis", "redis") from exc
    return redis_asyncio


def _cluster_url(url: str) -> str:
    """``redis+cluster://`` → ``redis://`` (and the TLS form) for redis-py's parser."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removesuffix("+cluster")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


class _Guard:
    """``with guard:`` re-raises driver errors as the project's own, chained.

    A plain class rather than a generator context manager: it wraps every command.
    """

    __slots__ = ("_driver", "_unavailable")

    def __init__(
        self,
        unavailable: tuple[type[BaseException], ...],
        driver: tuple[type[BaseException], ...],
    ) -> None:
        self._unavailable = unavailable
        self._driver = driver

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, SessionMiddlewareError):
            return
        if isinstance(exc, self._unavailable):
            raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: {exc}") from exc
        if isinstance(exc, self._driver):
            raise StoreError(f"{FAILED_MESSAGE}: {exc}") from exc


class RedisStore(Store):
    """Sessions and event streams in Redis; ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://`` and ``rediss+cluster://`` select it.

    Build it with :meth:`from_url` (the store owns and closes its client) or pass a
    ``redis.asyncio.Redis`` / ``RedisCluster`` as ``client`` (the caller owns it and
    the store never closes it). ``prefix`` namespaces every key, so several
    applications or tests can share one database. ``max_events``, when set, is the
    default trim length of every event stream. ``blocking_client`` is the client for
    XREAD BLOCK; by default the store makes its own, except for a caller-owned
    Cluster client, which is then used for blocking reads too. With ``lane`` (the
    default) a store built from a plain ``redis://`` URL without client options
    sends the commands every request makes over connections of its own (see
    ``redis_wire``); ``lane=False`` keeps them on redis-py.
    """

    schemes: ClassVar[tuple[str, ...]] = (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
    )
    records_streams_natively = True

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        secret: str | bytes | None = None,
        max_events: int | None = None,
        blocking_client: Any = None,
        lane: bool = True,
        **client_options: Any,
    ) -> None:
        super().__init__(secret=secret)
        if (client is None) == (url is None):
            raise ConfigurationError(NEED_CLIENT_OR_URL)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(BAD_PREFIX)
        if max_events is not None and (
            not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1
        ):
            raise ConfigurationError(BAD_MAX_EVENTS)
        self._redis = _import_redis()
        from redis import exceptions as redis_exceptions

        self._unavailable_errors: tuple[type[BaseException], ...] = (
            redis_exceptions.ConnectionError,
            redis_exceptions.TimeoutError,
            redis_exceptions.ClusterDownError,
            redis_exceptions.TryAgainError,
            redis_exceptions.SlotNotCoveredError,
            OSError,
            TimeoutError,
        )
        self._driver_errors: tuple[type[BaseException], ...] = (
            redis_exceptions.RedisError,
            redis_exceptions.RedisClusterException,
        )
        self._guard = _Guard(self._unavailable_errors, self._driver_errors)
        self._url = url
        self._client_options = client_options
        self._owns_client = client is None
        self._client: Any = client
        self._blocking: Any = blocking_client
        self._owns_blocking = False
        self._prefix = prefix
        self._index = f"{prefix}index"
        self._max_events = max_events
        if url is not None:
            self._cluster = urlsplit(url).scheme.lower().endswith("+cluster")
        else:
            from redis.asyncio.cluster import RedisCluster

            self._cluster = isinstance(client, RedisCluster)
        # The commands every request makes skip redis-py's pool on a plain URL.
        self._lane = (
            WireLane.for_url(url)
            if lane and url is not None and not client_options and not self._cluster
            else None
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        secret: str | bytes | None = None,
        client: Any = None,
        max_events: int | None = None,
        lane: bool = True,
        **client_options: Any,
    ) -> RedisStore:
        """The store a URL names; ``client_options`` go to redis-py's ``from_url``.

        With ``client`` the URL only has to name a Redis scheme and the given
        client (owned by the caller) is used instead of a new one.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in cls.schemes:
            raise ConfigurationError(f"not a Redis URL: {scheme!r} is not one of {cls.schemes}")
        if client is not None:
            return cls(client, prefix=prefix, secret=secret, max_events=max_events)
        return cls(
            url=url,
            prefix=prefix,
            secret=secret,
            max_events=max_events,
            lane=lane,
            **client_options,
        )

    # -- connections -----------------------------------------------------------------

    def _build_client(self, url: str, *, blocking: bool) -> Any:
        options = dict(self._client_options)
        if "retry" not in options:
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff

            options["retry"] = Retry(ExponentialBackoff(cap=0.2, base=0.02), DEFAULT_RETRIES)
        if blocking:
            # Every follower holds one connection while it blocks: no cap, and a read
            # timeout longer than one block.
            options["socket_timeout"] = BLOCK_SLICE + 10
            options["max_connections"] = _UNCAPPED
        if self._cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(_cluster_url(url), **options)
        return self._redis.from_url(url, **options)

    @property
    def client(self) -> Any:
        """The redis-py client commands go through (created on first use)."""
        if self._client is None and self._url is not None:
            self._client = self._build_client(self._url, blocking=False)
        return self._client

    @property
    def _hot(self) -> Any:
        """What the scripts of sessions and streams go through: the lane if there is one.

        Listing, purging, the index and locks (operations, not requests) stay on
        redis-py.
        """
        return self.client if self._lane is None else self._lane

    def _blocking_client(self) -> Any:
        if self._blocking is None:
            if self._url is not None:
                self._blocking = self._build_client(self._url, blocking=True)
                self._owns_blocking = True
            elif self._cluster:
                return self.client
            else:
                pool = self.client.connection_pool
                kwargs = dict(pool.connection_kwargs)
                kwargs["socket_timeout"] = BLOCK_SLICE + 10
                dedicated = self._redis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
                self._blocking = self._redis.Redis(connection_pool=dedicated)
                self._owns_blocking = True
        return self._blocking

    async def open(self) -> None:
        """Connect and check the server answers (StoreUnavailableError if not)."""
        with self._guard:
            await self.client.execute_command("PING")

    async def close(self) -> None:
        """Close the clients this store made; a caller's client is left open."""
        if self._lane is not None:
            self._lane.close()
        blocking, self._blocking = self._blocking, None
        if blocking is not None and self._owns_blocking:
            with contextlib.suppress(Exception):
                await blocking.aclose()
        self._owns_blocking = False
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- key names -------------------------------------------------------------------

    def _base(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def _session_keys(self, key: str) -> list[str]:
        """KEYS for a session script: the session hash, plus the index when one script may
        span slots (standalone Redis)."""
        base = self._base(key)
        return [base] if self._cluster else [base, self._index]

    # -- sessions --------------------------------------------------------------------

    def _insert_args(self, record: SessionRecord, now: float) -> list[str]:
        return [
            _num(now),
            str(_px(record.expires_at - now)),
            record.key,
            _num(record.expires_at),
            *_record_values(record),
        ]

    async def _insert(self, record: SessionRecord) -> None:
        now = self.now()
        with self._guard:
            created = await _INSERT_SCRIPT(
                self._hot, self._session_keys(record.key), self._insert_args(record, now)
            )
            if not created:
                raise SessionExistsError(SESSION_EXISTS)
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, _num(record.expires_at), record.key
                )

    def _parse_record(self, key: str, values: Sequence[Any], now: float) -> SessionRecord | None:
        payload, principal, created, accessed, expires, ttl, version = values
        if payload is None or expires is None or float(expires) <= now:
            return None
        return SessionRecord.from_payload(
            key=key,
            payload=payload,
            principal=None if principal is None else _text(principal),
            created_at=float(created),
            last_accessed=float(accessed),
            expires_at=float(expires),
            ttl=float(ttl),
            version=int(version),
        )

    @staticmethod
    def _unpack(key: str, packed: Any) -> SessionRecord:
        """A record from the NUL-joined string the _LOAD_TOUCH script returns."""
        parts = packed.split(b"\0" if isinstance(packed, bytes) else "\0", 6)
        return SessionRecord.from_payload(
            key=key,
            payload=parts[5],
            principal=_text(parts[6]) if len(parts) == 7 else None,
            created_at=float(parts[1]),
            last_accessed=float(parts[2]),
            expires_at=float(parts[0]),
            ttl=float(parts[3]),
            version=int(parts[4]),
        )

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        # One HMGET, not a script: a read needs no atomicity beyond one command,
        # and a script call costs the server several times the read itself.
        with self._guard:
            values = await self._hot.execute_command("HMGET", self._base(key), *_RECORD_FIELDS)
        return self._parse_record(key, values, now)

    async def load(
        self, session_id: str, *, touch: bool = False, ttl: float | None = None
    ) -> SessionRecord | None:
        """The session, or None when it is unknown or expired.

        With ``touch=True`` the session's expiry also slides, exactly as
        :meth:`touch` (with ``ttl``) would, in the same round trip, and the
        touched record is returned: the fast path for a request that loads and
        touches its session. (Redis-only for now; other stores: load, then touch.)
        """
        if not touch:
            return await super().load(session_id)
        key = self.key(session_id)
        args = (_num(self.now()),) if ttl is None else (_num(self.now()), _num(ttl))
        with self._guard:
            packed = await _LOAD_TOUCH_SCRIPT(self._hot, self._session_keys(key), args)
            if packed is None:
                return None
            record = self._unpack(key, packed)
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, "XX", _num(record.expires_at), key
                )
        return record

    async def _put(self, record: SessionRecord) -> None:
        now = self.now()
        with self._guard:
            await _PUT_SCRIPT(
                self._hot, self._session_keys(record.key), self._insert_args(record, now)
            )
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, _num(record.expires_at), record.key
                )

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        args = [
            _num(self.now()),
            str(expected_version),
            record.payload(),
            str(record.version),
            "0" if record.principal is None else "1",
            record.principal or "",
        ]
        with self._guard:
            result = await _CAS_SCRIPT(self._hot, [self._base(record.key)], args)
        return int(result) == 1

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        args = (_num(now),) if ttl is None else (_num(now), _num(ttl))
        with self._guard:
            expires = await _TOUCH_SCRIPT(self._hot, self._session_keys(key), args)
            if expires is None:
                return False
            if self._cluster:
                await self.client.execute_command("ZADD", self._index, "XX", expires, key)
        return True

    async def _delete(self, key: str) -> bool:
        args = [_num(self.now()), key, str(WAKE_AFTER_DELETE_MS)]
        with self._guard:
            existed = await _DELETE_SCRIPT(self.client, self._session_keys(key), args)
            if self._cluster:
                await self.client.execute_command("ZREM", self._index, key)
        return int(existed) == 1

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        """Pages in index order (expires_at, then digest) from the first unexpired entry.

        A session touched while someone pages moves towards the end and may be
        listed twice; a session is skipped only if its expiry moves backwards.
        """
        if cursor is None:
            after_score, after_member = "", ""
        else:
            after_score, sep, after_member = cursor.partition(":")
            if not sep or not after_member:
                raise StoreError(BAD_CURSOR)
            try:
                float(after_score)
            except ValueError:
                raise StoreError(BAD_CURSOR) from None
        records: list[SessionRecord] = []
        with self._guard:
            while True:
                want = limit - len(records)
                entries = await self._page(now, after_score, after_member, want + 1)
                for member, score, values in entries[:want]:
                    record = self._parse_record(member, values, now)
                    if record is not None:
                        records.append(record)
                    after_score, after_member = score, member
                if len(entries) <= want:
                    return Page(records, None)
                if len(records) == limit:
                    return Page(records, f"{after_score}:{after_member}")

    async def _page(
        self, now: float, after_score: str, after_member: str, count: int
    ) -> list[tuple[str, str, Sequence[Any]]]:
        """Up to ``count`` index entries after the cursor: (member, score, record fields)."""
        args = [_num(now), after_score, after_member, count]
        if not self._cluster:
            args.append(self._prefix)
            document = await _PAGE_RECORDS_SCRIPT(self.client, [self._index], args)
            return [
                (row[0], row[1], [None if v is False else v for v in row[2:]])
                for row in json.loads(document)
            ]
        flat = await _PAGE_SCRIPT(self.client, [self._index], args)
        entries = [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2)]
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for member, _score in entries:
                pipe.execute_command("HMGET", self._base(member), *_RECORD_FIELDS)
            rows = await pipe.execute()
        return [(m, sc, values) for (m, sc), values in zip(entries, rows, strict=True)]

    async def _cleanup(self, now: float) -> int:
        removed = 0
        with self._guard:
            while True:
                raw = await self.client.execute_command(
                    "ZRANGE", self._index, "-inf", _num(now), "BYSCORE", "LIMIT", 0, _CLEANUP_BATCH
                )
                members = [_text(m) for m in raw]
                if not members:
                    return removed
                async with self.client.pipeline(transaction=False) as pipe:
                    for member in members:
                        pipe.execute_command("HGET", self._base(member), "x")
                    expiries = await pipe.execute()
                for member, expires in zip(members, expiries, strict=True):
                    if expires is not None and float(expires) > now:
                        # The index lagged behind a touch (Cluster window): repair it.
                        await self.client.execute_command(
                            "ZADD", self._index, "GT", _text(expires), member
                        )
                    else:
                        # Gone or expired: its stream keys may still linger (up to a ttl).
                        await _PURGE_EXPIRED_SCRIPT(self.client, [self._base(member)], [_num(now)])
                removed += int(
                    await _PRUNE_SCRIPT(self.client, [self._index], [_num(now), *members])
                )

    async def purge(self) -> int:
        """Delete every key under this store's prefix (SCAN, never KEYS); returns how many.

        For tests and for tearing down a namespace, not for production traffic.
        """
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._prefix) + "*"
        deleted = 0
        with self._guard:
            batch: list[Any] = []
            async for name in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
        return deleted

    async def _unlink(self, names: list[Any]) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.execute_command("UNLINK", name)
            results = await pipe.execute()
        return sum(int(r) for r in results)

    # -- named locks -------------------------------------------------------------------

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """SET NX PX: Redis keeps the lease's time itself (``now`` is not needed)."""
        with self._guard:
            taken = await self.client.execute_command(
                "SET", f"{self._prefix}lock:{name}", owner, "NX", "PX", _px(ttl)
            )
        return taken is not None

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        with self._guard:
            deleted = await _UNLOCK_SCRIPT(self.client, [f"{self._prefix}lock:{name}"], [owner])
        return bool(deleted)

    # -- events ----------------------------------------------------------------------

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        args = [
            _num(self.now()),
            state.stream_id,
            _request_id_json(state),
            state.owner,
            _num(state.lease_expires),
        ]
        with self._guard:
            result = await _OPEN_STREAM_SCRIPT(self._hot, [self._base(key)], args)
        if result == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        first, last = result
        return StreamState(
            stream_id=state.stream_id,
            request_id=state.request_id,
            owner=state.owner,
            lease_expires=state.lease_expires,
            first_seq=int(first),
            last_seq=int(last),
            done=False,
        )

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        with self._guard:
            row = await _LOAD_STREAM_SCRIPT(
                self._hot, [self._base(key)], [_num(self.now()), stream_id]
            )
        if row is None:
            return None
        request_id, owner, lease, first, last, done = row
        return StreamState(
            stream_id=stream_id,
            request_id=json.loads(request_id),
            owner=_text(owner),
            lease_expires=float(lease),
            first_seq=int(first),
            last_seq=int(last),
            done=_text(done) == "1",
        )

    async def _set_stream_field(self, key: str, stream_id: str, field: str, value: str) -> None:
        wake = "1" if field == "z" else "0"
        args = [_num(self.now()), stream_id, field, value, wake]
        with self._guard:
            result = int(await _SET_STREAM_FIELD_SCRIPT(self._hot, [self._base(key)], args))
        if result == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        if result == -2:
            raise StreamNotFoundError(STREAM_NOT_FOUND)

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._set_stream_field(key, stream_id, "l", _num(lease_expires))

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._set_stream_field(key, stream_id, "z", "1")

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        [stored] = await self._append_events(key, stream_id, ((data, event),), max_events)
        return stored

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        """One script call for the whole batch: one round trip, atomic, consecutive seqs."""
        if not items:
            return []
        return await self._write_stream(key, stream_id, items, None, False, max_events)

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        """Open, append and finish in one script call: one round trip, atomic."""
        if max_events is None:
            max_events = self._max_events
        args: list[str | bytes] = [
            _num(self.now()),
            stream_id,
            "" if max_events is None else str(max(0, max_events)),
        ]
        if open_as is None:
            args += ["0", "", "", "", "1" if finish else "0"]
        else:
            args += [
                "1",
                _request_id_json(open_as),
                open_as.owner,
                _num(open_as.lease_expires),
                "1" if finish else "0",
            ]
        encoded = [data.encode() for data, _ in items]
        names = [None if event is None else event.encode() for _, event in items]
        args += [
            b"".join(encoded),
            " ".join(map(str, map(len, encoded))),
            b"".join([name for name in names if name is not None]),
            " ".join(["-1" if name is None else str(len(name)) for name in names]),
        ]
        with self._guard:
            last = int(await _WRITE_SCRIPT(self._hot, [self._base(key)], args))
        if last == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        if last == -2:
            raise StreamNotFoundError(STREAM_NOT_FOUND)
        return stored_batch(stream_id, last, items)

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        args = [_num(self.now()), stream_id, str(WAKE_AFTER_DELETE_MS)]
        with self._guard:
            existed = await _DELETE_STREAM_SCRIPT(self._hot, [self._base(key)], args)
        return int(existed) == 1

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        args = [_num(self.now()), str(WAKE_AFTER_DELETE_MS), *stream_ids]
        with self._guard:
            removed = await _DELETE_STREAMS_SCRIPT(self._hot, [self._base(key)], args)
        return int(removed)

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        args = [_num(self.now()), keep, *stream_ids]
        with self._guard:
            dropped = await _RECORD_STREAMS_SCRIPT(self._hot, [self._base(key)], args)
        if dropped == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        return [_text(stream_id) for stream_id in dropped]

    async def _read(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[int, list[StoredEvent], str]:
        args = [_num(self.now()), stream_id, f"0-{max(0, after_seq) + 1}", limit]
        with self._guard:
            status, rows, wake_id = await _READ_SCRIPT(self._hot, [self._base(key)], args)
        events: list[StoredEvent] = []
        for entry_id, flat in rows:
            fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            event = fields.get("e")
            events.append(
                StoredEvent(
                    stream_id=stream_id,
                    seq=int(_text(entry_id).partition("-")[2]),
                    data=_text(fields["d"]),
                    event=None if event is None else _text(event),
                )
            )
        return int(status), events, _text(wake_id)

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []
        _status, events, _wake = await self._read(key, stream_id, after_seq, limit)
        return events

    async def wait_events(
        self,
        session_id: str,
        stream_id: str,
        after_seq: int,
        timeout: float,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Blocking read: XREAD BLOCK on the stream and the session's wake stream.

        Returns at once when events are there, or when the stream is done, gone
        or was never opened; otherwise blocks on a dedicated connection until an
        event lands, the stream is finished or taken over, or ``timeout`` passes.
        """
        if limit <= 0:
            return []
        key = self.key(session_id)
        base = self._base(key)
        deadline = time.monotonic() + timeout
        while True:
            status, events, wake_id = await self._read(key, stream_id, after_seq, limit)
            if events or status != 1:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block_ms = max(1, int(min(remaining, BLOCK_SLICE) * 1000))
            with self._guard:
                await self._blocking_client().execute_command(
                    "XREAD",
                    "COUNT",
                    1,
                    "BLOCK",
                    block_ms,
                    "STREAMS",
                    f"{base}:ev:{stream_id}",
                    f"{base}:wake",
                    f"0-{max(0, after_seq)}",
                    wake_id,
                )
