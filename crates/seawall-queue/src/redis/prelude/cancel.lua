-- Cancellation, of a flow's pending children too (prelude, after
-- finish.lua).

-- How long a flow parent's children's outcomes are kept once it is
-- released or failed (30 days): its handler reads them when it runs.
local KIDS_KEPT_MS = '2592000000'

-- Cancels a job (see control.lua's `cancel`): a waiting or delayed one is
-- removed, a running one asked to stop; a flow parent still waiting for
-- its children is removed and its pending children are cancelled, each by
-- a note to its queue's inbox. Returns `cancelled`, `requested`, or the
-- finished job's state (`missing` for none).
local function cancel_job(id)
  local key = job_key(id)
  local job = redis.call('HMGET', key, 's', 'g')
  job[2] = job[2] or ''
  if job[1] == 'waiting' then
    if redis.call('ZREM', ranked_key(job[2]), id) == 0 then
      redis.call('LREM', group_key(job[2]), '1', id)
    end
    redis.call('HINCRBY', meta, 'waiting', '-1')
    -- A group with nothing left waiting leaves the set of groups (a group
    -- at its cap is in no rotation that would drop it).
    if job[2] ~= '' and group_waiting(job[2]) == 0 then redis.call('SREM', groups_key, job[2]) end
  elseif job[1] == 'delayed' then
    redis.call('ZREM', delayed_key, id)
  elseif job[1] == 'waiting-children' then
    redis.call('ZREM', base .. 'wc', id)
    local kids = base .. 'kids:' .. id
    local outcomes = redis.call('HGETALL', kids)
    for i = 1, #outcomes, 2 do
      if outcomes[i + 1] == '-' then
        local child_base, child = string.match(outcomes[i], '^(%S+) (%S+)$')
        redis.call('RPUSH', child_base .. 'inbox', 'x ' .. child)
        redis.call('ZADD', child_base .. 'mark', '0', 'w')
      end
    end
    redis.call('DEL', kids)
  elseif job[1] == 'active' then
    redis.call('HSET', key, 'cx', '1')
    return 'requested'
  else
    return job[1] or 'missing'
  end
  emit('cancelled', id)
  forget(id, key)
  return 'cancelled'
end
