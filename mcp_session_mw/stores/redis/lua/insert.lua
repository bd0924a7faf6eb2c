-- ARGV: now, px, member, score, then the record: p c a x t v, has principal, principal.
if live(KEYS[1], tonumber(ARGV[1])) then return 0 end
purge(KEYS[1])
write_record(KEYS[1], ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
return 1
