-- Acknowledges finished jobs and takes the next ones, in one call.
-- ARGV[7]: the caller (a worker and its lane of calls); ARGV[8]: this
-- call's request id; ARGV[9]: lease ms; ARGV[10]: how many jobs to take at
-- most; ARGV[11]: the most payload bytes to take (past them no further job
-- is taken; the first always is); ARGV[12]: how many acknowledgements
-- follow, each as a job id, its lease token and the handler's result (JSON;
-- empty for none, kept with the completed job); after them, 1 to answer
-- each job's trace context, 0 not to (a worker built without tracing reads
-- nothing it would drop).
-- Returns { now, ms until the next delayed job or lease expiry (-1: none,
-- or all that was asked was taken), rejected acknowledgements, paused
-- (0/1), ms left on the leases answered (the lease, unless the call is a
-- replay), then 11 fields per job taken: id, token, payload, ready since,
-- failures so far, max attempts, backoff, timeout ms, stalls so far, run,
-- the job's context (empty for none); and a 12th, the trace context (empty
-- for none), when asked for }.
--
-- The caller's last call is recorded (its request id, what it rejected and
-- the leases it gave), so a call re-sent with the same request id, by a
-- client that replays commands after reconnecting or by a worker whose
-- call timed out, answers the first call's result: it neither counts the
-- acknowledgements again nor leases jobs to nobody. Its leases began when
-- the first call ran, which the caller cannot tell from when it sent the
-- call, so a replay says how long they have left.
local caller = shaped(7, REQUEST, 40, 'a caller id')
local request = shaped(8, REQUEST, 32, 'a request id')
local lease = whole(9, 0, MAX_MS)
local want = whole(10, 0, 10000)
local max_bytes = whole(11, 1, MAX_SETTING)
local acks = whole(12, 0, 1000000)
if #ARGV ~= 13 + 3 * acks then refuse('expected ' .. acks .. ' acknowledgements, then the trace flag') end
-- Acknowledgement i's job id, lease token and result.
local function ack_at(i) return 10 + 3 * i end
for i = 1, acks do
  job_id_arg(ack_at(i))
  shaped(ack_at(i) + 1, TOKEN, 64, 'a lease token')
  if #ARGV[ack_at(i) + 2] > MAX_PAYLOAD then refuse('a result is over ' .. MAX_PAYLOAD .. ' bytes') end
end
local traced = whole(13 + 3 * acks, 0, 1) == 1

local record_key = base .. 'w:' .. caller
local JOB_FIELDS = { 'd', 'rt', 'f', 'ma', 'bo', 'to', 'st', 'tk', 'jc' }
if traced then JOB_FIELDS[10] = 'tc' end

