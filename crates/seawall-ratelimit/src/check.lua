-- seawall-ratelimit: a check of one rule, the common case, in as little
-- server time as it can take.
--
-- The script only decides whether to consume and writes the new state; it
-- answers with what it read, and the Rust side computes the decision's
-- numbers from that with the same steps as the memory store (store.rs
-- `check_one`). So the numbers are exact, and the server does no work the
-- answer does not need. Integer microseconds from the server's TIME; all
-- values stay below 2^51, so Lua's doubles compute exactly what Rust does.
--
-- KEYS[1]   the subject's block: blocked until (µs), expiring with it
-- KEYS[2]   the rule's state (layout in redis.lua), expiring once it equals
--           a fresh one
-- ARGV      algorithm code, cost, penalty_us, capacity, step_us, and a time
--           in µs to use instead of TIME (only the crate's differential
--           tests give it)
-- returns   "<now> <blocked until> <state as read>"; for GCRA and the leaky
--           queue when not blocked, only how far the arrival time stood
--           ahead of now (µs, an integer): their steps depend on nothing
--           else, and an integer is the cheapest answer Redis sends

local now = tonumber(ARGV[6])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local read = redis.call('MGET', KEYS[1], KEYS[2])
local blocked = tonumber(read[1]) or 0
local state = read[2] or ''

local backlog
if blocked <= now then
  local code = ARGV[1]
  local cost, capacity, unit = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
  -- The state to write and how long it differs from a fresh one; none when
  -- the check is rejected.
  local value, ttl
  if code == '7' or code == '6' then
    -- GCRA and the leaky queue: the theoretical arrival time.
    local start = math.max(tonumber(state) or 0, now)
    backlog = start - now
    local tat = start + cost * unit
    if tat - now <= capacity * unit then
      value, ttl = string.format('%d', tat), tat - now
    end
  elseif code == '4' or code == '5' then
    -- Token and leaky bucket: the level spent and the time it drained to.
    local l, s = string.match(state, '^(%d+):(%d+)$')
    local level, since = tonumber(l) or 0, tonumber(s) or 0
    local at = math.max(now, since)
    local drained = math.floor((at - since) / unit)
    if drained >= level then
      level, since = 0, at
    else
      level, since = level - drained, since + drained * unit
    end
    if level + cost <= capacity then
      local progress = 0
      if level > 0 then progress = at - since end
      level = level + cost
      value, ttl = string.format('%d:%d', level, since), level * unit - progress
    end
  elseif code == '1' then
    -- Fixed window: the window's index and its count.
    local i, c = string.match(state, '^(%d+):(%d+)$')
    local index, count = tonumber(i) or 0, tonumber(c) or 0
    local current = math.floor(now / unit)
    if index ~= current then count = 0 end
    if count + cost <= capacity then
      count = count + cost
      if count > 0 then ttl = (current + 1) * unit - now else ttl = 0 end
      value = string.format('%d:%d', current, count)
    end
  elseif code == '3' then
    -- Sliding window: the window's index, its count and the previous one's.
    local i, c, p = string.match(state, '^(%d+):(%d+):(%d+)$')
    local index, count, previous = tonumber(i) or 0, tonumber(c) or 0, tonumber(p) or 0
    local this = math.floor(now / unit)
    if index ~= this then
      if index + 1 == this then previous = count else previous = 0 end
      count = 0
    end
    local elapsed = now - this * unit
    local window_ms = math.floor((unit + 999) / 1000)
    local left_ms = math.min(math.floor((unit - elapsed + 999) / 1000), window_ms)
    local weighted = math.floor((previous * left_ms + window_ms - 1) / window_ms)
    if weighted + count + cost <= capacity then
      count = count + cost
      local window_end = (this + 1) * unit - now
      if count > 0 then ttl = window_end + unit
      elseif previous > 0 then ttl = window_end
      else ttl = 0 end
      value = string.format('%d:%d:%d', this, count, previous)
    end
  else
    return redis.error_reply('no one-rule check for algorithm code ' .. tostring(code))
  end
  if value then
    if ttl > 0 then
      redis.call('SET', KEYS[2], value, 'PX', math.floor((ttl + 999) / 1000))
    end
  else
    local penalty = tonumber(ARGV[3])
    if penalty > 0 then
      redis.call('SET', KEYS[1], string.format('%d', now + penalty),
        'PX', math.floor((penalty + 999) / 1000))
    end
  end
end
if backlog then return backlog end
return string.format('%d %d ', now, blocked) .. state
