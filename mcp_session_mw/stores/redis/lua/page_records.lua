-- Standalone: one round trip for the whole page. ARGV[5] is the key prefix. Returns one
-- JSON document, [[member, score, p, u, c, a, x, t, v], ...] (false for missing fields),
-- because one bulk string decodes far faster than thousands of nested replies.
local rows = {}
for i = 1, #entries, 2 do
  local base = ARGV[5] .. '{' .. entries[i] .. '}'
  local v = redis.call('HMGET', base, 'p', 'u', 'c', 'a', 'x', 't', 'v')
  rows[#rows + 1] = {entries[i], entries[i + 1], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
end
if #rows == 0 then return '[]' end
return cjson.encode(rows)
