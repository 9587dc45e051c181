-- Acknowledges finished jobs and takes the next ones, in one call.
-- ARGV[7]: lease ms; ARGV[8]: how many jobs to take at most; ARGV[9]: how
-- many acknowledgements follow, each as a job id and its lease token.
-- Returns { now, ms until the next delayed job or lease expiry (-1: none,
-- or all that was asked was taken),
-- rejected acknowledgements, paused (0/1), then 9 fields per job taken: id,
-- token, payload, ready since, failures so far, max attempts, backoff,
-- timeout ms, stalls so far }.
local lease = tonumber(ARGV[7])
local want = tonumber(ARGV[8])
local acks = tonumber(ARGV[9])

local rejected = 0
if acks > 0 then
  -- One ZMSCORE checks every lease token, one ZREM ends the current ones.
  local members = {}
  for i = 1, acks do members[i] = lease_member(ARGV[8 + 2 * i], ARGV[9 + 2 * i]) end
  local scores = redis.call('ZMSCORE', active_key, unpack(members))
  local current, ids = {}, {}
  for i = 1, acks do
    if scores[i] then
      current[#current + 1] = members[i]
      ids[#ids + 1] = ARGV[8 + 2 * i]
    else
      rejected = rejected + 1
    end
  end
  if #current > 0 then redis.call('ZREM', active_key, unpack(current)) end
  -- Only jobs of named groups count against a group; when none runs, no
  -- acknowledged job has one to look up.
  if #ids > 0 and redis.call('HLEN', group_active_key) > 0 then
    for _, id in ipairs(ids) do left_active(redis.call('HGET', job_key(id), 'g') or '') end
  end
  complete_all(ids)
end
flush_events()
if acks > 0 then trim_completed() end
promote()
recover()

local out = { now, 0, rejected, 0 }
if redis.call('HGET', meta, 'paused') == '1' then
  out[4] = 1
  want = 0
end

local taken = 0
local deadline = now + lease
local leases = {}
while taken < want do
  local group = redis.call('LPOP', ring_key)
  if not group then break end
  -- A group alone in the rotation gives as many jobs as it may; otherwise
  -- each group gives one per turn.
  local room = group_room(group)
  local turn = 1
  if redis.call('LLEN', ring_key) == 0 then turn = want - taken end
  if turn > room then turn = room end
  -- Above the default priority, then the default list, then below.
  local popped = {}
  local ranked = ranked_key(group)
  if turn > 0 then
    popped = redis.call('ZRANGEBYSCORE', ranked, '-inf', '(' .. int(DEFAULT_LEVEL * STRIDE), 'LIMIT', 0, turn)
    if #popped > 0 then redis.call('ZREMRANGEBYRANK', ranked, 0, #popped - 1) end
  end
  if #popped < turn then
    local plain = redis.call('LPOP', group_key(group), turn - #popped)
    if plain then
      for _, id in ipairs(plain) do popped[#popped + 1] = id end
    end
  end
  if #popped < turn then
    local low = redis.call('ZRANGE', ranked, 0, turn - #popped - 1)
    if #low > 0 then redis.call('ZREMRANGEBYRANK', ranked, 0, #low - 1) end
    for _, id in ipairs(low) do popped[#popped + 1] = id end
  end
  for _, id in ipairs(popped) do
    local key = job_key(id)
    local job = redis.call('HMGET', key, 'd', 'rt', 'f', 'ma', 'bo', 'to', 'st', 'tk')
    local token = tonumber(job[8] or '0') + 1
    redis.call('HSET', key, 's', 'active', 'at', now, 'tk', token)
    leases[#leases + 1] = deadline
    leases[#leases + 1] = lease_member(id, token)
    emit_many('active', id)
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = job[1] or ''
    out[#out + 1] = job[2] or now
    out[#out + 1] = job[3] or 0
    out[#out + 1] = job[4] or 1
    out[#out + 1] = job[5] or ''
    out[#out + 1] = job[6] or 0
    out[#out + 1] = job[7] or 0
    taken = taken + 1
  end
  if #popped > 0 then
    redis.call('HINCRBY', meta, 'waiting', -#popped)
    if group ~= '' then redis.call('HINCRBY', group_active_key, group, #popped) end
  end
  if group_waiting(group) > 0 then
    if group_room(group) > 0 then
      redis.call('RPUSH', ring_key, group)
    else
      redis.call('SREM', ringed_key, group)
    end
  else
    redis.call('SREM', ringed_key, group)
    if group ~= '' then redis.call('SREM', groups_key, group) end
  end
end

-- More waiting: wake another worker.
if taken > 0 and redis.call('LLEN', ring_key) > 0 then wake() end
if #leases > 0 then redis.call('ZADD', active_key, unpack(leases)) end
flush_events()
-- A worker that got all it asked for fetches again at once; only one that
-- will block needs to know when to look again.
if taken < want then out[2] = next_wake() else out[2] = -1 end
return out
