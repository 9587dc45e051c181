-- Finished jobs: deduplication keys freed, records removed, dead and
-- completed jobs and their retention (prelude, after flows.lua).

-- Frees the deduplication key `idempotency` (a finished job's `ik`; nil
-- or empty for none) if job `id` still holds it in a mode other than a
-- window (`=<mode>`, see enqueue.lua). Such a key holds, for an enqueue of
-- one mode or another, at most until its job completes or dies (an
-- until-completed enqueue is answered by a job that started, whatever
-- mode took the key), so it goes then rather than at its 30-day backstop
-- expiry; a window key lasts its window whatever becomes of its job.
local function release_key(id, idempotency)
  if not idempotency or idempotency == '' then return end
  local unique = base .. 'u:' .. idempotency
  local held = redis.call('GET', unique)
  if held and string.match(held, '^(%S+) =%a$') == id then redis.call('DEL', unique) end
end

-- Removes a job record and the idempotency key that still points at it
-- (a cancelled job frees its key; retention leaves keys to their window).
-- A flow's child tells its parent it failed.
local function forget(id, key)
  if redis.call('SREM', base .. 'fc', id) == 1 then tell_parent(id, key, true, 'cancelled') end
  local idempotency = redis.call('HGET', key, 'ik')
  if idempotency then
    local unique = base .. 'u:' .. idempotency
    local held = redis.call('GET', unique)
    if held and string.match(held, '^%S+') == id then redis.call('DEL', unique) end
  end
  redis.call('DEL', key)
end

-- Removes the oldest members of a finished set (and their records) past a
-- count, at most `limit` of them.
local function trim_count(set, keep, limit)
  local excess = redis.call('ZCARD', set) - keep
  if excess <= 0 then return 0 end
  if excess > limit then excess = limit end
  local old = redis.call('ZRANGE', set, '0', int(excess - 1))
  for _, id in ipairs(old) do redis.call('DEL', job_key(id)) end
  redis.call('ZREMRANGEBYRANK', set, '0', int(excess - 1))
  return excess
end

local function trim_age(set, max_age, limit)
  local old = redis.call('ZRANGEBYSCORE', set, '-inf', int(now - max_age), 'LIMIT', '0', int(limit))
  for _, id in ipairs(old) do redis.call('DEL', job_key(id)) end
  if #old > 0 then redis.call('ZREMRANGEBYRANK', set, '0', int(#old - 1)) end
  return #old
end

local function add_history(key, attempt, message)
  local raw = redis.call('HGET', key, 'h')
  local history = {}
  if raw then history = cjson.decode(raw) end
  history[#history + 1] = { attempt = attempt, at = now, error = message }
  while #history > 10 do table.remove(history, 1) end
  redis.call('HSET', key, 'h', cjson.encode(history), 'le', message)
end

local function make_dead(id, key, message)
  if redis.call('SREM', base .. 'fc', id) == 1 then tell_parent(id, key, true, message) end
  release_key(id, redis.call('HGET', key, 'ik'))
  redis.call('HSET', key, 's', 'dead', 'ft', now_text, 'le', message)
  redis.call('ZADD', dead_key, now_text, id)
  emit('dead', id, 'error', message)
  trim_count(dead_key, keep_dead, 100)
end

-- Completes jobs whose leases were checked: each id goes to the head of
-- the `done` list, so the oldest completed job is at its tail. The
-- retention trim runs once per script, in `trim_completed`. `keyed`: the
-- queue has had a job with a deduplication key other than a window (meta
-- `uc`, which such an enqueue sets), so each job's key is looked up and
-- freed; a queue that never had one pays nothing for it.
local function complete_all(ids, keyed, flows)
  if #ids == 0 then return nil end
  if keyed then
    for _, id in ipairs(ids) do release_key(id, redis.call('HGET', job_key(id), 'ik')) end
  end
  -- Flow children among them tell their parents (`flows`: whether the
  -- queue's set of them exists, when the caller knows).
  if flows == nil then flows = redis.call('EXISTS', base .. 'fc') == 1 end
  if flows then
    local children = redis.call('SMISMEMBER', base .. 'fc', unpack(ids))
    for i, id in ipairs(ids) do
      if children[i] == 1 then
        redis.call('SREM', base .. 'fc', id)
        tell_parent(id, job_key(id), false, '')
      end
    end
  end
  for _, id in ipairs(ids) do
    emit_many('completed', id)
    if keep_completed > 0 then
      redis.call('HSET', job_key(id), 's', 'completed', 'ft', now_text)
    end
  end
  if keep_completed > 0 then
    local length = nil
    for from = 1, #ids, CHUNK do
      length = redis.call('LPUSH', done_key, unpack(ids, from, math.min(from + CHUNK - 1, #ids)))
    end
    return length
  end
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = job_key(id) end
  delete_all(keys)
  return nil
end

-- Removes up to `limit` completed jobs from the tail that finished at or
-- before `cutoff`, never leaving fewer than `keep`. Returns how many it
-- removed and, when it saw where the old ones end, a time at or before
-- the finish of every job it left: the tail's finish time where it
-- stopped at a younger job, `now` where none is left to look at (a job
-- completed later finished later); nil where `limit` cut it short.
local function trim_done(cutoff, keep, limit)
  local removable = redis.call('LLEN', done_key) - keep
  local ends = now
  if removable > limit then
    removable = limit
    ends = nil
  end
  local removed = 0
  while removed < removable do
    local id = redis.call('LINDEX', done_key, '-1')
    local finished = tonumber(redis.call('HGET', job_key(id), 'ft') or '0')
    if finished > cutoff then return removed, finished end
    redis.call('RPOP', done_key)
    redis.call('DEL', job_key(id))
    removed = removed + 1
  end
  return removed, ends
end

-- Completed jobs past their age, also when none has completed lately.
-- `oldest`: meta `dft` as the caller read it (false when the field is
-- absent), a time at or before the finish of the oldest completed job
-- kept. While that is within the age, no job is past it and nothing is
-- looked at: the look costs three commands, and every fetch and renewal
-- would make it. A look writes the new time down for the next call (jobs
-- go in at the head of the list, so the tail only ever gets younger and
-- the time stays a lower bound; after the server's clock stepped back, a
-- job may outstay the age by that step).
local function trim_completed_by_age(oldest)
  if keep_completed <= 0 or keep_completed_ms <= 0 then return end
  local cutoff = now - keep_completed_ms
  if oldest and tonumber(oldest) > cutoff then return end
  local _, ends = trim_done(cutoff, 0, 1000)
  if ends then redis.call('HSET', meta, 'dft', int(ends)) end
end

-- `length`: the done list's length, when the caller has it (the LPUSH of
-- `complete_all` answers it); `oldest`: see `trim_completed_by_age`.
local function trim_completed(length, oldest)
  if keep_completed <= 0 then return end
  local excess = (length or redis.call('LLEN', done_key)) - keep_completed
  if excess > 0 then
    if excess > 1000 then excess = 1000 end
    local old = redis.call('RPOP', done_key, int(excess))
    for i, id in ipairs(old) do old[i] = job_key(id) end
    delete_all(old)
  end
  trim_completed_by_age(oldest)
end
