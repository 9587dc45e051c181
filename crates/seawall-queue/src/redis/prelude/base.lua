-- The prelude: definitions shared by the scripts of a queue, one file per
-- concern under prelude/, joined in the order of `PRELUDE` in mod.rs (each
-- file uses only what the files before it define). KEYS[1] is the queue's
-- meta hash, and
-- every other key is built from ARGV[1], the queue's key prefix: all of them
-- carry the queue's hash tag, so one script touches one Cluster slot.
-- ARGV[2..6] are the queue's settings; a script's own arguments start at 7.
--
-- A script that fails halfway keeps what it wrote before the failure, so
-- every script checks all the arguments it uses before its first write: a
-- bad one ends the script with an error and nothing changed.
--
-- Each script gets only the prelude's definitions that it names, directly or
-- through another kept definition (see lua.rs): so these files hold
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
-- (SET ... PX, INCRBY) refuse later, after the script's first write. So
-- the text is always in that form, and where a script passes the number
-- back to Redis, ARGV[index] is its text. One byte, most arguments (a
-- count, a priority, a zero), is read as the digit it is, without the
-- pattern or `tonumber` (which parses with the C library's `strtod`).
local function whole(index, low, high)
  local raw = ARGV[index]
  local value = nil
  if raw ~= nil and #raw == 1 then
    value = string.byte(raw) - 48
    if value < 0 or value > 9 then value = nil end
  elseif raw ~= nil and #raw <= 16 and string.find(raw, '^%-?[1-9]%d*$') then
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
  if value == nil or #value > longest or not string.find(value, pattern) then
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
  if id == nil or #id > 40 or not (string.find(id, '^%d+%-%x+$') or string.find(id, '^%d+$')) then
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
-- The clock's seconds and microseconds, each parsed once.
local clock_s, clock_us = tonumber(clock[1]), tonumber(clock[2])
local now = clock_s * 1000 + math.floor(clock_us / 1000)
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
-- The score of the first default-priority job a call adds without the
-- order counter: DEFAULT_LEVEL * STRIDE as text (a test in lua.rs checks
-- it), which saves formatting it on most enqueues.
local DEFAULT_SCORE = '3298534883328'

-- Calls `command` on `key` with `values` appended, at most 1,000 at a time
-- (Lua's unpack refuses much past 8,000 values); returns the replies'
-- arrays joined, for commands that answer one value per argument.
local CHUNK = 1000
local function chunked(command, key, values)
  local n = #values
  if n > 0 and n <= CHUNK then
    -- One call, most: its reply as it is (no copy, no table for a number).
    local reply = redis.call(command, key, unpack(values))
    if type(reply) == 'table' then return reply end
    return {}
  end
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
