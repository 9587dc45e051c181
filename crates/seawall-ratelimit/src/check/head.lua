-- seawall-ratelimit: a check of one rule, the common case, in as little
-- server time as it can take. Each algorithm has a script of its own: this
-- head, the algorithm's body (check/<algorithm>.lua) and check/tail.lua,
-- joined at compile time (redis.rs), so a call runs no other algorithm's
-- code and takes only its own arguments; the sliding log's, whose state is
-- a sorted set, is check/log.lua alone. The Rust side puts the line that
-- reads the time argument first: `local now = tonumber(ARGV[n])`, n being
-- one past the body's arguments.
--
-- The script only decides whether to consume and writes the new state; it
-- answers with what it read, and the Rust side computes the decision's
-- numbers from that with the same steps as the memory store (store.rs
-- `check_one`). So the numbers are exact, and the server does no work the
-- answer does not need. Integer microseconds from the server's TIME; all
-- values stay below 2^51 (Limit's validation), so Lua's doubles compute
-- exactly what Rust does.
--
-- Two habits keep Lua's conversions off the bill. A number goes to
-- redis.call as a string the script formatted (`string.format('%d', …)`):
-- handed a Lua number, Redis prints it with `%.17g`, which costs several
-- times as much. An argument known to be a number is read with `+ 0`,
-- which parses the string once, where Lua 5.1's `tonumber` parses it twice.
--
-- KEYS[1]   the subject's block: blocked until (µs), expiring with it
-- KEYS[2]   the rule's state (layout in redis.lua), expiring once it equals
--           a fresh one
-- ARGV[1]   penalty_us: how long a rejection blocks the subject (0: not)
-- ARGV[2..] the body's own; then a time in µs to use instead of TIME (only
--           the crate's differential tests give it)
-- returns   "<now> <blocked until> <state as read>"; for tat.lua's
--           algorithms when not blocked, only how far the arrival time
--           stood ahead of now (µs, an integer): their steps depend on
--           nothing else, and an integer is the cheapest answer Redis sends
--
-- Two GETs, not one MGET: a table reply costs the server more than a
-- second call does.

if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local blocked = tonumber(redis.call('GET', KEYS[1])) or 0
local state = redis.call('GET', KEYS[2]) or ''
if blocked > now then
  return string.format('%d %d ', now, blocked) .. state
end

-- The body sets the state to write and how long it differs from a fresh
-- one (none when the check is rejected), and for tat.lua's algorithms the
-- backlog to answer with.
local value, ttl, backlog
