-- ARGV: now, stream id, field, value, wake ('1'/'0'), the replay window of a finished
-- stream in ms ('' for none); a finished stream is packed again after the change. Returns 1, -1 (no session), -2 (no stream).
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 and not unpack_finished(KEYS[1], ARGV[2], now) then return -2 end
redis.call('HSET', st, ARGV[3], ARGV[4])
if redis.call('HGET', st, 'z') == '1' then pack_finished(KEYS[1], ARGV[2], now, ARGV[6]) end
if ARGV[5] == '1' then wake(KEYS[1], stream_px(KEYS[1], now)) end
return 1
