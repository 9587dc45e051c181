-- Token and leaky bucket: the level spent and the time it drained to.
-- ARGV[2]  cost, ARGV[3] capacity, ARGV[4] time per unit (µs)
local cost, capacity, unit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
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
