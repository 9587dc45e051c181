-- GCRA, the leaky queue, and the token and leaky bucket (whose level drains
-- by whole units, so the time it is back to zero is their arrival time):
-- the theoretical arrival time.
-- ARGV[2]  the cost's span: cost × time per unit (µs)
-- ARGV[3]  the tolerance: capacity × time per unit (µs)
local start = math.max(tonumber(state) or 0, now)
backlog = start - now
local tat = start + ARGV[2]
if tat - now <= ARGV[3] + 0 then
  value, ttl = string.format('%d', tat), tat - now
end
