-- Ends an attempt that did not succeed. ARGV[7]: id; ARGV[8]: lease token;
-- ARGV[9]: 'retry', 'dead' (no retry, e.g. an undecodable payload),
-- 'requeue' (a worker shutting down gives the job back; no attempt is
-- counted), 'stalled' (the run lost its lease before it ended: a stall is
-- counted, as the upkeep counts one for a lease that ran out, and the job
-- waits again or, past the queue's stalls, is dead), 'hold' (the handler says the downstream limits it: the job
-- goes back to the front of its line without an attempt counted, and the
-- queue starts nothing for the delay) or 'cancelled'; ARGV[10]: the error;
-- ARGV[11]: the retry delay ms, or the hold's. Returns the job's new state, or 'lost' when the token is no longer
-- the job's own. A call re-sent after it ran answers what it did the
-- first time: from the outcome kept on the job, or, for a run that ended
-- cancelled (its record is gone), from `x:<id>`, the run's token kept for
-- as long as an enqueue's answer.
local id = job_id_arg(7)
local token = shaped(8, TOKEN, 64, 'a lease token')
local kind = ARGV[9]
if kind ~= 'retry' and kind ~= 'dead' and kind ~= 'requeue' and kind ~= 'stalled' and kind ~= 'hold'
  and kind ~= 'hold_group' and kind ~= 'cancelled' then
  refuse('unknown failure ' .. tostring(kind))
end
local message = ARGV[10] or ''
if #message > MAX_MESSAGE then refuse('an error message is over ' .. MAX_MESSAGE .. ' bytes') end
local delay = whole(11, 0, MAX_MS)

local key = job_key(id)
if redis.call('ZREM', active_key, lease_member(id, token)) == 0 then
  local outcome = redis.call('HGET', key, 'fo')
  if outcome and string.sub(outcome, 1, #token + 1) == token .. ' ' then
    return string.sub(outcome, #token + 2)
  end
  if redis.call('GET', base .. 'x:' .. id) == token then return 'cancelled' end
  return 'lost'
end
local job = redis.call('HMGET', key, 'tk', 's', 'g', 'sc', 'ma', 'cx')
job[3] = job[3] or ''
left_active(job[3])

local function ended(outcome)
  redis.call('HSET', key, 'fo', token .. ' ' .. outcome)
  return outcome
end

-- The job dies: its outcome is written first, since the dead set's
-- retention may remove the record as the job joins it (a queue that keeps
-- no dead jobs, or older ones that died in the same millisecond and sort
-- after it), and a field written after that would leave a record with no
-- state.
local function ended_dead(message)
  ended('dead')
  make_dead(id, key, message)
  return 'dead'
end

if kind == 'cancelled' or job[6] == '1' then
  -- A run lost to its lease tells of its stall first, as the upkeep does.
  if kind == 'stalled' then emit('stalled', id) end
  emit('cancelled', id)
  forget(id, key)
  redis.call('SET', base .. 'x:' .. id, token, 'PX', ANSWER_KEPT_MS)
  return 'cancelled'
end
if kind == 'stalled' then
  local stalls = redis.call('HINCRBY', key, 'st', '1')
  emit('stalled', id)
  if stalls > max_stalls then
    return ended_dead('stalled ' .. stalls .. ' times: its worker stopped renewing the lease')
  end
  make_waiting(id, key, job[3], job[4], true)
  wake()
  return ended('waiting')
end
if kind == 'requeue' then
  make_waiting(id, key, job[3], job[4], true)
  wake()
  emit('requeued', id)
  return ended('waiting')
end
if kind == 'hold_group' and job[3] ~= '' then
  -- The job's group sits out of the rotation for the delay (a later hold
  -- never shortens an earlier one).
  local until_ms = int(now + delay)
  redis.call('ZADD', parked_key, 'GT', until_ms, job[3])
  make_waiting(id, key, job[3], job[4], true)
  wake()
  emit('held', id, 'delay', int(delay), 'group', job[3])
  return ended('waiting')
end
-- A hold of the queue, or of a job without a group.
if kind == 'hold' or kind == 'hold_group' then
  -- A later hold never shortens an earlier one.
  local until_ms = now + delay
  if tonumber(redis.call('HGET', meta, 'hold') or '0') < until_ms then
    redis.call('HSET', meta, 'hold', int(until_ms))
  end
  make_waiting(id, key, job[3], job[4], true)
  wake()
  emit('held', id, 'delay', int(delay))
  return ended('waiting')
end

local failures = redis.call('HINCRBY', key, 'f', '1')
add_history(key, tonumber(job[1]), message)
emit('failed', id, 'error', message)
if kind == 'dead' or failures >= tonumber(job[5]) then
  return ended_dead(message)
end
if delay > 0 then
  local ready = int(now + delay)
  redis.call('HSET', key, 's', 'delayed', 'rt', ready)
  redis.call('ZADD', delayed_key, ready, id)
else
  make_waiting(id, key, job[3], job[4], true)
end
wake()
emit('retried', id, 'delay', int(delay))
if delay > 0 then return ended('delayed') end
return ended('waiting')
