-- A pool of numbered units (a campaign's coupons, a sale's stock) handed out
-- one at a time, at most `per_user` to a user, inside a time window, with
-- idempotency keys. Every key of a pool shares one hash tag, so on a Redis
-- Cluster the whole decision is one script on one node.
--
-- KEYS[1] state  hash: quantity, per_user, starts, ends, next (the next unit
--                never handed out), expires (Unix ms), settled (units the
--                rows held when the pool was loaded: granted before it)
-- KEYS[2] users  hash: user id -> units held
-- KEYS[3] grants hash: grant id -> "unit:user:nth:at"
-- KEYS[4] idem   hash: idempotency key -> grant id
-- KEYS[5] free   list: units given back, handed out again first
--
-- ARGV[1] is the operation; every reply is an array of strings.
local state, users, grants, idem, free = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]

local function expire_new(key, at)
    if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIREAT', key, at)
    end
end

if op == 'take' then
    -- ARGV: now, user, grant id, idempotency key ('' for none)
    local now, user, id, key = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
    local fields = redis.call('HMGET', state, 'quantity', 'per_user', 'starts', 'ends', 'next', 'expires')
    if not fields[1] then
        return {'unloaded'}
    end
    if key ~= '' then
        local first = redis.call('HGET', idem, key)
        if first then
            local grant = redis.call('HGET', grants, first)
            return {'replay', first, grant or ''}
        end
    end
    local quantity, per_user = tonumber(fields[1]), tonumber(fields[2])
    if now < tonumber(fields[3]) then
        return {'early'}
    end
    if now >= tonumber(fields[4]) then
        return {'ended'}
    end
    local held = tonumber(redis.call('HGET', users, user) or '0')
    if held >= per_user then
        return {'limit', tostring(held)}
    end
    local unit = redis.call('LPOP', free)
    if not unit then
        local next = tonumber(fields[5])
        if next > quantity then
            return {'gone'}
        end
        unit = tostring(next)
        redis.call('HSET', state, 'next', next + 1)
    end
    local nth = redis.call('HINCRBY', users, user, 1)
    redis.call('HSET', grants, id, unit .. ':' .. user .. ':' .. nth .. ':' .. ARGV[2])
    local expires = fields[6]
    expire_new(users, expires)
    expire_new(grants, expires)
    if key ~= '' then
        redis.call('HSET', idem, key, id)
        expire_new(idem, expires)
    end
    return {'taken', unit, tostring(nth)}
elseif op == 'release' then
    -- ARGV: grant id, idempotency key ('' for none), free ('1': the unit
    -- goes back to be handed out again; '0': the database holds it). Undoes
    -- a grant whose write failed; the user may take again.
    local id, key = ARGV[2], ARGV[3]
    local grant = redis.call('HGET', grants, id)
    if not grant then
        return {'0'}
    end
    local unit, user = string.match(grant, '^(%d+):(%d+):')
    redis.call('HDEL', grants, id)
    if redis.call('HINCRBY', users, user, -1) <= 0 then
        redis.call('HDEL', users, user)
    end
    if ARGV[4] == '1' then
        redis.call('RPUSH', free, unit)
        expire_new(free, redis.call('HGET', state, 'expires') or '0')
    end
    if key ~= '' and redis.call('HGET', idem, key) == id then
        redis.call('HDEL', idem, key)
    end
    return {'1'}
elseif op == 'load' then
    -- ARGV: quantity, per_user, starts, ends, next, expires, settled. Does
    -- nothing if the pool is loaded: the first loader wins, later ones agree.
    if redis.call('EXISTS', state) == 1 then
        return {'0'}
    end
    redis.call('HSET', state, 'quantity', ARGV[2], 'per_user', ARGV[3], 'starts', ARGV[4],
        'ends', ARGV[5], 'next', ARGV[6], 'expires', ARGV[7], 'settled', ARGV[8])
    redis.call('PEXPIREAT', state, ARGV[7])
    return {'1'}
elseif op == 'holders' then
    -- ARGV: expires, then user id and units held, pairs. Before a reload
    -- only: does nothing once the pool is loaded.
    if redis.call('EXISTS', state) == 1 then
        return {'0'}
    end
    for i = 3, #ARGV, 2 do
        redis.call('HSET', users, ARGV[i], ARGV[i + 1])
    end
    redis.call('PEXPIREAT', users, ARGV[2])
    return {'1'}
elseif op == 'hold' then
    -- ARGV: user id, units the database says they hold. Raises the store's
    -- count to it (the store lost writes).
    local held = tonumber(redis.call('HGET', users, ARGV[2]) or '0')
    if held < tonumber(ARGV[3]) then
        redis.call('HSET', users, ARGV[2], ARGV[3])
    end
    return {'1'}
elseif op == 'grant' then
    -- ARGV: grant id.
    local grant = redis.call('HGET', grants, ARGV[2])
    if grant then
        return {'found', grant}
    end
    return {'none'}
elseif op == 'resync' then
    -- ARGV: the least next unit the database allows (its highest + 1).
    local next = tonumber(redis.call('HGET', state, 'next') or '0')
    if next > 0 and next < tonumber(ARGV[2]) then
        redis.call('HSET', state, 'next', ARGV[2])
        return {'1'}
    end
    return {'0'}
elseif op == 'status' then
    local fields = redis.call('HMGET', state, 'quantity', 'next', 'settled')
    if not fields[1] then
        return {'unloaded'}
    end
    local granted = redis.call('HLEN', grants) + tonumber(fields[3] or '0')
    return {'loaded', fields[1], fields[2], tostring(redis.call('LLEN', free)),
        tostring(granted), tostring(redis.call('HLEN', users))}
end
return redis.error_reply('unknown pool operation ' .. tostring(op))
