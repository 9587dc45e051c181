-- ARGV[7]: this call's request id; ARGV[8]: how many jobs; ARGV[9]: the
-- wire version of the ids to give (1: digits alone, which the release
-- before epochs reads; 2: `<sequence>-<epoch>`); then 9 fields per job: payload,
-- priority, max attempts, backoff, timeout ms, group, delay ms,
-- idempotency key, its window ms; or 10, the tenth each job's trace
-- context (empty for none), when any job of the call carries one (a call
-- with none sends nothing for it); or 11, the eleventh each job's context
-- (`JobOptions::context`, empty for none), when any job carries one. Returns, per job, its id and 1 when it
-- was added or 0 when an earlier job with the same idempotency key answered
-- for it; or { 'mismatch', n } when job n (from 1) names an idempotency key
-- that an earlier job holds with another payload or options, and then adds
-- nothing. A call re-sent with the same request id (a client
-- that replays commands after reconnecting) answers the first call's
-- result and adds nothing.
local request = shaped(7, REQUEST, 32, 'a request id')
local count = whole(8, 1, 10000)
local wire = whole(9, 1, 2)
-- Where the jobs' fields start.
local JOBS = 10
-- Fields per job: count * 9, count * 10 and count * 11 arguments differ
-- for every count from 1 on.
local FIELDS = (#ARGV - (JOBS - 1)) / count
if FIELDS ~= 9 and FIELDS ~= 10 and FIELDS ~= 11 then
  refuse('expected ' .. count .. ' jobs of 9, 10 or 11 fields')
end
-- Whether the jobs carry a trace context (their tenth field) and a
-- context (their eleventh); a job's is `''` for none. (Read in place, as
-- the checks below read the other fields: a function made for it would be
-- made again on every call.)
local TRACED, WITH_CONTEXT = FIELDS >= 10, FIELDS == 11
-- The checked numbers are read again from their text where they are
-- needed: `whole` takes a number only as Redis writes it, so a job's
-- priority is one digit (its byte less 48) and its delay is `'0'` for none.
-- Per job with an idempotency key (tables made for the call's first such
-- job: a call without keys, most, makes none), how long its key is kept
-- in ms, and how its key holds: `t` for a window (the ninth field in ms),
-- `s` until the job starts, `c` until it completes, `d` while it waits for
-- its delay (a debounce).
local KEY_HOLD_MS = 2592000000
local windows, modes
for i = 0, count - 1 do
  local at = JOBS + i * FIELDS
  if #ARGV[at] > MAX_PAYLOAD then refuse('a payload is over ' .. MAX_PAYLOAD .. ' bytes') end
  whole(at + 1, 0, 7)
  whole(at + 2, 1, 4294967295)
  if #ARGV[at + 3] > 256 then refuse('a backoff is over 256 bytes') end
  whole(at + 4, 0, MAX_MS)
  if #ARGV[at + 5] > MAX_KEY then refuse('a group is over ' .. MAX_KEY .. ' bytes') end
  local delay = whole(at + 6, 0, MAX_MS)
  if #ARGV[at + 7] > MAX_KEY then refuse('an idempotency key is over ' .. MAX_KEY .. ' bytes') end
  if ARGV[at + 7] ~= '' then
    if not windows then windows, modes = {}, {} end
    local hold = ARGV[at + 8]
    if hold == 's' or hold == 'c' or hold == 'd' then
      modes[i] = hold
      windows[i] = KEY_HOLD_MS
      if hold == 'd' and delay == 0 then refuse('a debounced job needs a delay') end
    else
      modes[i] = 't'
      windows[i] = whole(at + 8, 1, MAX_MS)
    end
  end
  if TRACED and #ARGV[at + 9] > MAX_TRACE then refuse('a trace context is over ' .. MAX_TRACE .. ' bytes') end
  if WITH_CONTEXT and #ARGV[at + 10] > MAX_CONTEXT then
    refuse('a context is over ' .. MAX_CONTEXT .. ' bytes')
  end
end

-- Ids never repeat (see `id_epoch`): `<sequence>-<epoch>`, the sequence
-- the last one plus one, or the server's clock in microseconds since 2026,
-- whichever is larger.
local epoch = id_epoch(wire)
local id_key = base .. 'jid'
local first = first_sequence(base)
-- The last sequence this call gives, as text, for `id_key`.
local last_sequence

