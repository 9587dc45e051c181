-- seawall-ratelimit: leases of a concurrency limiter, one sorted set per key
-- scored by each lease's expiry (µs, the server's TIME).
--
-- KEYS[1]  the key's leases
-- ARGV     op (a acquire, n renew, r release), lease id, max, ttl_us
-- returns  acquire: { 1, in_flight } or { 0, in_flight, µs until the
--          earliest lease expires }; renew: { 1 } or { 0 } when the lease
--          was lost; release: { removed }

local key, op, id = KEYS[1], ARGV[1], ARGV[2]
local max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Numbers go to redis.call as text: Redis formats a Lua number with %.17g,
-- several times the cost of string.format('%d', …).
local ttl_ms = string.format('%d', (ttl + 999) / 1000)
local expires = string.format('%d', now + ttl)

if op == 'r' then
  return { redis.call('ZREM', key, id) }
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
if op == 'n' then
  if not redis.call('ZSCORE', key, id) then return { 0 } end
  redis.call('ZADD', key, 'XX', expires, id)
  redis.call('PEXPIRE', key, ttl_ms)
  return { 1 }
end

local in_flight = redis.call('ZCARD', key)
if in_flight < max then
  redis.call('ZADD', key, expires, id)
  redis.call('PEXPIRE', key, ttl_ms)
  return { 1, in_flight + 1 }
end
local earliest = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
return { 0, in_flight, tonumber(earliest[2]) - now }
