-- ARGV: now, stream id, first entry id, count.
-- Returns {status, entries, last wake id}; status -1 no session, 0 no stream, 1 open, 2 done.
if not live(KEYS[1], tonumber(ARGV[1])) then return {-1, {}, '0-0'} end
local rows = redis.call('XRANGE', KEYS[1] .. ':ev:' .. ARGV[2], ARGV[3], '+', 'COUNT', ARGV[4])
local done = redis.call('HGET', KEYS[1] .. ':st:' .. ARGV[2], 'z')
local status = 0
if done == '1' then status = 2 elseif done then status = 1 end
local w = redis.call('XREVRANGE', KEYS[1] .. ':wake', '+', '-', 'COUNT', 1)
local wid = '0-0'
if #w > 0 then wid = w[1][1] end
return {status, rows, wid}
