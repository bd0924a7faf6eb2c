-- ARGV: now, stream id, field, value, wake ('1'/'0'). Returns 1, -1 (no session), -2 (no stream).
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 then return -2 end
redis.call('HSET', st, ARGV[3], ARGV[4])
if ARGV[5] == '1' then wake(KEYS[1], stream_px(KEYS[1], now)) end
return 1
