-- Groups and their lines: caps, the fetch rotation, putting a job in
-- line (prelude, after events.lua).

-- How many more jobs of a group may run now (the default group "" has no cap).
local function group_room(group)
  if group == '' then return math.huge end
  local cap = tonumber(redis.call('HGET', meta, 'gcap') or '0')
  if cap <= 0 then return math.huge end
  return cap - tonumber(redis.call('HGET', group_active_key, group) or '0')
end

-- Puts a group at the back of the fetch rotation unless it is in it already.
local function ring(group)
  if redis.call('SADD', ringed_key, group) == 1 then
    redis.call('RPUSH', ring_key, group)
  end
end

local function group_waiting(group)
  return redis.call('LLEN', group_key(group)) + redis.call('ZCARD', ranked_key(group))
end

-- Whether this script has put a job in a line that a plain queue's fetch
-- (`plain` in fetch.lua) does not look at: a ranked set (a priority other
-- than the default), or a named group's.
local lined_elsewhere = false

-- Puts a job in line in its group: at the default priority at the back, or
-- at the `front` for a job that was in line before (retried, recovered,
-- given back); at other priorities by score.
local function enqueue_waiting(id, group, score, front)
  if group ~= '' then lined_elsewhere = true end
  if math.floor(tonumber(score) / STRIDE) == DEFAULT_LEVEL then
    if front then
      redis.call('LPUSH', group_key(group), id)
    else
      redis.call('RPUSH', group_key(group), id)
    end
  else
    lined_elsewhere = true
    redis.call('ZADD', ranked_key(group), score, id)
  end
end

local function make_waiting(id, key, group, score, front)
  enqueue_waiting(id, group, score, front)
  redis.call('HSET', key, 's', 'waiting', 'rt', now_text)
  redis.call('HINCRBY', meta, 'waiting', '1')
  if group ~= '' then redis.call('SADD', groups_key, group) end
  if group_room(group) > 0 then ring(group) end
end

-- Puts a job just added in line, and its group in the fetch rotation once
-- per call (`rung` holds the groups done): a default-priority id is
-- collected into `lines` (see `collect`), for one RPUSH per group when the
-- call ends; one of another priority goes in by its score. A call that
-- adds one job passes no tables: its id is pushed at once. Returns true
-- when that id went behind others in the default group's line: the group
-- is in the rotation already (it stays there for as long as its line has
-- jobs, see fetch.lua), and a worker is on its way to those before it (a
-- worker blocks only when it found no job it could start, and the push
-- that ended that woke one), so neither needs doing again.
local function line_up(id, group, priority, score, lines, line_order, rung)
  if priority ~= DEFAULT_LEVEL then
    enqueue_waiting(id, group, score, false)
  elseif lines then
    collect(lines, line_order, group, id)
  elseif redis.call('RPUSH', group_key(group), id) > 1 and group == '' then
    return true
  end
  if not rung or not rung[group] then
    if rung then rung[group] = true end
    if group ~= '' then redis.call('SADD', groups_key, group) end
    if group_room(group) > 0 then ring(group) end
  end
  return false
end

-- After a job left the active set: its group may fetch again.
local function left_active(group)
  if group == '' then return end
  if redis.call('HINCRBY', group_active_key, group, '-1') <= 0 then
    redis.call('HDEL', group_active_key, group)
  end
  if group_waiting(group) > 0 and group_room(group) > 0 then
    ring(group)
    wake()
  end
end
