-- Fixed window: the window's index and its count.
-- ARGV[2]  cost, ARGV[3] limit, ARGV[4] window (µs)
local cost, capacity, unit = ARGV[2] + 0, ARGV[3] + 0, ARGV[4] + 0
local i, c = string.match(state, '^(%d+):(%d+)$')
local index, count = (i or 0) + 0, (c or 0) + 0
local current = math.floor(now / unit)
if index ~= current then count = 0 end
if count + cost <= capacity then
  count = count + cost
  if count > 0 then ttl = (current + 1) * unit - now else ttl = 0 end
  value = string.format('%d:%d', current, count)
end
