-- ARGV: now. Removes what is left of a session that expired (by the caller's clock) or
-- whose hash Redis already expired: its stream keys outlive it by up to one ttl.
local x = redis.call('HGET', KEYS[1], 'x')
if x and tonumber(x) > tonumber(ARGV[1]) then return 0 end
purge(KEYS[1])
return 1
