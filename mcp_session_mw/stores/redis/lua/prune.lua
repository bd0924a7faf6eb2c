-- On the index. ARGV: now, member, ... Removes members still scored at or below now.
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= now then removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return removed
