-- The start of page.lua and page_records.lua, on the index.
-- ARGV: now, cursor score ('' for the first page), cursor member, count.
-- Finds the first entry after the cursor whose score is above now; entries are in
-- (score, member) order. The cursor's member usually still has the cursor's score
-- (ZRANK finds it at once); if it was touched or deleted, skip the ties before it.
local idx = KEYS[1]
local n = tonumber(ARGV[4])
local floor = redis.call('ZCOUNT', idx, '-inf', ARGV[1])
local start = floor
if ARGV[2] ~= '' then
  local cs = tonumber(ARGV[2])
  local cm = ARGV[3]
  local s = redis.call('ZSCORE', idx, cm)
  if s and tonumber(s) == cs then
    start = redis.call('ZRANK', idx, cm) + 1
  else
    start = redis.call('ZCOUNT', idx, '-inf', '(' .. ARGV[2])
    local scanning = true
    while scanning do
      local batch = redis.call('ZRANGE', idx, start, start + 99, 'WITHSCORES')
      if #batch == 0 then break end
      for i = 1, #batch, 2 do
        if tonumber(batch[i + 1]) == cs and batch[i] <= cm then
          start = start + 1
        else
          scanning = false
          break
        end
      end
    end
  end
  if start < floor then start = floor end
end
local entries = redis.call('ZRANGE', idx, start, start + n - 1, 'WITHSCORES')
