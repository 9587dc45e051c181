-- Sliding window: the window's index, its count and the previous one's.
-- ARGV[2]  cost, ARGV[3] limit, ARGV[4] window (µs)
local cost, capacity, unit = ARGV[2] + 0, ARGV[3] + 0, ARGV[4] + 0
local i, c, p = string.match(state, '^(%d+):(%d+):(%d+)$')
local index, count, previous = (i or 0) + 0, (c or 0) + 0, (p or 0) + 0
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
  -- Two windows, but never longer than LONGEST_US (algorithm.rs).
  if count > 0 then ttl = math.min(window_end + unit, 3153600000000000)
  elseif previous > 0 then ttl = window_end
  else ttl = 0 end
  value = string.format('%d:%d:%d', this, count, previous)
end
