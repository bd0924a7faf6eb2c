-- ARGV: now, stream id. Returns {r, o, l, f, n, z} or nil.
if not live(KEYS[1], tonumber(ARGV[1])) then return false end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 then return false end
return redis.call('HMGET', st, 'r', 'o', 'l', 'f', 'n', 'z')