local function answer_job(out, id, token, job)
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = job[1] or ''
  out[#out + 1] = job[2] or now
  out[#out + 1] = job[3] or 0
  out[#out + 1] = job[4] or 1
  out[#out + 1] = job[5] or ''
  out[#out + 1] = job[6] or 0
  out[#out + 1] = job[7] or 0
  out[#out + 1] = job[8] or 1
  out[#out + 1] = job[9] or ''
  if traced then out[#out + 1] = job[10] or '' end
end

local recorded = redis.call('GET', record_key)
if recorded and string.sub(recorded, 1, #request + 1) == request .. ' ' then
  local words = {}
  for word in string.gmatch(recorded, '%S+') do words[#words + 1] = word end
  local out = { now, next_wake(), tonumber(words[2]), tonumber(words[3]), lease }
  -- The jobs the first call took that are still held under its leases.
  for p = 4, #words - 1, 2 do
    local id, token = words[p], words[p + 1]
    local deadline = redis.call('ZSCORE', active_key, lease_member(id, token))
    if deadline then
      local left = tonumber(deadline) - now
      if left < 0 then left = 0 end
      if left < out[5] then out[5] = left end
      answer_job(out, id, token, redis.call('HMGET', job_key(id), unpack(JOB_FIELDS)))
    end
  end
  return out
end

local control = redis.call('HMGET', meta, 'paused', 'rlm', 'rlp', 'hold', 'grm', 'grp', 'rlc', 'uc', 'dft')
-- Whether the queue uses none of flows (its children set, its inbox),
-- named groups (waiting, running, parked) and priorities other than the
-- default (the default group's ranked set), by its own keys, in one
-- command: a plain queue pays for none of their look-ups. (What this call
-- puts in line elsewhere itself, it notes in `lined_elsewhere`.)
local plain = redis.call('EXISTS', base .. 'fc', base .. 'inbox', parked_key, group_active_key,
  groups_key, ranked_key('')) == 0
-- For the prelude's steps that look for those keys themselves: false when
-- they are known to be absent, nil to look.
local known = nil
if plain then known = false end
local rejected = 0
local done_length = nil
if acks > 0 then
  -- ZMSCORE checks every lease token, ZREM ends the current ones (1,000
  -- members a call). A lease acknowledged twice in one call counts once:
  -- the second is rejected, as it would be in a later call.
  local members = {}
  for i = 1, acks do members[i] = lease_member(ARGV[ack_at(i)], ARGV[ack_at(i) + 1]) end
  local scores = chunked('ZMSCORE', active_key, members)
  local current, ids, seen = {}, {}, {}
  for i = 1, acks do
    if scores[i] and not seen[members[i]] then
      seen[members[i]] = true
      current[#current + 1] = members[i]
      ids[#ids + 1] = ARGV[ack_at(i)]
      -- The result goes with the record, so it is kept as long as the
      -- completed job is (and read by a flow's parent before a record
      -- not kept goes).
      local result = ARGV[ack_at(i) + 2]
      if result ~= '' then
        redis.call('HSET', job_key(ARGV[ack_at(i)]), 'rv', result)
      end
    else
      rejected = rejected + 1
    end
  end
  if #current > 0 then chunked('ZREM', active_key, current) end
  -- Only jobs of named groups count against a group; when none runs, no
  -- acknowledged job has one to look up.
  if #ids > 0 and not plain and redis.call('HLEN', group_active_key) > 0 then
    for _, id in ipairs(ids) do left_active(redis.call('HGET', job_key(id), 'g') or '') end
  end
  done_length = complete_all(ids, control[8] == '1', known)
end
flush_events()
if acks > 0 then trim_completed(done_length, control[9]) else trim_completed_by_age(control[9]) end
local noted = promote(known)
recover()
-- Still plain when taking: nothing the upkeep put back went elsewhere.
plain = plain and not lined_elsewhere

local out = { now, 0, rejected, 0, lease }
if control[1] == '1' then
  out[4] = 1
  want = 0
end
-- When the queue may start jobs again, if a rate limit or a hold keeps it
-- from starting as many as asked: a worker that got fewer blocks until
-- then at most.
local limited_until = nil
-- A hold a handler asked for (the downstream limits it): nothing starts
-- before it ends.
local hold = tonumber(control[4] or '0')
if hold > now then
  want = 0
  limited_until = hold
end
-- The rate limit: at most `rlm` jobs start in any `rlp` ms, on the
-- server's clock, across every worker. `rlog` lists the fetches that
-- started jobs within the window, oldest first, each as '<ms> <jobs>',
-- and meta `rlc` holds the sum of their jobs: a fetch costs a push and
-- the pops of what left the window, not a write per job. The log has no
-- expiry: a quiet queue keeps at most one window's fetches in it.
local rate_log = base .. 'rlog'
local rate_max, rate_per = tonumber(control[2] or ''), tonumber(control[3] or '')
local rate_room, in_window = nil, 0
if rate_max and rate_per then
  in_window = rate_started(rate_log, tonumber(control[7] or '0'), rate_per)
  rate_room = rate_max - in_window
  if rate_room < 0 then rate_room = 0 end
  if rate_room < want then want = rate_room end
end

local taken = 0
local bytes = 0
local full = false
local deadline = int(now + lease)
local leases = {}
local record = { request, rejected, out[4] }
-- Named groups may sit out of the rotation: held by a handler, or at the
-- group rate limit (each group starts at most `grm` jobs in any `grp` ms,
-- counted in `rg:<group>` as the queue's own limit is). A group sitting
-- out is in `parked` until it may start again; `promote` puts it back.
local group_max, group_per = tonumber(control[5] or ''), tonumber(control[6] or '')
local any_parked = noted and redis.call('EXISTS', parked_key) == 1
-- Whether a group went back in the rotation (a plain queue's only one).
local rung_again = false
-- A plain queue's rotation holds the default group alone, for as long as
-- its line has jobs: the line is read at once, in one pass, and the
-- rotation is touched only when the line runs out.
local plain_looked = false
while taken < want and not full do
  local group = ''
  if plain then
    if plain_looked then break end
    plain_looked = true
  else
    group = redis.call('LPOP', ring_key)
    if not group then break end
  end
  -- A group alone in the rotation gives as many jobs as it may; otherwise
  -- each group gives one per turn.
  local room = group_room(group)
  local turn = 1
  -- A plain queue's rotation holds the default group alone.
  if plain or redis.call('LLEN', ring_key) == 0 then turn = want - taken end
  if turn > room then turn = room end
  local parked = false
  local group_window, group_room_left = nil, nil
  if group ~= '' then
    if any_parked and tonumber(redis.call('ZSCORE', parked_key, group) or '0') > now then
      parked = true
    elseif group_max and group_per then
      group_window = base .. 'rg:' .. group
      redis.call('ZREMRANGEBYSCORE', group_window, '-inf', int(now - group_per))
      group_room_left = group_max - redis.call('ZCARD', group_window)
      if group_room_left <= 0 then
        park(group, group_window, group_per)
        any_parked = true
        parked = true
      end
    end
  end
  if parked then turn = 0 elseif group_room_left and turn > group_room_left then turn = group_room_left end
  -- Above the default priority, then the default list, then below.
  local popped = {}
  local ranked = ranked_key(group)
  if turn > 0 and not plain then
    popped = redis.call('ZRANGEBYSCORE', ranked, '-inf', '(' .. int(DEFAULT_LEVEL * STRIDE), 'LIMIT', '0', int(turn))
    if #popped > 0 then redis.call('ZREMRANGEBYRANK', ranked, '0', int(#popped - 1)) end
  end
  if #popped < turn then
    local listed = redis.call('LPOP', group_key(group), int(turn - #popped))
    if listed then
      for _, id in ipairs(listed) do popped[#popped + 1] = id end
    end
  end
  if #popped < turn and not plain then
    local low = redis.call('ZRANGE', ranked, '0', int(turn - #popped - 1))
    if #low > 0 then redis.call('ZREMRANGEBYRANK', ranked, '0', int(#low - 1)) end
    for _, id in ipairs(low) do popped[#popped + 1] = id end
  end
  local took = 0
  for index, id in ipairs(popped) do
    if taken > 0 and bytes >= max_bytes then
      -- Past the byte budget: the rest go back to the front of their line,
      -- in their order.
      for back = #popped, index, -1 do
        local rest = popped[back]
        enqueue_waiting(rest, group, redis.call('HGET', job_key(rest), 'sc'), true)
      end
      full = true
      break
    end
    local key = job_key(id)
    local job = redis.call('HMGET', key, unpack(JOB_FIELDS))
    local run = tonumber(job[8] or '0') + 1
    -- Unique per run, also after lost writes: this call's random id and
    -- the job's place in its answer.
    local token = request .. '.' .. (taken + 1)
    job[8] = run
    redis.call('HSET', key, 's', 'active', 'at', now_text, 'tk', int(run))
    leases[#leases + 1] = deadline
    leases[#leases + 1] = lease_member(id, token)
    record[#record + 1] = id
    record[#record + 1] = token
    emit_many('active', id)
    answer_job(out, id, token, job)
    bytes = bytes + #(job[1] or '')
    taken = taken + 1
    took = took + 1
  end
  if took > 0 then
    redis.call('HINCRBY', meta, 'waiting', int(-took))
    if group ~= '' then redis.call('HINCRBY', group_active_key, group, int(took)) end
  end
  if group_window and took > 0 then
    local starts = {}
    for i = #record - 2 * took + 2, #record, 2 do
      starts[#starts + 1] = now_text
      starts[#starts + 1] = record[i]
    end
    chunked('ZADD', group_window, starts)
    redis.call('PEXPIRE', group_window, int(group_per))
    if took >= group_room_left then
      park(group, group_window, group_per)
      any_parked = true
      parked = true
    end
  end
  local left = 0
  if not plain then left = group_waiting(group) end
  if plain then
    -- A line that gave fewer than asked is empty, unless the byte budget
    -- put some back.
    if #popped == turn or full then left = redis.call('LLEN', group_key(group)) end
    if left > 0 then
      rung_again = true
    elseif redis.call('SREM', ringed_key, group) == 1 then
      redis.call('LREM', ring_key, '0', group)
    end
  elseif left > 0 then
    if group_room(group) > 0 and not parked then
      redis.call('RPUSH', ring_key, group)
      rung_again = true
    else
      redis.call('SREM', ringed_key, group)
    end
  else
    redis.call('SREM', ringed_key, group)
    if group ~= '' then redis.call('SREM', groups_key, group) end
  end
end

if rate_room then
  if taken > 0 then
    redis.call('RPUSH', rate_log, now_text .. ' ' .. int(taken))
  end
  if taken > 0 or in_window ~= tonumber(control[7] or '0') then
    redis.call('HSET', meta, 'rlc', int(in_window + taken))
  end
  if taken >= rate_room then
    -- The window is full: the next start is allowed when its oldest
    -- start leaves it.
    local oldest = redis.call('LINDEX', rate_log, '0')
    local free_at = now + 1
    if oldest then free_at = tonumber(string.match(oldest, '^(%d+)')) + rate_per end
    if not limited_until or free_at > limited_until then limited_until = free_at end
  end
end

-- More waiting: wake another worker.
if taken > 0 and not limited_until and (plain and rung_again or not plain and redis.call('LLEN', ring_key) > 0) then
  wake()
end
if #leases > 0 then chunked('ZADD', active_key, leases) end
flush_events()
redis.call('SET', record_key, table.concat(record, ' '), 'PX', int(lease + 600000))
-- A worker that got all it asked for fetches again at once; only one that
-- will block needs to know when to look again.
-- One cut short by the byte budget looks again at once (0).
if full then
  out[2] = 0
elseif limited_until then
  out[2] = limited_until - now
  local due = next_wake()
  if due >= 0 and due < out[2] then out[2] = due end
elseif taken < want then
  out[2] = next_wake()
  -- A parked group's jobs may start when it comes back.
  if any_parked then
    local first = redis.call('ZRANGE', parked_key, '0', '0', 'WITHSCORES')
    if first[2] then
      local back = tonumber(first[2]) - now
      if back < 0 then back = 0 end
      if out[2] < 0 or back < out[2] then out[2] = back end
    end
  end
else
  out[2] = -1
end
return out
