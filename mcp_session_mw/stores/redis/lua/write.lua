-- ARGV: now, stream id, max events ('' for no trimming), open ('1'/'0'), the open's
-- request id JSON, owner and lease, finish ('1'/'0'), then the events packed in four
-- arguments (a few large arguments cost the client far less than two per event): their
-- data concatenated, the data sizes in bytes (space-separated, '' for no events), their
-- names concatenated, and the name sizes (-1 for an event without a name); last the
-- replay window of a finished stream in ms ('' for none). Opens (or
-- takes over) the stream if asked, appends every event as one XADD each, marks the
-- stream done if asked: one script, so atomic, and the seqs of a batch are
-- consecutive. Returns the last seq (the batch holds the seqs up to it), -1 (no
-- session) or -2 (no stream). Events appended to a stream that existed notify its
-- followers. A stream opened by this call (most often a whole response) wakes
-- nobody: no reader can be waiting on a stream that did not exist.
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return -1 end
local st = KEYS[1] .. ':st:' .. ARGV[2]
if ARGV[4] == '1' then unfinish(KEYS[1], ARGV[2], now) end
local cur = redis.call('HMGET', st, 'f', 'n')
local unpacked = false
if not cur[2] and ARGV[4] ~= '1' and unpack_finished(KEYS[1], ARGV[2], now) then
  cur = redis.call('HMGET', st, 'f', 'n')
  unpacked = true
end
local new_stream = not cur[2]
local px = false
if ARGV[4] == '1' then
  cur[1] = cur[1] or '1'
  cur[2] = cur[2] or '0'
  redis.call('HSET', st, 'r', ARGV[5], 'o', ARGV[6], 'l', ARGV[7],
    'f', cur[1], 'n', cur[2], 'z', '0')
  redis.call('SADD', KEYS[1] .. ':streams', ARGV[2])
  px = stream_px(KEYS[1], now)
  redis.call('PEXPIRE', st, px)
  redis.call('PEXPIRE', KEYS[1] .. ':streams', px)
elseif not cur[2] then
  return -2
end
local n = tonumber(cur[2])
if ARGV[10] ~= '' then
  local f = tonumber(cur[1])
  local ev = KEYS[1] .. ':ev:' .. ARGV[2]
  local fresh = redis.call('EXISTS', ev) == 0
  local max = ARGV[3]
  local data, names = ARGV[9], ARGV[11]
  local next_name_size = string.gmatch(ARGV[12], '%S+')
  local at, name_at = 1, 1
  for size in string.gmatch(ARGV[10], '%d+') do
    n = n + 1
    local stop = at + tonumber(size)
    local d = string.sub(data, at, stop - 1)
    at = stop
    local id = string.format('0-%d', n)
    local name_size = tonumber(next_name_size())
    if name_size < 0 then
      if max == '' then
        redis.call('XADD', ev, id, 'd', d)
      else
        redis.call('XADD', ev, 'MAXLEN', max, id, 'd', d)
      end
    else
      local name_stop = name_at + name_size
      local e = string.sub(names, name_at, name_stop - 1)
      name_at = name_stop
      if max == '' then
        redis.call('XADD', ev, id, 'd', d, 'e', e)
      else
        redis.call('XADD', ev, 'MAXLEN', max, id, 'd', d, 'e', e)
      end
    end
  end
  if max ~= '' then
    local m = tonumber(max)
    if n - f + 1 > m then f = n - m + 1 end
  end
  if ARGV[8] == '1' then
    redis.call('HSET', st, 'n', string.format('%d', n), 'f', string.format('%d', f), 'z', '1')
  else
    redis.call('HSET', st, 'n', string.format('%d', n), 'f', string.format('%d', f))
  end
  if fresh then
    px = px or stream_px(KEYS[1], now)
    redis.call('PEXPIRE', ev, px)
  end
elseif ARGV[8] == '1' then
  redis.call('HSET', st, 'z', '1')
end
if (ARGV[4] == '1' or ARGV[8] == '1') and not (ARGV[4] == '1' and new_stream) then
  wake(KEYS[1], px or stream_px(KEYS[1], now))
elseif ARGV[10] ~= '' and not new_stream then
  notify(KEYS[1], ARGV[2])
end
-- A finished stream is packed (see pack_finished), a short one into one string.
if ARGV[8] == '1' or unpacked then pack_finished(KEYS[1], ARGV[2], now, ARGV[13]) end
return n
