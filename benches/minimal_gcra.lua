-- A minimal GCRA check, the floor seawall's Redis checks are measured
-- against: the server's TIME, one GET, one SET … PX, an integer answer.
-- KEYS[1] the arrival time; ARGV[1] µs per unit, ARGV[2] the burst.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local step, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local new_tat = tat + step
if new_tat - now > burst * step then return 0 end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return 1
