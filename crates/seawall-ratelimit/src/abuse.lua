-- The abuse watch's evidence, shared by every instance: one hash per
-- interval, where each instance adds what it counted for each key and route
-- in it, and from which each reads the interval before, merged.
--
-- KEYS[1]  the hash of the interval that just closed (added to)
-- KEYS[2]  the hash of the interval before it (read)
-- ARGV[1]  how long a hash is kept, in ms
-- ARGV[2..] four per key: its field name, its requests, its errors, its
--          paths' HyperLogLog registers (bytes; empty for a route)
--
-- Fields: n<name> requests, e<name> errors, h<name> registers (merged by
-- taking each register's greatest value). Answers KEYS[2]'s fields and
-- values. Its work is bounded: at most 2,048 keys per call (refused
-- beyond), 64 registers each, and the hash it reads holds what every
-- instance sent for one interval.
local added, before = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local count = (#ARGV - 1) / 4
if count ~= math.floor(count) or count > 2048 or not ttl or ttl < 1 then
    return redis.error_reply('ERR abuse: bad arguments')
end
for i = 0, count - 1 do
    local at = 2 + i * 4
    local name = ARGV[at]
    redis.call('HINCRBY', added, 'n' .. name, ARGV[at + 1])
    if ARGV[at + 2] ~= '0' then
        redis.call('HINCRBY', added, 'e' .. name, ARGV[at + 2])
    end
    local registers = ARGV[at + 3]
    if #registers > 0 then
        local field = 'h' .. name
        local held = redis.call('HGET', added, field)
        if held and #held == #registers then
            local merged = {}
            for r = 1, #registers do
                local a, b = string.byte(held, r), string.byte(registers, r)
                merged[r] = string.char(a > b and a or b)
            end
            registers = table.concat(merged)
        end
        redis.call('HSET', added, field, registers)
    end
end
if count > 0 then
    redis.call('PEXPIRE', added, ttl)
end
return redis.call('HGETALL', before)
