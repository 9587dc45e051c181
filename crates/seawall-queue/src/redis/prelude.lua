-- Shared by every script of a queue. KEYS[1] is the queue's meta hash, and
-- every other key is built from ARGV[1], the queue's key prefix: all of them
-- carry the queue's hash tag, so one script touches one Cluster slot.
-- ARGV[2..6] are the queue's settings; a script's own arguments start at 7.
--
-- A script that fails halfway keeps what it wrote before the failure, so
-- every script checks all the arguments it uses before its first write: a
-- bad one ends the script with an error and nothing changed.
--
-- Each script gets only the definitions below that it names, directly or
-- through another kept definition (see lua.rs): so this file holds
-- top-level `local` definitions only, each with its comment above it, and
-- a setting no kept text names is neither read nor checked.
--
-- A number goes to redis.call as text (`int`, `now_text`, a quoted
-- literal): handed a Lua number, Redis 7.0 prints it with `%.17g`, which
-- costs several times what `string.format('%d', …)` does, and these
-- scripts pass several per job.
local meta = KEYS[1]
local base = ARGV[1]

local function int(value) return string.format('%d', value) end

local function refuse(what)
  error({ err = 'ERR seawall: ' .. what })
end

-- ARGV[index] as a whole number from `low` to `high`, written as Redis
-- writes an integer: digits only, no leading zero, an optional leading
-- minus, at most 15 digits (exact as a Lua number). `tonumber` alone
-- takes `1e3`, `0x10` or `3600000.0`, which commands that want an integer
-- (SET ... PX, INCRBY) refuse later, after the script's first write.
local function whole(index, low, high)
  local raw = ARGV[index]
  local value = nil
  if raw ~= nil and #raw <= 16 and (raw == '0' or string.match(raw, '^%-?[1-9]%d*$')) then
    value = tonumber(raw)
  end
  if value == nil or value < low or value > high then
    refuse('argument ' .. index .. ' is ' .. tostring(ARGV[index]) .. ', not a whole number from '
      .. int(low) .. ' to ' .. int(high))
  end
  return value
end

-- ARGV[index] as text matching `pattern`, at most `longest` bytes.
local function shaped(index, pattern, longest, what)
  local value = ARGV[index]
  if value == nil or #value > longest or not string.match(value, pattern) then
    refuse('argument ' .. index .. ' is not ' .. what)
  end
  return value
end

-- How long an enqueue's answer is kept for a replay of the same call; a
-- client re-sends a call within its command timeout.
local ANSWER_KEPT_MS = '30000'

