-- Ends an attempt that did not succeed. ARGV[7]: id; ARGV[8]: lease token;
-- ARGV[9]: 'retry', 'dead' (no retry, e.g. an undecodable payload),
-- 'requeue' (a worker shutting down gives the job back; no attempt is
-- counted) or 'cancelled'; ARGV[10]: the error; ARGV[11]: the retry delay
-- ms. Returns the job's new state, or 'lost' when the token is no longer
-- the job's own.
local id = ARGV[7]
local kind = ARGV[9]
local message = ARGV[10]
local key = job_key(id)
if redis.call('ZREM', active_key, lease_member(id, ARGV[8])) == 0 then return 'lost' end
local job = redis.call('HMGET', key, 'tk', 's', 'g', 'sc', 'ma', 'cx')
job[3] = job[3] or ''
left_active(job[3])

if kind == 'cancelled' or job[6] == '1' then
  emit('cancelled', id)
  forget(id, key)
  return 'cancelled'
end
if kind == 'requeue' then
  make_waiting(id, key, job[3], job[4], true)
  wake()
  emit('requeued', id)
  return 'waiting'
end

local failures = redis.call('HINCRBY', key, 'f', 1)
add_history(key, tonumber(job[1]), message)
emit('failed', id, 'error', message)
if kind == 'dead' or failures >= tonumber(job[5]) then
  make_dead(id, key, message)
  return 'dead'
end
local delay = tonumber(ARGV[11])
if delay > 0 then
  redis.call('HSET', key, 's', 'delayed', 'rt', now + delay)
  redis.call('ZADD', delayed_key, now + delay, id)
else
  make_waiting(id, key, job[3], job[4], true)
end
wake()
emit('retried', id, 'delay', delay)
if delay > 0 then return 'delayed' end
return 'waiting'
