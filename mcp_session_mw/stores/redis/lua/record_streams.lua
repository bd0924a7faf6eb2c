-- ARGV: now, keep, then the stream ids to note. The noted streams are the session
-- hash's field 'q' (ids joined by spaces, oldest first), outside the payload a load
-- reads. Returns the ids dropped (oldest first), or -1 if the session is gone.
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
  redis.call('DEL', KEYS[1] .. ':st:' .. sid, KEYS[1] .. ':ev:' .. sid,
    KEYS[1] .. ':fz:' .. sid)
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
