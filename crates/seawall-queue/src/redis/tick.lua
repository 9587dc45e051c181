-- Enqueues the ticks of many schedulers of one queue at once (see
-- schedule.lua for how a scheduler is kept). ARGV[7]: this call's request
-- id; ARGV[8]: the wire version of the ids to give (as enqueue.lua);
-- ARGV[9]: how many schedulers. Then per scheduler: its id, the revision
-- and the planned next tick it must still hold, the next tick to plan,
-- when a runner should look at it again, how many ticks make a job, those
-- ticks (ms, oldest first), and the 7 fields of the job each tick makes:
-- payload, priority, max attempts, backoff, timeout ms, group, delay ms.
-- A tick still to come makes a delayed job, ready at the tick plus the
-- delay; one that has come, at now plus the delay.
--
-- A scheduler's ticks are enqueued once: by the call that finds the
-- scheduler as it planned it (not by a racing process, nor after a
-- change), and that moves its next tick on. Returns, per scheduler, `-`
-- when it no longer held that revision and tick (nothing is added for
-- it), else how many jobs it made and their ids. A call re-sent with the
-- same request id answers the first call's answer and adds nothing.
local request = shaped(7, REQUEST, 32, 'a request id')
local wire = whole(8, 1, 2)
local schedulers = whole(9, 1, 10000)
-- Times in ms up to the end of year 9999 (NEVER_MS in schedule.rs).
local LATEST = 253402300799999

-- Every argument is checked before anything is written.
local planned = {}
local at = 10
for s = 1, schedulers do
  local plan = { id = shaped(at, '^[^%s%c{}]+$', 128, 'a scheduler id'), at = at }
  whole(at + 1, 1, MAX_SETTING)
  whole(at + 2, 0, LATEST)
  whole(at + 3, 1, LATEST)
  whole(at + 4, 0, LATEST)
  local count = whole(at + 5, 0, MAX_TICKS)
  plan.ticks = {}
  for i = 1, count do plan.ticks[i] = whole(at + 5 + i, 0, LATEST) end
  local job = at + 6 + count
  if #(ARGV[job] or '') > MAX_PAYLOAD then refuse('a payload is over ' .. MAX_PAYLOAD .. ' bytes') end
  plan.priority = whole(job + 1, 0, 7)
  whole(job + 2, 1, 4294967295)
  if #(ARGV[job + 3] or '') > 256 then refuse('a backoff is over 256 bytes') end
  whole(job + 4, 0, MAX_MS)
  if #(ARGV[job + 5] or '') > 256 then refuse('a group is over 256 bytes') end
  plan.delay = whole(job + 6, 0, MAX_MS)
  plan.job = job
  planned[s] = plan
  at = job + 7
end
if at - 1 ~= #ARGV then refuse('expected ' .. schedulers .. ' schedulers\' plans') end

local epoch = id_epoch(wire)
local first = first_sequence(base)
local added = 0
local out = {}
-- A replay skips the check: the first call moved the plans on.
local replay = redis.call('EXISTS', base .. 'r:' .. request) == 1
for _, plan in ipairs(planned) do
  local held = redis.call('HMGET', base .. 's:' .. plan.id, 'rev', 'next', 'paused', 'lt', 'lj')
  if not replay and (held[1] ~= ARGV[plan.at + 1] or held[2] ~= ARGV[plan.at + 2] or held[3] == '1') then
    out[#out + 1] = '-'
  else
    -- A tick at or before the latest that made a job has its job: after
    -- the server's clock stepped back, a plan may name it again.
    if held[4] and not replay then
      local made, kept = tonumber(held[4]), {}
      for _, tick in ipairs(plan.ticks) do
        if tick > made then kept[#kept + 1] = tick end
      end
      plan.ticks = kept
    end
    plan.held = held
    plan.first = added
    out[#out + 1] = int(#plan.ticks)
    for i = 1, #plan.ticks do out[#out + 1] = int(first + added + i - 1) .. epoch end
    added = added + #plan.ticks
  end
end
local replayed = answer_once(request, out)
if replayed then return replayed end

local order = 0
if added > 0 then
  redis.call('SET', base .. 'jid', int(first + added - 1))
  -- Waiting jobs of one level run in the order of this counter.
  order = redis.call('INCRBY', base .. 'id', int(added)) - added + 1
end
local waiting = 0
local rung = {}
-- Default-priority ids per group, pushed with one RPUSH each at the end.
local lines, line_order = {}, {}
for _, plan in ipairs(planned) do
  if plan.held then
    local key = base .. 's:' .. plan.id
    redis.call('HSET', key, 'next', ARGV[plan.at + 3])
    redis.call('ZADD', base .. 'sdue', ARGV[plan.at + 4], plan.id)
    local job = plan.job
    local group = ARGV[job + 5]
    local count = #plan.ticks
    for i = 1, count do
      local n = plan.first + i - 1
      local id = int(first + n) .. epoch
      local tick = plan.ticks[i]
      local score = int(plan.priority * STRIDE + order + n)
      local ready = math.max(now, tick) + plan.delay
      local state = 'waiting'
      if ready > now then state = 'delayed' end
      -- Fields at their default (no timeout or group) are left out.
      local fields = { 'd', ARGV[job], 'p', ARGV[job + 1], 'ma', ARGV[job + 2],
        'bo', ARGV[job + 3], 'sc', score, 'ct', now_text, 's', state, 'rt', int(ready),
        'sk', int(tick) .. ':' .. plan.id }
      if ARGV[job + 4] ~= '0' then fields[#fields + 1] = 'to'; fields[#fields + 1] = ARGV[job + 4] end
      if group ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = group end
      redis.call('HSET', job_key(id), unpack(fields))
      if state == 'delayed' then
        redis.call('ZADD', delayed_key, int(ready), id)
      else
        line_up(id, group, plan.priority, score, lines, line_order, rung)
        waiting = waiting + 1
      end
      emit_many('enqueued', id)
    end
    if count > 0 then
      -- The tick before the last one stays readable: while the last is
      -- still to come, it is the scheduler's last run.
      local previous_tick, previous_job = plan.held[4], plan.held[5]
      if count > 1 then
        previous_tick = int(plan.ticks[count - 1])
        previous_job = int(first + plan.first + count - 2) .. epoch
      end
      local fields = { 'lt', int(plan.ticks[count]), 'lj', int(first + plan.first + count - 1) .. epoch }
      if previous_job then
        fields[#fields + 1] = 'pt'; fields[#fields + 1] = previous_tick
        fields[#fields + 1] = 'pj'; fields[#fields + 1] = previous_job
      end
      redis.call('HSET', key, unpack(fields))
    end
  end
end
for _, group in ipairs(line_order) do
  chunked('RPUSH', group_key(group), lines[group])
end
if waiting > 0 then redis.call('HINCRBY', meta, 'waiting', int(waiting)) end
flush_events()
-- A delayed job wakes a worker too, so a blocked one learns its due time.
if added > 0 then wake() end
return out
