-- ARGV: as for insert.lua. Keeps 'g' and the streams; renews them if the expiry moved past.
write_record(KEYS[1], ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local g = redis.call('HGET', KEYS[1], 'g')
local x = tonumber(ARGV[8])
if g and tonumber(g) < x then renew_streams(KEYS[1], tonumber(ARGV[1]), x + tonumber(ARGV[9])) end
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
return 1
