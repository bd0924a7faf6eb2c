-- ARGV: now, stream id, wake ms. Returns 1 if the live session had that stream.
-- Wakes blocked readers: on a live session the wake stream lives until 'g' as usual;
-- on a dead one only if someone watches it, for as long as after a session delete.
local now = tonumber(ARGV[1])
local was = live(KEYS[1], now)
local st = KEYS[1] .. ':st:' .. ARGV[2]
local existed = redis.call('DEL', st, KEYS[1] .. ':ev:' .. ARGV[2],
    KEYS[1] .. ':fz:' .. ARGV[2]) > 0
redis.call('SREM', KEYS[1] .. ':streams', ARGV[2])
if was then
  wake(KEYS[1], stream_px(KEYS[1], now))
elseif redis.call('EXISTS', KEYS[1] .. ':wake') == 1 then
  wake(KEYS[1], tonumber(ARGV[3]))
end
if was and existed then return 1 end
return 0
