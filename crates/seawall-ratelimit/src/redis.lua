-- seawall-ratelimit: every algorithm, every operation, one script.
--
-- A line-by-line mirror of algorithm.rs (the steps) and store.rs (`decide`):
-- integer microseconds from the server's TIME, never the caller's clock; all
-- values stay below 2^51, so Lua's doubles compute exactly what Rust does.
--
-- KEYS[1]      the subject's hash: one field group per rule, and `!b` (blocked
--              until, µs)
-- KEYS[1 + i]  rule i's sorted set, for a sliding log (otherwise unused but
--              passed, so every key is declared); all keys share a hash tag
-- ARGV         op (c check, p peek, r reset, b block, u unblock), cost,
--              penalty_us (check) or duration_us (block), rule count, a time
--              in µs to use instead of TIME (empty in production: only the
--              crate's differential tests against algorithm.rs set it), then
--              per rule: name, algorithm code, capacity, step_us
-- returns      { blocked_for_us, then per rule: allowed, remaining,
--              reset_after_us, retry_after_us, wait_us }

local hash = KEYS[1]
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

-- Field names: "<name>|<code>|<field>". Every field this call may read, and
-- the block, come in one HMGET; writes update that copy, so a later read in
-- the same call sees them.
local rules = {}
local wanted = { '!b' }
-- The algorithms this call runs: only their functions are built below.
local uses = {}
for i = 1, count do
  local base = 5 + (i - 1) * 4
  local code = tonumber(ARGV[base + 2])
  if not code or code < 1 or code > 7 then
    return redis.error_reply('unknown algorithm code ' .. tostring(ARGV[base + 2]))
  end
  local prefix = ARGV[base + 1] .. '|' .. code .. '|'
  rules[i] = {
    prefix = prefix, code = code,
    capacity = tonumber(ARGV[base + 3]), step = tonumber(ARGV[base + 4]),
    log = KEYS[1 + i],
  }
  uses[code] = true
  -- The hash fields each algorithm keeps.
  local n = #wanted
  if code == 1 or code == 3 then
    wanted[n + 1] = prefix .. 'i'
    wanted[n + 2] = prefix .. 'c'
    if code == 3 then wanted[n + 3] = prefix .. 'p' end
  elseif code == 2 then
    wanted[n + 1] = prefix .. 'n'
  elseif code == 4 or code == 5 then
    wanted[n + 1] = prefix .. 'l'
    wanted[n + 2] = prefix .. 's'
  else
    wanted[n + 1] = prefix .. 't'
  end
end
local stored = {}
local read = redis.call('HMGET', hash, unpack(wanted))
for k = 1, #wanted do stored[wanted[k]] = tonumber(read[k]) or 0 end

-- Whether this call wrote the subject's keys (then their expiry is set anew;
-- otherwise the state, and so the time it stays, is unchanged).
local written = false
local function get(rule, f) return stored[rule.prefix .. f] end
local function put(rule, values)
  local args = {}
  for f, v in pairs(values) do
    local name = rule.prefix .. f
    stored[name] = v
    args[#args + 1] = name
    args[#args + 1] = string.format('%d', v)
  end
  redis.call('HSET', hash, unpack(args))
  written = true
end

local fixed_window, weighted_previous, sliding_window_retry, sliding_window
local sliding_log, bucket, tat_based

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
    if current_after > 0 then reset_after = window_end + window
    elseif previous > 0 then reset_after = window_end end
    local retry_after = 0
    if not allowed then
      retry_after = sliding_window_retry(capacity, window, previous, current, elapsed, c)
    end
    return decided(allowed, capacity - math.min(used_after, capacity), reset_after, retry_after)
  end
end

-- One sorted-set member per admitted unit, scored by its time; members are
-- numbered by a counter in the hash, so they are unique.
if uses[2] then
  sliding_log = function(rule, c, commit)
    local window, capacity, log = rule.step, rule.capacity, rule.log
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    local units = redis.call('ZCARD', log)
    local allowed = units + c <= capacity
    if allowed and commit and c > 0 then
      local last = get(rule, 'n') + c
      put(rule, { n = last })
      local args = {}
      for k = last - c + 1, last do
        args[#args + 1] = now
        args[#args + 1] = k
      end
      redis.call('ZADD', log, unpack(args))
      units = units + c
    end
    local used = units
    if allowed and not commit then used = units + c end
    local reset_after = 0
    if allowed and c > 0 then
      reset_after = window
    else
      local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
      if newest[2] then reset_after = tonumber(newest[2]) + window - now end
    end
    local retry_after = 0
    if not allowed then
      local oldest = redis.call('ZRANGE', log, units + c - capacity - 1, units + c - capacity - 1, 'WITHSCORES')
      retry_after = tonumber(oldest[2]) + window - now
    end
    return decided(allowed, capacity - math.min(used, capacity), reset_after, retry_after)
  end
end

-- The token bucket and the leaky bucket (meter): the level is what is spent,
-- draining one unit per step.
if uses[4] or uses[5] then
  bucket = function(rule, c, commit)
    local unit, capacity = rule.step, rule.capacity
    local level, since = get(rule, 'l'), get(rule, 's')
    local at = math.max(now, since)
    local drained = fdiv(at - since, unit)
    if drained >= level then
      level = 0
      since = at
    else
      level = level - drained
      since = since + drained * unit
    end
    local allowed = level + c <= capacity
    local level_after = level
    if allowed then level_after = level + c end
    if allowed and commit then put(rule, { l = level_after, s = since }) end
    local progress = 0
    if level > 0 then progress = at - since end
    local reset_after = math.max(level_after * unit - progress, 0)
    local excess = level + c - math.min(capacity, level + c)
    local retry_after = math.max(excess * unit - progress, 0)
    return decided(allowed, capacity - math.min(level_after, capacity), reset_after, retry_after)
  end
end

-- GCRA, and the leaky bucket as a queue (the same, with the admitted request
-- told how long to wait for its turn).
if uses[6] or uses[7] then
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
    local remaining = fdiv(tolerance - reset_after, unit)
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
  elseif code == 4 or code == 5 then return bucket(rule, c, commit)
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
  local keys = { hash }
  for i = 1, count do keys[#keys + 1] = rules[i].log end
  redis.call('DEL', unpack(keys))
  for name in pairs(stored) do stored[name] = 0 end
end

local blocked_for = math.max(stored['!b'] - now, 0)
local steps
if op == 'r' then
  forget()
  blocked_for = 0
  steps = peek()
elseif op == 'u' then
  redis.call('HDEL', hash, '!b')
  stored['!b'] = 0
  written = true
  blocked_for = 0
  steps = peek()
elseif op == 'b' then
  redis.call('HSET', hash, '!b', string.format('%d', now + extra))
  written = true
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
    redis.call('HSET', hash, '!b', string.format('%d', now + extra))
    written = true
    blocked_for = extra
  end
end

-- Keep the state exactly as long as it differs from a fresh one. A call that
-- wrote nothing left the state, and so the time it stays, as it was. (A
-- sliding log's expired members are removed by every step, which changes
-- nothing a later step could tell apart.) PEXPIRE on a key that does not
-- exist does nothing.
local ttl = blocked_for
for i = 1, count do ttl = math.max(ttl, steps[i].ttl) end
if ttl > 0 then
  if written then
    redis.call('PEXPIRE', hash, cdiv(ttl, 1000))
    for i = 1, count do
      if rules[i].code == 2 then
        redis.call('PEXPIRE', rules[i].log, math.max(cdiv(steps[i].ttl, 1000), 1))
      end
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
