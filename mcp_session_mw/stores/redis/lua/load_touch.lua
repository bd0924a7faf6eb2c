-- As touch.lua, but returns the touched record, packed: load and touch in one round trip.
if not slide(KEYS, ARGV[1], ARGV[2]) then return false end
return pack(redis.call('HMGET', KEYS[1], 'x', 'c', 'a', 't', 'v', 'p', 'u'))
