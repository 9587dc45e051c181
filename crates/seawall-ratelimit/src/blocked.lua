-- The registry of one limiter's blocked keys: a sorted set of keys scored by
-- the millisecond their block ends, on the server's clock, so every instance
-- lists the same blocks. One key per limiter, so it works on Redis Cluster.
--
-- KEYS[1]  the registry
-- ARGV[1]  'add' (a block that only extends a listed one), 'set' (a block
--          that replaces it), 'remove' or 'list'
-- ARGV[2]  the key (add, set, remove)
-- ARGV[3]  add, set: the block's length in ms; list: how many to return
-- ARGV[4]  add, set: how many blocks the registry keeps (those ending last)
--
-- list returns the server's time in ms, then key, end, key, end, ... with
-- the block that ends last first.
local registry = KEYS[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', registry, '-inf', string.format('%d', now))
local op = ARGV[1]
if op == 'add' or op == 'set' then
    local ends = string.format('%d', now + tonumber(ARGV[3]))
    if op == 'add' then
        -- GT: a penalty never shortens a longer block already listed.
        redis.call('ZADD', registry, 'GT', ends, ARGV[2])
    else
        redis.call('ZADD', registry, ends, ARGV[2])
    end
    local excess = redis.call('ZCARD', registry) - tonumber(ARGV[4])
    if excess > 0 then
        redis.call('ZREMRANGEBYRANK', registry, '0', string.format('%d', excess - 1))
    end
    local last = redis.call('ZRANGE', registry, '-1', '-1', 'WITHSCORES')
    redis.call('PEXPIREAT', registry, string.format('%d', tonumber(last[2]) + 1))
    return {}
elseif op == 'remove' then
    redis.call('ZREM', registry, ARGV[2])
    return {}
end
local listed = redis.call('ZRANGE', registry, '+inf', '(' .. now, 'BYSCORE', 'REV',
    'LIMIT', '0', ARGV[3], 'WITHSCORES')
table.insert(listed, 1, tostring(now))
return listed
