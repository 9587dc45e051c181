-- A queue's schedulers; ARGV[7] names the operation, ARGV[8..] are its
-- arguments. A scheduler `s` lives in the hash `s:<s>` (fields `sch`, its
-- schedule as text; `tpl`, its job template; `rev`, its revision, drawn
-- anew by every change from the queue's counter `srev`, so that no
-- revision ever repeats in the queue, also for a scheduler removed and
-- added again; `next`, its next tick that has no job yet, in ms, 0 while
-- none is planned; `fr`, when its schedule last changed or it was resumed:
-- a runner plans its first tick after then; `paused`; `lt` and `lj`, its
-- latest tick that made a job and that job, and `pt` and `pj` the tick and
-- job before them), is listed in
-- the sorted set `sids` (all at score 0, so in the order of its id), and
-- waits in the sorted set `sdue` while it is not paused, scored by when a
-- runner should look at it next. Ticks are enqueued by tick.lua, whose
-- guard checks `rev` and `next` and moves `next` on in the same call; it
-- enqueues the coming tick's job ahead, delayed until the tick, so `lt` may
-- be a tick still to come.
local op = ARGV[7]
local ids_key = base .. 'sids'
local due_key = base .. 'sdue'
local function scheduler_key(id) return base .. 's:' .. id end
-- A scheduler id: as a queue name, 1 to 128 bytes without braces,
-- whitespace or control characters.
local function scheduler_id(index)
  return shaped(index, '^[^%s%c{}]+$', 128, 'a scheduler id')
end
-- A scheduler's record, as the client reads it: id, schedule, template,
-- revision, next, paused, last tick, last job, previous tick, previous
-- job, when a runner looks at it next (0 while paused; `due`, when the
-- caller read it already).
local function record(id, due)
  local fields = redis.call('HMGET', scheduler_key(id), 'sch', 'tpl', 'rev', 'next', 'paused', 'lt', 'lj', 'pt', 'pj', 'fr')
  if not fields[1] then return nil end
  due = due or redis.call('ZSCORE', due_key, id) or '0'
  return { id, fields[1], fields[2], fields[3], fields[4], fields[5] or '0', fields[6] or '',
    fields[7] or '', fields[8] or '', fields[9] or '', due, fields[10] or '0' }
end

-- A revision for a changed scheduler: the queue's next, and past the one
-- the scheduler holds (a queue whose schedulers predate the counter).
local function next_revision(held)
  local revision = redis.call('INCR', base .. 'srev')
  local floor = tonumber(held or '0') + 1
  if revision < floor then
    revision = floor
    redis.call('SET', base .. 'srev', int(floor))
  end
  return revision
end

-- A change to a scheduler takes effect at its next tick: a job enqueued
-- ahead for a tick still to come, and still waiting for it, is cancelled,
-- and the tick before it is the last again. Returns that tick, or nil when
-- nothing was cancelled: a job that left its delay (it ran, or the clock
-- stepped back after a failover and the tick only seems to come) keeps
-- its tick made.
local function drop_ahead(key)
  local held = redis.call('HMGET', key, 'lt', 'lj', 'pt', 'pj')
  if not held[1] or tonumber(held[1]) <= now then return nil end
  if redis.call('HGET', job_key(held[2]), 's') ~= 'delayed' then return nil end
  cancel_job(held[2])
  if held[4] then
    redis.call('HSET', key, 'lt', held[3], 'lj', held[4])
    redis.call('HDEL', key, 'pt', 'pj')
  else
    redis.call('HDEL', key, 'lt', 'lj')
  end
  return held[1]
end

