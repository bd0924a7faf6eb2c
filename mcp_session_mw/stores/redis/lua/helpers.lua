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
