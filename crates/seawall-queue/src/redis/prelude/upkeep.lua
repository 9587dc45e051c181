-- Upkeep every keeping script runs: due jobs promoted, lapsed leases
-- recovered, the next time to look (prelude, after limits.lua).

-- Moves delayed and retry-scheduled jobs whose time has come to waiting,
-- after the inbox's notes, and puts parked groups whose time has come back
-- in the rotation. Returns whether the queue had notes or parked groups
-- (when not, it has no parked group now either). `noted`: whether it has
-- either, when the caller knows (false: neither key exists).
local function promote(noted)
  -- One command when the queue has neither notes nor parked groups.
  if noted == nil then noted = redis.call('EXISTS', base .. 'inbox', parked_key) > 0 end
  if noted then
    take_inbox()
    local back = redis.call('ZRANGEBYSCORE', parked_key, '-inf', now_text, 'LIMIT', '0', '1000')
    for _, group in ipairs(back) do
      redis.call('ZREM', parked_key, group)
      if group_waiting(group) > 0 and group_room(group) > 0 then ring(group) end
    end
    if #back > 0 then wake() end
  end
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now_text, 'LIMIT', '0', '1000')
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed_key, id)
    local key = job_key(id)
    local job = redis.call('HMGET', key, 'g', 'sc')
    if job[2] then make_waiting(id, key, job[1] or '', job[2], false) end
  end
  if #due > 0 then wake() end
  return noted
end

-- Returns the jobs whose lease ran out to waiting, or to the dead set past
-- the allowed number of stalls; an active job asked to cancel is dropped.
local function recover()
  local expired = redis.call('ZRANGEBYSCORE', active_key, '-inf', now_text, 'LIMIT', '0', '1000')
  for _, member in ipairs(expired) do
    redis.call('ZREM', active_key, member)
    local id = member_id(member)
    local key = job_key(id)
    local job = redis.call('HMGET', key, 'g', 'sc', 'cx')
    if job[2] then
      job[1] = job[1] or ''
      left_active(job[1])
      local stalls = redis.call('HINCRBY', key, 'st', '1')
      emit('stalled', id)
      if job[3] == '1' then
        emit('cancelled', id)
        forget(id, key)
      elseif stalls > max_stalls then
        make_dead(id, key, 'stalled ' .. stalls .. ' times: its worker stopped renewing the lease')
      else
        make_waiting(id, key, job[1], job[2], true)
      end
    end
  end
  if #expired > 0 then wake() end
end

-- Milliseconds until a delayed job is due or a lease runs out, or -1.
local function next_wake()
  local soonest = -1
  for _, set in ipairs({ delayed_key, active_key }) do
    local first = redis.call('ZRANGE', set, '0', '0', 'WITHSCORES')
    if first[2] then
      local wait = tonumber(first[2]) - now
      if wait < 0 then wait = 0 end
      if soonest < 0 or wait < soonest then soonest = wait end
    end
  end
  return soonest
end
