-- seawall-ratelimit: every algorithm, every operation, one script.
--
-- A line-by-line mirror of algorithm.rs (the steps) and store.rs (`decide`):
-- integer microseconds from the server's TIME, never the caller's clock; all
-- values stay below 2^51, so Lua's doubles compute exactly what Rust does.
-- Numbers go to redis.call as text this script formats, as check/head.lua
-- says why.
--
-- One string per key, each expiring once it equals a fresh one (so no
-- hash, and no PEXPIRE beside each write), but for a sliding log's sorted
-- set:
--
-- KEYS[1]      the subject's block: blocked until (µs)
-- KEYS[1 + i]  rule i's state, its numbers joined by ':' (fixed window
--              "index:count", sliding window "index:count:previous", GCRA,
--              leaky queue, token and leaky bucket "tat", the buckets' time
--              their level is back to zero; a sliding log keeps none here);
--              the key names the algorithm, so a rule whose algorithm
--              changed starts afresh
-- KEYS[1 + count + i]  rule i's sorted set, for a sliding log (otherwise
--              unused but passed, so every key is declared): one member per
--              admitted unit, scored by its time and named "<time>:<n>", n
--              counting on from the units in the window (as check/log.lua
--              names them); all keys share a hash tag
-- ARGV         op (c check, p peek, r reset, b block, u unblock), cost,
--              penalty_us (check) or duration_us (block), rule count, a time
--              in µs to use instead of TIME (empty in production: only the
--              crate's differential tests against algorithm.rs set it), then
--              per rule: algorithm code, capacity, step_us
-- returns      { blocked_for_us, then per rule: allowed, remaining,
--              reset_after_us, retry_after_us, wait_us }

local block = KEYS[1]
local op = ARGV[1]
local cost = tonumber(ARGV[2])
local extra = tonumber(ARGV[3])
local count = tonumber(ARGV[4])

local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function fdiv(a, b) return math.floor(a / b) end
local function cdiv(a, b) return math.floor((a + b - 1) / b) end

-- The fields each algorithm keeps, in the order its state string holds them.
local layouts = {
  { 'i', 'c' }, {}, { 'i', 'c', 'p' }, { 't' }, { 't' }, { 't' }, { 't' },
}
-- Every state this call may read, and the block, come in one MGET; writes
-- update the decoded copy, so a later read in the same call sees them, and
-- reach Redis once, at the end.
local rules = {}
-- The algorithms this call runs: only their functions are built below.
local uses = {}
for i = 1, count do
  local base = 5 + (i - 1) * 3
  local code = tonumber(ARGV[base + 1])
  if not code or code < 1 or code > 7 then
    return redis.error_reply('unknown algorithm code ' .. tostring(ARGV[base + 1]))
  end
  rules[i] = {
    code = code, key = KEYS[1 + i], log = KEYS[1 + count + i], fields = {},
    capacity = tonumber(ARGV[base + 2]), step = tonumber(ARGV[base + 3]),
  }
  uses[code] = true
end
local read = redis.call('MGET', unpack(KEYS, 1, 1 + count))
local blocked_until = tonumber(read[1]) or 0
for i = 1, count do
  local rule, k = rules[i], 1
  local layout = layouts[rule.code]
  for number in string.gmatch(read[1 + i] or '', '%d+') do
    if k > #layout then break end
    rule.fields[layout[k]] = tonumber(number)
    k = k + 1
  end
  for f = 1, #layout do
    rule.fields[layout[f]] = rule.fields[layout[f]] or 0
  end
end

local function get(rule, f) return rule.fields[f] end
local function put(rule, values)
  for f, v in pairs(values) do rule.fields[f] = v end
  rule.dirty = true
end

local fixed_window, weighted_previous, sliding_window_retry, sliding_window
local sliding_log, tat_based

local function decided(allowed, remaining, reset_after, retry_after)
  local retry = 0
  if not allowed then retry = math.max(retry_after, 1) end
  return { allowed = allowed, remaining = remaining, reset_after = reset_after,
           retry_after = retry, wait = 0, ttl = reset_after }
end

if uses[1] then
  fixed_window = function(rule, c, commit)
    local window, capacity = rule.step, rule.capacity
    local current = fdiv(now, window)
    local index, n = get(rule, 'i'), get(rule, 'c')
    if index ~= current then index = current; n = 0 end
    local allowed = n + c <= capacity
    local used = n
    if allowed then used = n + c end
    if allowed and commit then put(rule, { i = index, c = used }) end
    local until_next = (current + 1) * window - now
    local reset_after = 0
    if used > 0 then reset_after = until_next end
    return decided(allowed, capacity - math.min(used, capacity), reset_after, until_next)
  end
end

if uses[3] then
  weighted_previous = function(previous, window, elapsed)
    local window_ms = cdiv(window, 1000)
    local left_ms = math.min(cdiv(window - elapsed, 1000), window_ms)
    return cdiv(previous * left_ms, window_ms)
  end

  sliding_window_retry = function(capacity, window, previous, current, elapsed, c)
    local function first_fit(weighted, room, from)
      if weighted_previous(weighted, window, from) <= room then return from end
      if weighted_previous(weighted, window, window - 1) > room then return nil end
      local low, high = from, window - 1
      while low + 1 < high do
        local middle = low + fdiv(high - low, 2)
        if weighted_previous(weighted, window, middle) <= room then high = middle else low = middle end
      end
      return high
    end
    local room = capacity - (current + c)
    if room >= 0 then
      local at = first_fit(previous, room, elapsed)
      if at then return at - elapsed end
    end
    local to_next = window - elapsed
    local at = first_fit(current, capacity - c, 0)
    if at then return to_next + at end
    return to_next + window
  end

  sliding_window = function(rule, c, commit)
    local window, capacity = rule.step, rule.capacity
    local this = fdiv(now, window)
    local index, current, previous = get(rule, 'i'), get(rule, 'c'), get(rule, 'p')
    if index ~= this then
      if index + 1 == this then previous = current else previous = 0 end
      current = 0
      index = this
    end
    local elapsed = now - this * window
    local used = weighted_previous(previous, window, elapsed) + current
    local allowed = used + c <= capacity
    local used_after, current_after = used, current
    if allowed then used_after = used + c; current_after = current + c end
    if allowed and commit then put(rule, { i = index, c = current_after, p = previous }) end
    local window_end = (this + 1) * window - now
    local reset_after = 0
    -- Two windows, but never longer than LONGEST_US (algorithm.rs).
    if current_after > 0 then reset_after = math.min(window_end + window, 3153600000000000)
    elseif previous > 0 then reset_after = window_end end
    local retry_after = 0
    if not allowed then
      retry_after = sliding_window_retry(capacity, window, previous, current, elapsed, c)
    end
    return decided(allowed, capacity - math.min(used_after, capacity), reset_after, retry_after)
  end
end

-- One sorted-set member per admitted unit, scored by its time and named by
-- the time and a number counting on from the units in the window; a name
-- already taken (the clock stepped back) is passed over.
if uses[2] then
  sliding_log = function(rule, c, commit)
    local window, capacity, log = rule.step, rule.capacity, rule.log
    redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%d', now - window))
    local units = redis.call('ZCARD', log)
    local allowed = units + c <= capacity
    if allowed and commit and c > 0 then
      -- In chunks of 1,000 members: unpack hands Lua's C stack at most
      -- 8,000 values (LUAI_MAXCSTACK).
      local at, added, n = string.format('%d', now), 0, units
      while n < units + c do
        local args, last = {}, math.min(n + 1000, units + c)
        for m = n + 1, last do
          args[#args + 1] = at
          args[#args + 1] = string.format('%d:%d', now, m)
        end
        added = added + redis.call('ZADD', log, unpack(args))
        n = last
      end
      n = units + c
      while added < c do
        n = n + 1
        added = added + redis.call('ZADD', log, at, string.format('%d:%d', now, n))
      end
      rule.logged = true
      units = units + c
    end
    local used = units
    if allowed and not commit then used = units + c end
    local reset_after = 0
    if allowed and c > 0 then
      reset_after = window
    else
      local newest = redis.call('ZRANGE', log, '-1', '-1', 'WITHSCORES')
      if newest[2] then reset_after = tonumber(newest[2]) + window - now end
    end
    local retry_after = 0
    if not allowed then
      local rank = string.format('%d', units + c - capacity - 1)
      local oldest = redis.call('ZRANGE', log, rank, rank, 'WITHSCORES')
      retry_after = tonumber(oldest[2]) + window - now
    end
    return decided(allowed, capacity - math.min(used, capacity), reset_after, retry_after)
  end
end

-- GCRA, and the leaky bucket as a queue (the same, with the admitted request
-- told how long to wait for its turn). The token and the leaky bucket are
-- GCRA too: their level drains by whole units, so the time it is back to
-- zero decides and answers as the arrival time does (algorithm.rs `gcra`).
if uses[4] or uses[5] or uses[6] or uses[7] then
  tat_based = function(rule, c, commit, queue)
    local unit = rule.step
    local tolerance = rule.capacity * unit
    local start = math.max(get(rule, 't'), now)
    local next_tat = start + c * unit
    local allowed = next_tat - now <= tolerance
    if allowed and commit then put(rule, { t = next_tat }) end
    local horizon = start
    if allowed then horizon = next_tat end
    local reset_after = horizon - now
    local remaining = fdiv(math.max(tolerance - reset_after, 0), unit)
    local step = decided(allowed, remaining, reset_after, next_tat - now - math.min(tolerance, next_tat - now))
    if allowed and queue then step.wait = start - now end
    return step
  end
end

local function step(rule, c, commit)
  local code = rule.code
  if code == 1 then return fixed_window(rule, c, commit)
  elseif code == 2 then return sliding_log(rule, c, commit)
  elseif code == 3 then return sliding_window(rule, c, commit)
  elseif code == 6 then return tat_based(rule, c, commit, true)
  end
  return tat_based(rule, c, commit, false)
end

local function run(c, commit)
  local steps = {}
  for i = 1, count do steps[i] = step(rules[i], c, commit) end
  return steps
end

local function peek()
  local steps = {}
  for i = 1, count do
    local one = step(rules[i], 1, false)
    local standing = step(rules[i], 0, false)
    standing.allowed = one.allowed
    standing.retry_after = one.retry_after
    steps[i] = standing
  end
  return steps
end

local function forget()
  redis.call('DEL', unpack(KEYS))
  for i = 1, count do
    for f in pairs(rules[i].fields) do rules[i].fields[f] = 0 end
    rules[i].dirty = false
    rules[i].logged = false
  end
end

local function set_block(duration)
  redis.call('SET', block, string.format('%d', now + duration), 'PX', string.format('%d', cdiv(duration, 1000)))
end

local blocked_for = math.max(blocked_until - now, 0)
local steps
if op == 'r' then
  forget()
  blocked_for = 0
  steps = peek()
elseif op == 'u' then
  redis.call('DEL', block)
  blocked_for = 0
  steps = peek()
elseif op == 'b' then
  set_block(extra)
  blocked_for = extra
  steps = peek()
elseif op == 'p' then
  steps = peek()
else
  if blocked_for == 0 and count == 1 then
    -- One rule consumes only when it admits: no trial run needed.
    steps = run(cost, true)
  else
    steps = run(cost, false)
    local all = blocked_for == 0
    for i = 1, count do all = all and steps[i].allowed end
    if all then steps = run(cost, true) end
  end
  local admitted = blocked_for == 0
  for i = 1, count do admitted = admitted and steps[i].allowed end
  if not admitted and blocked_for == 0 and extra > 0 then
    set_block(extra)
    blocked_for = extra
  end
end

-- Keep each state exactly as long as it differs from a fresh one. A state
-- this call did not write stays as it was, and so does the time it stays.
-- (A sliding log's expired members are removed by every step, which changes
-- nothing a later step could tell apart; a log that gained members stays as
-- long as they do.)
local ttl = blocked_for
for i = 1, count do ttl = math.max(ttl, steps[i].ttl) end
if ttl > 0 then
  for i = 1, count do
    local rule, keep = rules[i], steps[i].ttl
    if rule.dirty then
      if keep > 0 then
        local layout, numbers = layouts[rule.code], {}
        for f = 1, #layout do numbers[f] = string.format('%d', rule.fields[layout[f]]) end
        redis.call('SET', rule.key, table.concat(numbers, ':'), 'PX', string.format('%d', math.max(cdiv(keep, 1000), 1)))
      else
        redis.call('DEL', rule.key)
      end
    end
    if rule.logged then
      redis.call('PEXPIRE', rule.log, string.format('%d', math.max(cdiv(keep, 1000), 1)))
    end
  end
elseif op ~= 'p' then
  forget()
end

local reply = { blocked_for }
for i = 1, count do
  local s = steps[i]
  local allowed = 0
  if s.allowed then allowed = 1 end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = s.remaining
  reply[#reply + 1] = s.reset_after
  reply[#reply + 1] = s.retry_after
  reply[#reply + 1] = s.wait
end
return reply