if op == 'upsert' then
  -- ARGV[8]: the id; ARGV[9]: the schedule; ARGV[10]: the template; ARGV[11]:
  -- the most schedulers the queue may hold. A changed schedule plans its
  -- next tick anew (the one planned before does not run); a changed
  -- template alone keeps the planned tick, whose job enqueued ahead is made
  -- again from the new template. Returns the revision.
  local id = scheduler_id(8)
  local schedule = shaped(9, '^%S', 1024, 'a schedule')
  if #ARGV[10] > MAX_PAYLOAD + 65536 then refuse('a template is over the largest payload') end
  local most = whole(11, 1, MAX_SETTING)
  local key = scheduler_key(id)
  local held = redis.call('HMGET', key, 'sch', 'tpl', 'rev', 'paused')
  if held[1] == schedule and held[2] == ARGV[10] then return tonumber(held[3]) end
  if not held[1] and redis.call('ZCARD', ids_key) >= most then
    refuse('the queue holds ' .. int(most) .. ' schedulers, the most it may')
  end
  local revision = next_revision(held[3])
  redis.call('HSET', key, 'sch', schedule, 'tpl', ARGV[10], 'rev', int(revision))
  local dropped = drop_ahead(key)
  if held[1] ~= schedule then
    redis.call('HSET', key, 'next', '0', 'fr', now_text)
    if held[4] ~= '1' then redis.call('ZADD', due_key, '0', id) end
  elseif dropped then
    redis.call('HSET', key, 'next', dropped)
    if held[4] ~= '1' then redis.call('ZADD', due_key, '0', id) end
  end
  redis.call('ZADD', ids_key, '0', id)
  return revision
elseif op == 'remove' then
  local id = scheduler_id(8)
  drop_ahead(scheduler_key(id))
  redis.call('ZREM', due_key, id)
  redis.call('ZREM', ids_key, id)
  return redis.call('DEL', scheduler_key(id))
elseif op == 'pause' or op == 'resume' then
  -- A resumed scheduler plans its next tick anew, from its first tick
  -- after the resume: the ticks it missed while paused make no job.
  local id = scheduler_id(8)
  local key = scheduler_key(id)
  if redis.call('EXISTS', key) == 0 then return 0 end
  if op == 'pause' then
    drop_ahead(key)
    redis.call('HSET', key, 'paused', '1')
    redis.call('ZREM', due_key, id)
  elseif redis.call('HGET', key, 'paused') == '1' then
    redis.call('HDEL', key, 'paused')
    redis.call('HSET', key, 'rev', int(next_revision(redis.call('HGET', key, 'rev'))), 'next', '0', 'fr', now_text)
    redis.call('ZADD', due_key, '0', id)
  end
  return 1
elseif op == 'get' then
  return record(scheduler_id(8)) or false
elseif op == 'list' then
  -- ARGV[8]: list the ids after this one ('' from the first); ARGV[9]: how
  -- many at most.
  local after = ARGV[8]
  if after ~= '' then after = scheduler_id(8) end
  local limit = whole(9, 1, 10000)
  local from = '-'
  if after ~= '' then from = '(' .. after end
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYLEX', ids_key, from, '+', 'LIMIT', '0', int(limit))) do
    local found = record(id)
    if found then out[#out + 1] = found end
  end
  return out
elseif op == 'due' then
  -- ARGV[8]: how many due schedulers at most. Returns the server's time,
  -- when the first scheduler not answered is due (-1: none), then the due
  -- ones' records.
  local limit = whole(8, 1, 10000)
  local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now_text, 'WITHSCORES', 'LIMIT', '0', int(limit))
  local out = { now, -1 }
  local later = redis.call('ZRANGEBYSCORE', due_key, '(' .. now_text, '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
  if #due / 2 >= limit then
    later = redis.call('ZRANGEBYSCORE', due_key, '-inf', '+inf', 'WITHSCORES', 'LIMIT', int(limit), '1')
  end
  if later[2] then out[2] = tonumber(later[2]) end
  for i = 1, #due, 2 do
    local id = due[i]
    local found = record(id, due[i + 1])
    if found then
      out[#out + 1] = found
    else
      redis.call('ZREM', due_key, id)
    end
  end
  return out
end
refuse('unknown scheduler operation ' .. tostring(op))
