-- ARGV: now, member, wake ms. Returns 1 if a live session was deleted.
local was = live(KEYS[1], tonumber(ARGV[1]))
local watched = redis.call('EXISTS', KEYS[1] .. ':wake') == 1
purge(KEYS[1])
if #KEYS > 1 then redis.call('ZREM', KEYS[2], ARGV[2]) end
if watched then wake(KEYS[1], tonumber(ARGV[3])) end
if was then return 1 end
return 0
