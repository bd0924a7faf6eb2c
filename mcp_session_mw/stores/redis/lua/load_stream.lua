-- ARGV: now, stream id. Returns {r, o, l, f, n, z} or nil; a packed stream is done.
if not live(KEYS[1], tonumber(ARGV[1])) then return false end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if redis.call('EXISTS', st) == 0 then
  local p = packed_stream(KEYS[1], ARGV[2])
  if not p then return false end
  return {p[1], p[2], p[3], p[4], p[5], '1'}
end
return redis.call('HMGET', st, 'r', 'o', 'l', 'f', 'n', 'z')
