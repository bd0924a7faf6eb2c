-- Defines pack() for load_touch.lua: the record as one string, fields joined by
-- NUL: x c a t v p [u]. One bulk reply parses far faster in redis-py than seven.
-- The payload is JSON, which never holds a raw NUL, and the principal comes last,
-- so the split is unambiguous.
local function pack(v)
  if v[7] then return table.concat(v, '\0', 1, 7) end
  return table.concat(v, '\0', 1, 6)
end
