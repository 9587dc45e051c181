-- The worker processes that announced themselves: a hash of id -> report
-- and a sorted set of id -> when (ms, the server's clock). Both keys share
-- one hash tag, so this runs on Redis Cluster.
--
-- KEYS[1] the reports, KEYS[2] the times
-- ARGV[1] 'announce', 'withdraw' or 'list'; ARGV[2] the id; ARGV[3] the
-- report (announce); ARGV[4] ms after which a silent process is forgotten
--
-- list returns the server's time, then report, when, report, when, ...
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local op = ARGV[1]
if op == 'announce' then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now - tonumber(ARGV[4])))
    for _, id in ipairs(gone) do
        redis.call('HDEL', KEYS[1], id)
        redis.call('ZREM', KEYS[2], id)
    end
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
    redis.call('ZADD', KEYS[2], string.format('%d', now), ARGV[2])
    return {}
elseif op == 'withdraw' then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
    return {}
end
local listed = { tostring(now) }
local ids = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #ids, 2 do
    local report = redis.call('HGET', KEYS[1], ids[i])
    if report then
        listed[#listed + 1] = report
        listed[#listed + 1] = ids[i + 1]
    end
end
return listed
