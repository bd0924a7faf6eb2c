-- ARGV: now, stream id, request id JSON, owner, lease. Returns {first, last} or -1.
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
unfinish(KEYS[1], ARGV[2], now)
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