-- Keeps an adding call's answer (words) for a replay of the call, under
-- its request id; for a replay, whose key exists already, answers the
-- first call's answer instead (the caller then adds nothing).
local function answer_once(request, answer)
  local answered_key = base .. 'r:' .. request
  if redis.call('SET', answered_key, table.concat(answer, ' '), 'NX', 'PX', ANSWER_KEPT_MS) then
    return nil
  end
  local replayed = {}
  for word in string.gmatch(redis.call('GET', answered_key), '%S+') do
    replayed[#replayed + 1] = word
  end
  return replayed
end

-- ARGV[index] as a job id: `<sequence>-<epoch>` (see enqueue.lua), or
-- digits alone, as ids were before they carried an epoch (a queue upgraded
-- in place keeps its jobs). Neither form holds ':' (active members are
-- `id:token`) or a space (events and idempotency records list ids
-- space-separated).
local function job_id_arg(index)
  local id = ARGV[index]
  if id == nil or #id > 40 or not (string.match(id, '^%d+$') or string.match(id, '^%d+%-%x+$')) then
    refuse('argument ' .. index .. ' is not a job id')
  end
  return id
end
-- A lease token: the request that took the job and the job's place in
-- that call's answer.
local TOKEN = '^[%w]+%.?%d*$'
local REQUEST = '^%x+$'

local events_max = whole(2, 0, MAX_SETTING)
local keep_completed = whole(3, 0, MAX_SETTING)
local keep_completed_ms = whole(4, 0, MAX_SETTING)
local keep_dead = whole(5, 0, MAX_SETTING)
local max_stalls = whole(6, 0, 4294967295)

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- `now` as text, for the commands that store it.
local now_text = int(now)

local active_key = base .. 'active'
local delayed_key = base .. 'delayed'
local done_key = base .. 'done'
local dead_key = base .. 'dead'
local ring_key = base .. 'ring'
local ringed_key = base .. 'ringed'
local groups_key = base .. 'groups'
local group_active_key = base .. 'gact'
local mark_key = base .. 'mark'

local function job_key(id) return base .. 'j:' .. id end
-- A group's waiting jobs: those at the default priority in a list (FIFO),
-- the others in a sorted set by priority, then id.
local function group_key(group) return base .. 'g:' .. group end
local function ranked_key(group) return base .. 'z:' .. group end
local STRIDE = 1099511627776
local DEFAULT_LEVEL = 3

-- Ids never repeat, even after Redis lost its last writes (a failover, an
-- fsync window), whatever the servers' clocks say: an id is
-- `<sequence>-<epoch>`. The epoch is the first 16 hex digits of the
-- server's replication id, which Redis draws at random (160 bits) when
-- the server starts and again when a replica is promoted, and keeps for
-- as long as it stays the primary: a server restarted without its last
-- writes, or a replica promoted without them, gives ids of another epoch
-- than the lost ones. The sequence is the last one plus one, or the
-- server's clock in microseconds since 2026, whichever is larger, so ids
-- of one primary grow in enqueue order, and usually across a failover
-- too; after a loss, or with a clock behind, a sequence may come again,
-- never with the same epoch (unless two primaries drew the same 64 bits).
-- `INFO replication` costs the server about 4 µs a call (not a job), and
-- no round trip. A replica names its primary's replication id, so one that
-- takes writes (`replica-read-only no`) would give ids its primary gives
-- too: an enqueue on any replica is refused before it writes.
--
-- Wire version 1 leaves the epoch out: while a worker of the release
-- before epochs is alive, ids are digits alone, as that release gave
-- them, from the same sequence.
local function id_epoch(wire)
  local replication = redis.call('INFO', 'replication')
  if string.match(replication, 'role:slave') then
    refuse('this server is a replica: enqueue on the primary (a writable replica would repeat its ids)')
  end
  if wire < 2 then return '' end
  local replid = string.match(replication, 'master_replid:(%x+)')
  if not replid or #replid < 16 then refuse('the server names no replication id (INFO replication)') end
  return '-' .. string.sub(replid, 1, 16)
end

-- The first of a queue's new id sequences: the last one plus one, or the
-- server's clock in microseconds since 2026, whichever is larger (see
-- `id_epoch`); `queue_base` is the queue's key prefix.
local function first_sequence(queue_base)
  local clock_id = (tonumber(clock[1]) - 1767225600) * 1000000 + tonumber(clock[2])
  local first = tonumber(redis.call('GET', queue_base .. 'jid') or '0') + 1
  if clock_id > first then return clock_id end
  return first
end

