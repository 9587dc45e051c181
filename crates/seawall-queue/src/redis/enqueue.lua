-- ARGV[7]: how many jobs; then 9 fields per job: payload, priority, max
-- attempts, backoff, timeout ms, group, delay ms, idempotency key, its window
-- ms. Returns, per job, its id and 1 when it was added or 0 when an earlier
-- job with the same idempotency key answered for it.
local count = tonumber(ARGV[7])
local last = redis.call('INCRBY', base .. 'id', count)
local first = last - count + 1
local out = {}
local woke = false
local waiting = 0
local rung = {}
-- Default-priority ids per group, pushed with one RPUSH each at the end.
local lines, line_order = {}, {}
for i = 0, count - 1 do
  local at = 8 + i * 9
  local id = int(first + i)
  local idempotency = ARGV[at + 7]
  local earlier = false
  if idempotency ~= '' then
    local unique = base .. 'u:' .. idempotency
    earlier = redis.call('GET', unique)
    if not earlier then redis.call('SET', unique, id, 'PX', ARGV[at + 8]) end
  end
  if earlier then
    out[#out + 1] = earlier
    out[#out + 1] = 0
  else
    local key = job_key(id)
    local group = ARGV[at + 5]
    local score = int(tonumber(ARGV[at + 1]) * 1099511627776 + first + i)
    local delay = tonumber(ARGV[at + 6])
    local state, ready = 'waiting', now
    if delay > 0 then state, ready = 'delayed', now + delay end
    -- Fields at their default (no timeout, group or key) are left out.
    local fields = { 'd', ARGV[at], 'p', ARGV[at + 1], 'ma', ARGV[at + 2],
      'bo', ARGV[at + 3], 'sc', score, 'ct', now, 's', state, 'rt', ready }
    if ARGV[at + 4] ~= '0' then fields[#fields + 1] = 'to'; fields[#fields + 1] = ARGV[at + 4] end
    if group ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = group end
    if idempotency ~= '' then fields[#fields + 1] = 'ik'; fields[#fields + 1] = idempotency end
    redis.call('HSET', key, unpack(fields))
    if delay > 0 then
      redis.call('ZADD', delayed_key, ready, id)
    else
      if tonumber(ARGV[at + 1]) == DEFAULT_LEVEL then
        collect(lines, line_order, group, id)
      else
        enqueue_waiting(id, group, score, false)
      end
      waiting = waiting + 1
      if not rung[group] then
        rung[group] = true
        if group ~= '' then redis.call('SADD', groups_key, group) end
        if group_room(group) > 0 then ring(group) end
      end
    end
    woke = true
    emit_many('enqueued', id)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
for _, group in ipairs(line_order) do
  redis.call('RPUSH', group_key(group), unpack(lines[group]))
end
if waiting > 0 then redis.call('HINCRBY', meta, 'waiting', waiting) end
flush_events()
-- A delayed job wakes a worker too, so a blocked one learns its due time.
if woke then wake() end
return out
