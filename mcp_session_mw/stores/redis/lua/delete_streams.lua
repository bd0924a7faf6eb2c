-- ARGV: now, wake ms, then the stream ids. Returns how many the live session had.
local now = tonumber(ARGV[1])
local was = live(KEYS[1], now)
local removed = 0
for i = 3, #ARGV do
  local existed = redis.call('DEL', KEYS[1] .. ':st:' .. ARGV[i], KEYS[1] .. ':ev:' .. ARGV[i],
    KEYS[1] .. ':fz:' .. ARGV[i]) > 0
  redis.call('SREM', KEYS[1] .. ':streams', ARGV[i])
  if existed then removed = removed + 1 end
end
if was then
  wake(KEYS[1], stream_px(KEYS[1], now))
  return removed
elseif redis.call('EXISTS', KEYS[1] .. ':wake') == 1 then
  wake(KEYS[1], tonumber(ARGV[2]))
end
return 0
