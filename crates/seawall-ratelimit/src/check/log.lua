-- seawall-ratelimit: a check of one sliding-log rule, on its own (the
-- log is a sorted set, which check/head.lua's GET of the state cannot
-- read). As the other check scripts, it only decides whether to consume and
-- answers with what it read; redis.rs computes the decision's numbers with
-- the memory store's steps, from a log summarized by three numbers
-- (algorithm.rs `Log::summarized`). Numbers go to redis.call as formatted
-- strings and arguments are read with `+ 0`, as check/head.lua says why.
--
-- KEYS[1]   the subject's block: blocked until (µs), expiring with it
-- KEYS[2]   the rule's log: one member per admitted unit, scored by its time
--           (µs), named "<time>:<n>", n counting on from the units in the
--           window (as redis.lua names them); expiring once every member
--           has left it
-- ARGV[1]   penalty_us: how long a rejection blocks the subject (0: not)
-- ARGV[2]   cost, ARGV[3] limit, ARGV[4] window (µs)
-- ARGV[5]   the window in ms, rounded up: the log's time to live after
--           an admission
-- ARGV[6]   a time in µs to use instead of TIME (only the crate's
--           differential tests give it)
-- returns   admitted: the units in the window before this check (an
--           integer); otherwise "<now> <blocked until> <units> <newest>
--           <stop>": the units in the window, the newest one's time and
--           the time of the unit whose leaving frees enough room for the
--           cost (the newest's when no earlier one does; 0s when empty)

local now = tonumber(ARGV[6])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local blocked = tonumber(redis.call('GET', KEYS[1])) or 0
local cost, capacity, window = ARGV[2] + 0, ARGV[3] + 0, ARGV[4] + 0
local log = KEYS[2]
redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%d', now - window))
local units = redis.call('ZCARD', log)
if blocked <= now and cost > 0 and units + cost <= capacity then
  local at = string.format('%d', now)
  local added
  -- One unit, the common case, takes no argument table.
  if cost == 1 then
    added = redis.call('ZADD', log, at, string.format('%d:%d', now, units + 1))
  else
    -- In chunks: unpack hands Lua's C stack at most 8,000 values
    -- (LUAI_MAXCSTACK). The crate bounds a cost at MAX_LOG_COST (1,000),
    -- one chunk; the loop keeps the script safe for any cost.
    added = 0
    local n = units
    while n < units + cost do
      local args, last = {}, math.min(n + 1000, units + cost)
      for m = n + 1, last do
        args[#args + 1] = at
        args[#args + 1] = string.format('%d:%d', now, m)
      end
      added = added + redis.call('ZADD', log, unpack(args))
      n = last
    end
  end
  -- A name is taken only when the count at this time went down since it
  -- was given (a clock that stepped back): count on past it.
  local n = units + cost
  while added < cost do
    n = n + 1
    added = added + redis.call('ZADD', log, at, string.format('%d:%d', now, n))
  end
  redis.call('PEXPIRE', log, ARGV[5])
  return units
end

local newest, stop = 0, 0
if units > 0 then
  newest = tonumber(redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2])
  stop = newest
  local rank = units + cost - capacity - 1
  if rank >= 0 and rank < units - 1 then
    stop = tonumber(redis.call('ZRANGE', log, rank, rank, 'WITHSCORES')[2])
  end
end
local penalty = tonumber(ARGV[1])
if blocked <= now and units + cost > capacity and penalty > 0 then
  redis.call('SET', KEYS[1], string.format('%d', now + penalty),
    'PX', string.format('%d', (penalty + 999) / 1000))
end
return string.format('%d %d %d %d %d', now, blocked, units, newest, stop)
