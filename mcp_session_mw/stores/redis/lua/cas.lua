-- ARGV: now, expected version, payload, new version, has principal, principal.
-- Timing fields are touch's business: a touch between our read and this write is kept.
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
