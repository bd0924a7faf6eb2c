-- A named lock's key. ARGV: owner. Deletes it only for its holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