-- The answer is known before anything is written: per job, its id and 1
-- when it is added, or an earlier job's id and 0 when that job holds the
-- same idempotency key (in Redis, or earlier in this call) for the same
-- job. A window key's record is `<id> <digest>`; another key's is
-- `<id> =<mode>`, and it holds while its job is in a state the mode names
-- (a job that ran once has started, also when it waits to be retried).
-- A debounce's later job replaces the held job's payload and delay.
local out = {}
-- Keys claimed in this call, the state of the job that claimed each, the
-- jobs' digests and the debounced jobs to replace (with keys alone).
local claimed, claimed_state, digests, replaced
if windows then claimed, claimed_state, digests, replaced = {}, {}, {}, {} end
for i = 0, count - 1 do
  local at = JOBS + i * FIELDS
  local sequence = int(first + i)
  local id = sequence .. epoch
  if i == count - 1 then last_sequence = sequence end
  local idempotency = ARGV[at + 7]
  local earlier = false
  if idempotency ~= '' then
    -- What the key promises to be the same job: the payload and the
    -- options that change how it runs (priority, attempts, backoff,
    -- timeout, group, delay), each text with its length before it.
    local parts = {}
    for field = at, at + 6 do
      parts[#parts + 1] = #ARGV[field] .. ':' .. ARGV[field]
    end
    digests[i] = redis.sha1hex(table.concat(parts, ','))
    local record = claimed[idempotency] or redis.call('GET', base .. 'u:' .. idempotency)
    if modes[i] == 't' then
      if record then
        local held, rest = string.match(record, '^(%S+) ?(.*)$')
        if string.match(rest, '^%x+$') and rest ~= digests[i] then return { 'mismatch', i + 1 } end
        earlier = held
      end
    elseif record then
      local held = string.match(record, '^(%S+)')
      local state, runs = claimed_state[idempotency], nil
      if not state then
        local job = redis.call('HMGET', job_key(held), 's', 'tk')
        state, runs = job[1], job[2]
      end
      -- Whether the held job is in a state its key's mode holds for.
      local mode, holds = modes[i], false
      if mode == 'c' then
        holds = state == 'waiting' or state == 'delayed' or state == 'active'
      elseif not runs then
        holds = state == 'delayed' or (mode == 's' and state == 'waiting')
      end
      if holds then
        earlier = held
        if modes[i] == 'd' then replaced[#replaced + 1] = { held, i } end
      end
    end
    if not earlier then
      if modes[i] == 't' then
        claimed[idempotency] = id .. ' ' .. digests[i]
      else
        claimed[idempotency] = id .. ' =' .. modes[i]
      end
      claimed_state[idempotency] = 'waiting'
      if ARGV[at + 6] ~= '0' then claimed_state[idempotency] = 'delayed' end
    end
  end
  if earlier then
    out[#out + 1] = earlier
    out[#out + 1] = '0'
  else
    out[#out + 1] = id
    out[#out + 1] = '1'
  end
end

-- A replay of this call answers the first call's answer and adds nothing.
local replayed = answer_once(request, out)
if replayed then return replayed end
redis.call('SET', id_key, last_sequence)
-- Waiting jobs of one level other than the default run in the order of
-- this counter (a ranked set's score); those at the default level wait in
-- a list, in the order of their pushes, so a call of those alone does not
-- count (their score only names their level).
local order = 0
for i = 0, count - 1 do
  if string.byte(ARGV[JOBS + i * FIELDS + 1]) - 48 ~= DEFAULT_LEVEL then
    order = redis.call('INCRBY', base .. 'id', int(count)) - count + 1
    break
  end
end

local woke = false
-- Whether a job of this call holds a key other than a window, which goes
-- when its job finishes: the queue's completions then free keys (meta
-- `uc`, see `complete_all`).
local keyed_to_the_end = false
local waiting = 0
-- Default-priority ids per group, pushed with one RPUSH each at the end,
-- and the groups put in the fetch rotation (see `line_up`); a call of one
-- job pushes its id at once, without them.
local lines, line_order, rung
if count > 1 then lines, line_order, rung = {}, {}, {} end
for i = 0, count - 1 do
  local at = JOBS + i * FIELDS
  local idempotency = ARGV[at + 7]
  if out[2 * i + 2] == '1' then
    -- An added job's id is its own in the answer.
    local id = out[2 * i + 1]
    if idempotency ~= '' then
      local record = id .. ' ' .. digests[i]
      if modes[i] ~= 't' then record = id .. ' =' .. modes[i] end
      redis.call('SET', base .. 'u:' .. idempotency, record, 'PX', int(windows[i]))
      if modes[i] ~= 't' then keyed_to_the_end = true end
    end
    local key = job_key(id)
    local group = ARGV[at + 5]
    local priority = string.byte(ARGV[at + 1]) - 48
    local score = DEFAULT_SCORE
    if priority ~= DEFAULT_LEVEL or order + i > 0 then score = int(priority * STRIDE + order + i) end
    local delayed = ARGV[at + 6] ~= '0'
    local state, ready = 'waiting', now_text
    if delayed then state, ready = 'delayed', int(now + tonumber(ARGV[at + 6])) end
    -- Fields at their default (no timeout, group, key, trace context or
    -- context) are left out: a job with none of them, most, is written
    -- without building the list of its fields.
    local timeout = ARGV[at + 4]
    local trace = TRACED and ARGV[at + 9] or ''
    local context = WITH_CONTEXT and ARGV[at + 10] or ''
    if timeout == '0' and group == '' and idempotency == '' and trace == '' and context == '' then
      redis.call('HSET', key, 'd', ARGV[at], 'p', ARGV[at + 1], 'ma', ARGV[at + 2],
        'bo', ARGV[at + 3], 'sc', score, 'ct', now_text, 's', state, 'rt', ready)
    else
      local fields = { 'd', ARGV[at], 'p', ARGV[at + 1], 'ma', ARGV[at + 2],
        'bo', ARGV[at + 3], 'sc', score, 'ct', now_text, 's', state, 'rt', ready }
      if timeout ~= '0' then fields[#fields + 1] = 'to'; fields[#fields + 1] = timeout end
      if group ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = group end
      if idempotency ~= '' then fields[#fields + 1] = 'ik'; fields[#fields + 1] = idempotency end
      if trace ~= '' then fields[#fields + 1] = 'tc'; fields[#fields + 1] = trace end
      if context ~= '' then fields[#fields + 1] = 'jc'; fields[#fields + 1] = context end
      redis.call('HSET', key, unpack(fields))
    end
    if delayed then
      redis.call('ZADD', delayed_key, ready, id)
      woke = true
    else
      if not line_up(id, group, priority, score, lines, line_order, rung) then woke = true end
      waiting = waiting + 1
    end
    -- One job's event is the entry the batch of one would be.
    if count == 1 then emit('enqueued', id) else emit_many('enqueued', id) end
  end
end
if line_order then
  for _, group in ipairs(line_order) do
    chunked('RPUSH', group_key(group), lines[group])
  end
end
-- Debounced: the held job takes the later payload and context, and waits
-- anew.
if replaced then
  for _, replacement in ipairs(replaced) do
    local held, i = replacement[1], replacement[2]
    local ready = int(now + tonumber(ARGV[JOBS + i * FIELDS + 6]))
    local context = WITH_CONTEXT and ARGV[JOBS + i * FIELDS + 10] or ''
    if context ~= '' then
      redis.call('HSET', job_key(held), 'd', ARGV[JOBS + i * FIELDS], 'rt', ready, 'jc', context)
    else
      redis.call('HSET', job_key(held), 'd', ARGV[JOBS + i * FIELDS], 'rt', ready)
      redis.call('HDEL', job_key(held), 'jc')
    end
    redis.call('ZADD', delayed_key, ready, held)
    emit('debounced', held)
    woke = true
  end
end
if waiting == 1 then
  redis.call('HINCRBY', meta, 'waiting', '1')
elseif waiting > 0 then
  redis.call('HINCRBY', meta, 'waiting', int(waiting))
end
if keyed_to_the_end then redis.call('HSET', meta, 'uc', '1') end
flush_events()
-- A delayed job wakes a worker too, so a blocked one learns its due time.
if woke then wake() end
return out
