-- Operator actions; ARGV[7] names one, ARGV[8..] are its arguments.
local op = ARGV[7]

if op == 'pause' then
  redis.call('HSET', meta, 'paused', '1')
  return 1
elseif op == 'resume' then
  redis.call('HDEL', meta, 'paused')
  wake()
  return 1
elseif op == 'counts' or op == 'backlog' then
  -- backlog: ARGV[8] is the most named groups whose lines are looked at;
  -- the counts are followed by the server's time and the ready time of
  -- the oldest job at the head of a line (-1: none waits).
  local most_groups = 0
  if op == 'backlog' then most_groups = whole(8, 0, 100000) end
  promote()
  recover()
  local counted = redis.call('HMGET', meta, 'waiting', 'paused', 'dft')
  trim_completed_by_age(counted[3])
  local out = {
    tonumber(counted[1] or '0'),
    redis.call('ZCARD', delayed_key),
    redis.call('ZCARD', active_key),
    redis.call('LLEN', done_key),
    redis.call('ZCARD', dead_key),
    tonumber(counted[2] or '0'),
    redis.call('ZCARD', base .. 'wc'),
  }
  if op == 'counts' then return out end
  -- A group's waiting jobs stand in one line per priority level: the
  -- default level's list, and each other level's run of the group's
  -- sorted set. Only each line's head is read (its first job is the one
  -- a worker takes next), a few commands per group: every group while
  -- at most `most_groups` named ones have jobs waiting, else the first
  -- `most_groups` named ones of the fetch rotation.
  local groups = { '' }
  if redis.call('SCARD', groups_key) <= most_groups then
    for _, group in ipairs(redis.call('SMEMBERS', groups_key)) do groups[#groups + 1] = group end
  elseif most_groups > 0 then
    for _, group in ipairs(redis.call('LRANGE', ring_key, '0', int(most_groups))) do
      if group ~= '' and #groups <= most_groups then groups[#groups + 1] = group end
    end
  end
  local oldest = -1
  local function look_at(id)
    local ready = tonumber(redis.call('HGET', job_key(id), 'rt') or '')
    if ready and (oldest < 0 or ready < oldest) then oldest = ready end
  end
  for _, group in ipairs(groups) do
    local head = redis.call('LINDEX', group_key(group), '0')
    if head then look_at(head) end
    local ranked = ranked_key(group)
    local first = redis.call('ZRANGE', ranked, '0', '0', 'WITHSCORES')
    while first[1] do
      look_at(first[1])
      local next_level = (math.floor(tonumber(first[2]) / STRIDE) + 1) * STRIDE
      first = redis.call('ZRANGEBYSCORE', ranked, int(next_level), '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
    end
  end
  out[8] = now
  out[9] = oldest
  return out
elseif op == 'cancel' then
  return cancel_job(job_id_arg(8))
elseif op == 'retry_one' or op == 'retry_oldest' then
  -- retry_one: ARGV[8] is a dead job's id; retry_oldest: up to ARGV[8] dead
  -- jobs, oldest first.
  local ids
  if op == 'retry_one' then
    ids = { job_id_arg(8) }
  else
    ids = redis.call('ZRANGE', dead_key, '0', int(whole(8, 1, 10000) - 1))
  end
  local moved = 0
  for _, id in ipairs(ids) do
    local key = job_key(id)
    local job = redis.call('HMGET', key, 's', 'g', 'sc')
    job[2] = job[2] or ''
    if job[1] == 'dead' then
      redis.call('ZREM', dead_key, id)
      redis.call('HSET', key, 'f', '0', 'st', '0')
      redis.call('HDEL', key, 'cx')
      make_waiting(id, key, job[2], job[3], false)
      emit('retried', id, 'delay', '0')
      moved = moved + 1
    end
  end
  if moved > 0 then wake() end
  return moved
elseif op == 'clean' then
  -- ARGV[8]: 'completed' or 'dead'; ARGV[9]: remove only jobs finished at
  -- least this many ms ago; ARGV[10]: always keep the newest this many;
  -- ARGV[11]: remove at most this many.
  if ARGV[8] ~= 'completed' and ARGV[8] ~= 'dead' then refuse('clean completed or dead jobs') end
  local cutoff = now - whole(9, 0, MAX_SETTING)
  local keep, limit = whole(10, 0, MAX_SETTING), whole(11, 1, 10000)
  if ARGV[8] == 'completed' then
    local removed = trim_done(cutoff, keep, limit)
    return removed
  end
  local removable = redis.call('ZCARD', dead_key) - keep
  if removable > limit then removable = limit end
  if removable <= 0 then return 0 end
  local oldest = redis.call('ZRANGE', dead_key, '0', int(removable - 1), 'WITHSCORES')
  local removed = 0
  for p = 1, #oldest, 2 do
    if tonumber(oldest[p + 1]) > cutoff then break end
    redis.call('DEL', job_key(oldest[p]))
    redis.call('ZREM', dead_key, oldest[p])
    removed = removed + 1
  end
  return removed
elseif op == 'take_back' then
  -- Removes the jobs an enqueue added (ARGV[8]: its request id; ARGV[9]:
  -- how many ids follow), all of them or, when one was taken by a worker
  -- already (or is gone), none. Returns 1 when they were removed, 0 when
  -- nothing changed.
  local request = shaped(8, REQUEST, 32, 'a request id')
  local n = whole(9, 0, 10000)
  if #ARGV ~= 9 + n then refuse('expected ' .. n .. ' job ids') end
  local jobs = {}
  for i = 1, n do
    local id = job_id_arg(9 + i)
    local job = redis.call('HMGET', job_key(id), 's', 'g', 'tk')
    if (job[1] ~= 'waiting' and job[1] ~= 'delayed') or job[3] then return 0 end
    jobs[i] = { id, job[1], job[2] or '' }
  end
  for _, job in ipairs(jobs) do
    local id, state, group = job[1], job[2], job[3]
    if state == 'waiting' then
      if redis.call('ZREM', ranked_key(group), id) == 0 then
        redis.call('LREM', group_key(group), '1', id)
      end
      redis.call('HINCRBY', meta, 'waiting', '-1')
      if group ~= '' and group_waiting(group) == 0 then redis.call('SREM', groups_key, group) end
    else
      redis.call('ZREM', delayed_key, id)
    end
    emit('cancelled', id)
    forget(id, job_key(id))
  end
  -- A replay of the enqueue must not answer ids that are gone.
  redis.call('DEL', base .. 'r:' .. request)
  return 1
elseif op == 'probe' then
  -- What an enqueue needs of this server, without adding a job: it is the
  -- primary, and it takes a write (ARGV[8]: a request id, kept for a
  -- minute), so that a `WAIT` after it counts the replicas that have it.
  if string.match(redis.call('INFO', 'replication'), 'role:slave') then
    refuse('this server is a replica: enqueue on the primary')
  end
  redis.call('SET', base .. 'probe', shaped(8, REQUEST, 32, 'a request id'), 'PX', '60000')
  return 1
elseif op == 'rate_limit' then
  -- ARGV[8]: the most jobs that start in any ARGV[9] ms; 0 for no limit.
  local max = whole(8, 0, 1000000)
  local per = whole(9, 1, MAX_MS)
  if max == 0 then
    redis.call('HDEL', meta, 'rlm', 'rlp', 'rlc')
    redis.call('DEL', base .. 'rlog')
  else
    redis.call('HSET', meta, 'rlm', int(max), 'rlp', int(per))
  end
  wake()
  return 1
elseif op == 'limits' then
  -- The limits and what they hold back now: the rate limit's max and ms
  -- (0, 0: none), the starts within its window, the group rate limit's
  -- max and ms, the group concurrency cap (0: none), the hold's end (ms)
  -- and the server's time.
  local c = redis.call('HMGET', meta, 'rlm', 'rlp', 'grm', 'grp', 'gcap', 'hold', 'rlc')
  local rate_max, rate_per = tonumber(c[1] or '0'), tonumber(c[2] or '0')
  local started = 0
  if rate_max > 0 then
    local counted = tonumber(c[7] or '0')
    started = rate_started(base .. 'rlog', counted, rate_per)
    if started ~= counted then redis.call('HSET', meta, 'rlc', int(started)) end
  end
  return { rate_max, rate_per, started, tonumber(c[3] or '0'), tonumber(c[4] or '0'),
    tonumber(c[5] or '0'), tonumber(c[6] or '0'), now }
elseif op == 'group_rate_limit' then
  -- ARGV[8]: the most jobs of one group that start in any ARGV[9] ms; 0
  -- for no limit.
  local max = whole(8, 0, 1000000)
  local per = whole(9, 1, MAX_MS)
  if max == 0 then
    redis.call('HDEL', meta, 'grm', 'grp')
  else
    redis.call('HSET', meta, 'grm', int(max), 'grp', int(per))
  end
  wake()
  return 1
elseif op == 'group_limit' then
  -- ARGV[8]: the most jobs of one group that may run at once, 0 for no cap.
  redis.call('HSET', meta, 'gcap', int(whole(8, 0, 4294967295)))
  for _, group in ipairs(redis.call('SMEMBERS', groups_key)) do
    if group_waiting(group) > 0 and group_room(group) > 0 then
      ring(group)
    end
  end
  wake()
  return 1
end
return redis.error_reply('unknown operation ' .. tostring(op))
