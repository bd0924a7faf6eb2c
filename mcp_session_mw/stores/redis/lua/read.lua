-- ARGV: now, stream id, first entry id, count.
-- Returns {status, entries, last wake id}; status -1 no session, 0 no stream, 1 open, 2 done.
-- A packed stream's events are returned as XRANGE would.
if not live(KEYS[1], tonumber(ARGV[1])) then return {-1, {}, '0-0'} end
local rows = redis.call('XRANGE', KEYS[1] .. ':ev:' .. ARGV[2], ARGV[3], '+', 'COUNT', ARGV[4])
local done = redis.call('HGET', KEYS[1] .. ':st:' .. ARGV[2], 'z')
local status = 0
if done == '1' then status = 2 elseif done then status = 1 end
if not done then
  local p = packed_stream(KEYS[1], ARGV[2])
  if p then
    status = 2
    local from, count = tonumber(string.match(ARGV[3], '%d+$')), tonumber(ARGV[4])
    for i = 7, #p, 3 do
      if p[i] >= from and #rows < count then
        local fields = {'d', p[i + 1]}
        if p[i + 2] then fields[3] = 'e'; fields[4] = p[i + 2] end
        rows[#rows + 1] = {string.format('0-%d', p[i]), fields}
      end
    end
  end
end
local w = redis.call('XREVRANGE', KEYS[1] .. ':wake', '+', '-', 'COUNT', 1)
local wid = '0-0'
if #w > 0 then wid = w[1][1] end
return {status, rows, wid}
