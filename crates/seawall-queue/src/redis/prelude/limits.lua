-- Rate limits: the queue's start log and parked groups (prelude, after
-- inbox.lua).

-- Named groups sitting out of the fetch rotation until a time: held by a
-- handler, or at the group rate limit (see fetch.lua).
local parked_key = base .. 'parked'

-- How many jobs started within the last `per` ms by the rate limit's log
-- (`log`: '<ms> <jobs>' per fetch that started any, oldest first), given
-- `started`, the sum of the log's jobs (meta `rlc`): drops the fetches that
-- left the window and answers what is left of the sum. A call does a
-- bounded amount of work: a log whose newest entry left the window goes
-- whole, in one command (UNLINK, freed in the background), however long
-- it grew (a queue quiet for longer than its window); otherwise at most
-- RATE_TRIM_MOST entries are popped, and any left over are counted until
-- the next call pops them, which only holds the limit tighter. A server
-- clock that went back leaves later entries behind an older one: they are
-- dropped late, which only counts them longer, or, when the newest is
-- out of the window, as much as the clock went back early.
local RATE_TRIM_MOST = 1000
local function rate_started(log, started, per)
  if started > 0 then
    local newest = redis.call('LINDEX', log, '-1')
    if not newest then return 0 end
    if tonumber(string.match(newest, '^(%d+) ')) <= now - per then
      redis.call('UNLINK', log)
      return 0
    end
  end
  local popped = 0
  while started > 0 and popped < RATE_TRIM_MOST do
    popped = popped + 1
    local head = redis.call('LINDEX', log, '0')
    if not head then return 0 end
    local at, jobs = string.match(head, '^(%d+) (%d+)$')
    if tonumber(at) > now - per then break end
    redis.call('LPOP', log)
    started = started - tonumber(jobs)
  end
  if started < 0 then started = 0 end
  return started
end

-- Parks a group at its rate limit until the oldest start in its window
-- leaves it.
local function park(group, window, per)
  local oldest = redis.call('ZRANGE', window, '0', '0', 'WITHSCORES')
  local back = now + 1
  if oldest[2] then back = tonumber(oldest[2]) + per end
  redis.call('ZADD', parked_key, 'GT', int(back), group)
end
