-- Functions every session and stream script starts with (scripts.py prepends this file).
--
-- KEYS[1] is always the session hash; the other keys of the session are derived
-- from it (same hash tag, hence the same slot). KEYS[2], when given, is the index
-- sorted set: only on standalone Redis, where a script may span slots.
--
-- Stream keys (the set, states, events, wake) expire at the session hash's field
-- 'g', which is kept at or past the session's own expiry 'x': when a touch moves
-- 'x' past 'g', every stream key is renewed to x + ttl in that same script. So a
-- touch costs O(1), plus O(streams) at most once per ttl, and stream keys outlive
-- their session by at most one ttl (invisible: every read checks the session).
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
    redis.call('DEL', base .. ':st:' .. sid, base .. ':ev:' .. sid, base .. ':fz:' .. sid)
  end
  redis.call('DEL', base, set, base .. ':wake')
end
local function renew_streams(base, now, until_)
  local px = ms(until_ - now)
  local set = base .. ':streams'
  redis.call('PEXPIRE', base .. ':wake', px)
  if redis.call('PEXPIRE', set, px) == 1 then
    for _, sid in ipairs(redis.call('SMEMBERS', set)) do
      -- A finished stream with a replay window ('w') keeps its own expiry.
      local st = base .. ':st:' .. sid
      if redis.call('HEXISTS', st, 'w') == 0 then
        redis.call('PEXPIRE', st, px)
        redis.call('PEXPIRE', base .. ':ev:' .. sid, px)
      end
      local packed = redis.call('GET', base .. ':fz:' .. sid)
      if packed and cmsgpack.unpack(packed)[6] == 0 then
        redis.call('PEXPIRE', base .. ':fz:' .. sid, px)
      end
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
-- Tell every process's follower (one subscription each, to <prefix>follow) that a
-- stream of the session moved: "<digest>:<stream id>", or "<digest>:" for all of them.
local function notify(base, sid)
  redis.call('PUBLISH', string.sub(base, 1, -67) .. 'follow', string.sub(base, -65, -2) .. ':' .. sid)
end
-- A stream of the session was (re)opened, finished or removed: wake its waiters.
local function wake(base, px)
  redis.call('XADD', base .. ':wake', 'MAXLEN', '1', '*', 'w', '1')
  redis.call('PEXPIRE', base .. ':wake', px)
  notify(base, '')
end
-- A finished stream of at most PACK_EVENTS events and PACK_BYTES bytes of data is
-- packed: its state hash and Redis Stream become one string '...:fz:<stream>', the
-- MessagePack of {r, o, l, f, n, w, seq, data, name, seq, data, name, ...} (name
-- false for an event without one; w the replay window in ms, 0 when the stream
-- lives as long as its session). A longer finished stream stays as it is. With a
-- window (ms, '' for none) either form expires that long after its final event.
local PACK_EVENTS = 16
local PACK_BYTES = 16384
local function pack_finished(base, sid, now, window)
  local st = base .. ':st:' .. sid
  local ev = base .. ':ev:' .. sid
  local w = tonumber(window)
  local px = w or stream_px(base, now)
  local rows = redis.call('XRANGE', ev, '-', '+', 'COUNT', PACK_EVENTS + 1)
  local s = redis.call('HMGET', st, 'r', 'o', 'l', 'f', 'n')
  local packed = {s[1], s[2], s[3], s[4], s[5], w or 0}
  local bytes = 0
  if #rows <= PACK_EVENTS then
    for _, row in ipairs(rows) do
      local fields, d, e = row[2], '', false
      for i = 1, #fields, 2 do
        if fields[i] == 'd' then d = fields[i + 1] elseif fields[i] == 'e' then e = fields[i + 1] end
      end
      bytes = bytes + #d
      packed[#packed + 1] = tonumber(string.match(row[1], '%d+$'))
      packed[#packed + 1] = d
      packed[#packed + 1] = e
    end
  end
  if #rows > PACK_EVENTS or bytes > PACK_BYTES then
    if w then
      redis.call('HSET', st, 'w', window)
      redis.call('PEXPIRE', st, px)
      redis.call('PEXPIRE', ev, px)
    end
    return
  end
  redis.call('DEL', st, ev)
  redis.call('SET', base .. ':fz:' .. sid, cmsgpack.pack(packed), 'PX', px)
end
-- The packed stream's fields {r, o, l, f, n, w, events...}, or false.
local function packed_stream(base, sid)
  local raw = redis.call('GET', base .. ':fz:' .. sid)
  if not raw then return false end
  return cmsgpack.unpack(raw)
end
-- Turn a packed stream back into a state hash and a Redis Stream (to reopen or
-- change it); returns true if there was one.
local function unpack_finished(base, sid, now)
  local p = packed_stream(base, sid)
  if not p then return false end
  local st = base .. ':st:' .. sid
  local ev = base .. ':ev:' .. sid
  local px = stream_px(base, now)
  redis.call('HSET', st, 'r', p[1], 'o', p[2], 'l', p[3], 'f', p[4], 'n', p[5], 'z', '1')
  redis.call('PEXPIRE', st, px)
  for i = 7, #p, 3 do
    local id = string.format('0-%d', p[i])
    if p[i + 2] then
      redis.call('XADD', ev, id, 'd', p[i + 1], 'e', p[i + 2])
    else
      redis.call('XADD', ev, id, 'd', p[i + 1])
    end
  end
  if #p >= 7 then redis.call('PEXPIRE', ev, px) end
  redis.call('DEL', base .. ':fz:' .. sid)
  return true
end
-- Before a stream is reopened: unpack it, or drop its replay window.
local function unfinish(base, sid, now)
  if unpack_finished(base, sid, now) then return end
  local st = base .. ':st:' .. sid
  if redis.call('HDEL', st, 'w') == 1 then
    local px = stream_px(base, now)
    redis.call('PEXPIRE', st, px)
    redis.call('PEXPIRE', base .. ':ev:' .. sid, px)
  end
end