-- Calls `command` on `key` with `values` appended, at most 1,000 at a time
-- (Lua's unpack refuses much past 8,000 values); returns the replies'
-- arrays joined, for commands that answer one value per argument.
local CHUNK = 1000
local function chunked(command, key, values)
  local replies = {}
  for from = 1, #values, CHUNK do
    local to = math.min(from + CHUNK - 1, #values)
    local reply = redis.call(command, key, unpack(values, from, to))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do replies[#replies + 1] = value end
    end
  end
  return replies
end

-- DEL of many keys, 1,000 a call.
local function delete_all(keys)
  for from = 1, #keys, CHUNK do
    redis.call('DEL', unpack(keys, from, math.min(from + CHUNK - 1, #keys)))
  end
end

-- A running job's member of the active set: its id and lease token, so
-- removing the member checks the token in the same call.
local function lease_member(id, token) return id .. ':' .. token end
local function member_id(member) return string.match(member, '^([^:]*):') end

-- Appends `id` to the list `lists[name]`, noting in `order` the order in
-- which the names first came.
local function collect(lists, order, name, id)
  local list = lists[name]
  if not list then
    list = {}
    lists[name] = list
    order[#order + 1] = name
  end
  list[#list + 1] = id
end

-- Events of one kind that many jobs share in one script (enqueued, active,
-- completed) go out as one entry whose `j` lists the ids, space-separated.
local batched, batch_order = {}, {}
local function emit_many(event, id)
  if events_max > 0 then collect(batched, batch_order, event, id) end
end

local function flush_events()
  for _, event in ipairs(batch_order) do
    redis.call('XADD', base .. 'ev', 'MAXLEN', '~', int(events_max), '*', 'e', event, 'j',
      table.concat(batched[event], ' '))
  end
  batched, batch_order = {}, {}
end

local function emit(event, id, a, b, c, d)
  if events_max > 0 then
    if c then
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', int(events_max), '*', 'e', event, 'j', id, a, b, c, d)
    elseif a then
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', int(events_max), '*', 'e', event, 'j', id, a, b)
    else
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', int(events_max), '*', 'e', event, 'j', id)
    end
  end
end

-- Wakes one worker blocked on the queue.
local function wake()
  redis.call('ZADD', mark_key, '0', 'w')
end

-- How many more jobs of a group may run now (the default group "" has no cap).
local function group_room(group)
  if group == '' then return math.huge end
  local cap = tonumber(redis.call('HGET', meta, 'gcap') or '0')
  if cap <= 0 then return math.huge end
  return cap - tonumber(redis.call('HGET', group_active_key, group) or '0')
end

-- Puts a group at the back of the fetch rotation unless it is in it already.
local function ring(group)
  if redis.call('SADD', ringed_key, group) == 1 then
    redis.call('RPUSH', ring_key, group)
  end
end

local function group_waiting(group)
  return redis.call('LLEN', group_key(group)) + redis.call('ZCARD', ranked_key(group))
end

-- Whether this script has put a job in a line that `plain_lines` (in
-- fetch.lua) did not look at: a ranked set (a priority other than the
-- default), or a named group's.
local lined_elsewhere = false

-- Puts a job in line in its group: at the default priority at the back, or
-- at the `front` for a job that was in line before (retried, recovered,
-- given back); at other priorities by score.
local function enqueue_waiting(id, group, score, front)
  if group ~= '' then lined_elsewhere = true end
  if math.floor(tonumber(score) / STRIDE) == DEFAULT_LEVEL then
    if front then
      redis.call('LPUSH', group_key(group), id)
    else
      redis.call('RPUSH', group_key(group), id)
    end
  else
    lined_elsewhere = true
    redis.call('ZADD', ranked_key(group), score, id)
  end
end

local function make_waiting(id, key, group, score, front)
  enqueue_waiting(id, group, score, front)
  redis.call('HSET', key, 's', 'waiting', 'rt', now_text)
  redis.call('HINCRBY', meta, 'waiting', '1')
  if group ~= '' then redis.call('SADD', groups_key, group) end
  if group_room(group) > 0 then ring(group) end
end

-- Puts a job just added in line, and its group in the fetch rotation once
-- per call (`rung` holds the groups done): a default-priority id is
-- collected into `lines` (see `collect`), for one RPUSH per group when the
-- call ends; one of another priority goes in by its score.
local function line_up(id, group, priority, score, lines, line_order, rung)
  if priority == DEFAULT_LEVEL then
    collect(lines, line_order, group, id)
  else
    enqueue_waiting(id, group, score, false)
  end
  if not rung[group] then
    rung[group] = true
    if group ~= '' then redis.call('SADD', groups_key, group) end
    if group_room(group) > 0 then ring(group) end
  end
end

-- After a job left the active set: its group may fetch again.
local function left_active(group)
  if group == '' then return end
  if redis.call('HINCRBY', group_active_key, group, '-1') <= 0 then
    redis.call('HDEL', group_active_key, group)
  end
  if group_waiting(group) > 0 and group_room(group) > 0 then
    ring(group)
    wake()
  end
end

-- A flow's child that finished tells its parent (in its own queue or
-- another; see flow.lua): completed, with its result, or failed (dead or
-- cancelled), which by the child's policy fails the parent (`fail`), is
-- recorded and passed over (`ignore`), or drops the dependency (`drop`).
-- The parent's children hash (`kids:<id>`) holds `-` for a pending child,
-- `c<result>` or `f<error>` after; a parent left with none pending, or
-- to be failed, gets a note in its queue's inbox, which that queue's
-- scripts read (`take_inbox`). Called for members of `fc`, the queue's
-- flow children, each once (the caller removes it from `fc`). A parent
-- that is gone (dead by another child and then removed) is told nothing:
-- no record is made again in its name.
local function tell_parent(id, key, failed, message)
  local flow = redis.call('HMGET', key, 'fp', 'fk', 'rv')
  if not flow[1] then return end
  local parent_base, parent, policy = string.match(flow[1], '^(%S+) (%S+) (%a+)$')
  local kids = parent_base .. 'kids:' .. parent
  if redis.call('HGET', kids, flow[2]) ~= '-' then return end
  if redis.call('EXISTS', parent_base .. 'j:' .. parent) == 0 then return end
  local note = nil
  if not failed then
    redis.call('HSET', kids, flow[2], 'c' .. (flow[3] or ''))
  elseif policy == 'drop' then
    redis.call('HDEL', kids, flow[2])
  else
    redis.call('HSET', kids, flow[2], 'f' .. message)
    if policy ~= 'ignore' then
      -- Named as the memory store names it: `<queue> <id>`. The child's key
      -- prefix is `<prefix>:{<queue>}:`, or `{<prefix>}:<queue>:` when
      -- the queues share one slot; neither a prefix nor a queue name holds
      -- a brace.
      local child_base, child = string.match(flow[2], '^(%S+) (%S+)$')
      local queue = string.match(child_base, '^{[^{}]*}:(.*):$') or string.match(child_base, '{([^{}]*)}:$')
      note = 'f ' .. parent .. ' a child failed (' .. (queue or child_base) .. ' ' .. child .. '): ' .. message
    end
  end
  if not note and redis.call('HINCRBY', parent_base .. 'j:' .. parent, 'pn', '-1') <= 0 then
    note = 'r ' .. parent
  end
  if note then
    redis.call('RPUSH', parent_base .. 'inbox', note)
    redis.call('ZADD', parent_base .. 'mark', '0', 'w')
  end
end

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
-- before `cutoff`, never leaving fewer than `keep`.
local function trim_done(cutoff, keep, limit)
  local removable = redis.call('LLEN', done_key) - keep
  if removable > limit then removable = limit end
  local removed = 0
  while removed < removable do
    local id = redis.call('LINDEX', done_key, '-1')
    local finished = tonumber(redis.call('HGET', job_key(id), 'ft') or '0')
    if finished > cutoff then break end
    redis.call('RPOP', done_key)
    redis.call('DEL', job_key(id))
    removed = removed + 1
  end
  return removed
end

-- Completed jobs past their age, also when none has completed lately.
local function trim_completed_by_age()
  if keep_completed > 0 and keep_completed_ms > 0 then
    trim_done(now - keep_completed_ms, 0, 1000)
  end
end

-- `length`: the done list's length, when the caller has it (the LPUSH of
-- `complete_all` answers it).
local function trim_completed(length)
  if keep_completed <= 0 then return end
  local excess = (length or redis.call('LLEN', done_key)) - keep_completed
  if excess > 0 then
    if excess > 1000 then excess = 1000 end
    local old = redis.call('RPOP', done_key, int(excess))
    for i, id in ipairs(old) do old[i] = job_key(id) end
    delete_all(old)
  end
  trim_completed_by_age()
end

-- How long a flow parent's children's outcomes are kept once it is
-- released or failed (30 days): its handler reads them when it runs.
local KIDS_KEPT_MS = '2592000000'

-- Cancels a job (see control.lua's `cancel`): a waiting or delayed one is
-- removed, a running one asked to stop; a flow parent still waiting for
-- its children is removed and its pending children are cancelled, each by
-- a note to its queue's inbox. Returns `cancelled`, `requested`, or the
-- finished job's state (`missing` for none).
local function cancel_job(id)
  local key = job_key(id)
  local job = redis.call('HMGET', key, 's', 'g')
  job[2] = job[2] or ''
  if job[1] == 'waiting' then
    if redis.call('ZREM', ranked_key(job[2]), id) == 0 then
      redis.call('LREM', group_key(job[2]), '1', id)
    end
    redis.call('HINCRBY', meta, 'waiting', '-1')
    -- A group with nothing left waiting leaves the set of groups (a group
    -- at its cap is in no rotation that would drop it).
    if job[2] ~= '' and group_waiting(job[2]) == 0 then redis.call('SREM', groups_key, job[2]) end
  elseif job[1] == 'delayed' then
    redis.call('ZREM', delayed_key, id)
  elseif job[1] == 'waiting-children' then
    redis.call('ZREM', base .. 'wc', id)
    local kids = base .. 'kids:' .. id
    local outcomes = redis.call('HGETALL', kids)
    for i = 1, #outcomes, 2 do
      if outcomes[i + 1] == '-' then
        local child_base, child = string.match(outcomes[i], '^(%S+) (%S+)$')
        redis.call('RPUSH', child_base .. 'inbox', 'x ' .. child)
        redis.call('ZADD', child_base .. 'mark', '0', 'w')
      end
    end
    redis.call('DEL', kids)
  elseif job[1] == 'active' then
    redis.call('HSET', key, 'cx', '1')
    return 'requested'
  else
    return job[1] or 'missing'
  end
  emit('cancelled', id)
  forget(id, key)
  return 'cancelled'
end

-- Reads the notes other queues' scripts left in this queue's inbox (see
-- `tell_parent` and flow.lua): `r <id>` releases a flow job whose children
-- all finished (a leaf at once) to wait, or to its delay; `f <id> <error>`
-- dead-letters a parent whose child failed; `x <id>` cancels a child of a
-- cancelled parent. A note for a job no longer waiting on its children is
-- dropped.
local function take_inbox()
  local notes = redis.call('LPOP', base .. 'inbox', '1000')
  if not notes then return end
  for _, note in ipairs(notes) do
    local kind, id, rest = string.match(note, '^(%a) (%S+) ?(.*)$')
    local key = job_key(id)
    if kind == 'x' then
      cancel_job(id)
    else
      local job = redis.call('HMGET', key, 's', 'pn', 'g', 'sc', 'dl')
      if job[1] == 'waiting-children' and (kind == 'f' or tonumber(job[2] or '0') <= 0) then
        redis.call('ZREM', base .. 'wc', id)
        redis.call('PEXPIRE', base .. 'kids:' .. id, KIDS_KEPT_MS)
        if kind == 'f' then
          make_dead(id, key, rest)
        else
          local delay = tonumber(job[5] or '0')
          if delay > 0 then
            local ready = int(now + delay)
            redis.call('HSET', key, 's', 'delayed', 'rt', ready)
            redis.call('ZADD', delayed_key, ready, id)
          else
            make_waiting(id, key, job[3] or '', job[4], false)
          end
          emit('released', id)
          wake()
        end
      end
    end
  end
end

-- Named groups sitting out of the fetch rotation until a time: held by a
-- handler, or at the group rate limit (see fetch.lua).
local parked_key = base .. 'parked'

-- How many jobs started within the last `per` ms by the rate limit's log
-- (`log`: '<ms> <jobs>' per fetch that started any, oldest first), given
-- `started`, the sum of the log's jobs (meta `rlc`): drops the fetches that
-- left the window and answers what is left of the sum. A call does a
-- bounded amount of work: a log whose newest entry left the window goes
-- whole, in one command (UNLINK, freed in the background), however long
-- it grew (a queue quiet for longer than its window); otherwise at most
-- RATE_TRIM_MOST entries are popped, and any left over are counted until
-- the next call pops them, which only holds the limit tighter. A server
-- clock that went back leaves later entries behind an older one: they are
-- dropped late, which only counts them longer, or, when the newest is
-- out of the window, as much as the clock went back early.
local RATE_TRIM_MOST = 1000
local function rate_started(log, started, per)
  if started > 0 then
    local newest = redis.call('LINDEX', log, '-1')
    if not newest then return 0 end
    if tonumber(string.match(newest, '^(%d+) ')) <= now - per then
      redis.call('UNLINK', log)
      return 0
    end
  end
  local popped = 0
  while started > 0 and popped < RATE_TRIM_MOST do
    popped = popped + 1
    local head = redis.call('LINDEX', log, '0')
    if not head then return 0 end
    local at, jobs = string.match(head, '^(%d+) (%d+)$')
    if tonumber(at) > now - per then break end
    redis.call('LPOP', log)
    started = started - tonumber(jobs)
  end
  if started < 0 then started = 0 end
  return started
end

-- Parks a group at its rate limit until the oldest start in its window
-- leaves it.
local function park(group, window, per)
  local oldest = redis.call('ZRANGE', window, '0', '0', 'WITHSCORES')
  local back = now + 1
  if oldest[2] then back = tonumber(oldest[2]) + per end
  redis.call('ZADD', parked_key, 'GT', int(back), group)
end

-- Moves delayed and retry-scheduled jobs whose time has come to waiting,
-- after the inbox's notes, and puts parked groups whose time has come back
-- in the rotation. Returns whether the queue had notes or parked groups
-- (when not, it has no parked group now either). `noted`: whether it has
-- either, when the caller knows (false: neither key exists).
local function promote(noted)
  -- One command when the queue has neither notes nor parked groups.
  if noted == nil then noted = redis.call('EXISTS', base .. 'inbox', parked_key) > 0 end
  if noted then
    take_inbox()
    local back = redis.call('ZRANGEBYSCORE', parked_key, '-inf', now_text, 'LIMIT', '0', '1000')
    for _, group in ipairs(back) do
      redis.call('ZREM', parked_key, group)
      if group_waiting(group) > 0 and group_room(group) > 0 then ring(group) end
    end
    if #back > 0 then wake() end
  end
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now_text, 'LIMIT', '0', '1000')
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed_key, id)
    local key = job_key(id)
    local job = redis.call('HMGET', key, 'g', 'sc')
    if job[2] then make_waiting(id, key, job[1] or '', job[2], false) end
  end
  if #due > 0 then wake() end
  return noted
end

-- Returns the jobs whose lease ran out to waiting, or to the dead set past
-- the allowed number of stalls; an active job asked to cancel is dropped.
local function recover()
  local expired = redis.call('ZRANGEBYSCORE', active_key, '-inf', now_text, 'LIMIT', '0', '1000')
  for _, member in ipairs(expired) do
    redis.call('ZREM', active_key, member)
    local id = member_id(member)
    local key = job_key(id)
    local job = redis.call('HMGET', key, 'g', 'sc', 'cx')
    if job[2] then
      job[1] = job[1] or ''
      left_active(job[1])
      local stalls = redis.call('HINCRBY', key, 'st', '1')
      emit('stalled', id)
      if job[3] == '1' then
        emit('cancelled', id)
        forget(id, key)
      elseif stalls > max_stalls then
        make_dead(id, key, 'stalled ' .. stalls .. ' times: its worker stopped renewing the lease')
      else
        make_waiting(id, key, job[1], job[2], true)
      end
    end
  end
  if #expired > 0 then wake() end
end

-- Milliseconds until a delayed job is due or a lease runs out, or -1.
local function next_wake()
  local soonest = -1
  for _, set in ipairs({ delayed_key, active_key }) do
    local first = redis.call('ZRANGE', set, '0', '0', 'WITHSCORES')
    if first[2] then
      local wait = tonumber(first[2]) - now
      if wait < 0 then wait = 0 end
      if soonest < 0 or wait < soonest then soonest = wait end
    end
  end
  return soonest
end
