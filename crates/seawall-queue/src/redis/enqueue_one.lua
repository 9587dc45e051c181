-- One job at the default priority, in the default group, with no
-- idempotency key and no delay: the call `Queues::enqueue` makes most.
-- It is enqueue.lua's path for that job written out, without the tables,
-- loops and per-job checks a call of many jobs needs, which cost a call
-- of one job a quarter of its server time. It writes, answers and
-- replays as enqueue.lua does for the same job: the same keys, fields,
-- event and answer (`edges::a_plain_job_is_stored_alike_by_both_enqueues`
-- holds the two to that).
--
-- Its arguments are fewer than a prelude call's: ARGV[2] is the events'
-- setting, and the others a queue's settings would take are this call's
-- own (none of their definitions is kept here, see lua.rs's tests):
-- ARGV[3]: the request id; ARGV[4]: the wire version of the id (see
-- enqueue.lua); ARGV[5]: the payload; ARGV[6]: max attempts; ARGV[7]:
-- the backoff; ARGV[8]: the timeout in ms (`0` for none); ARGV[9]: the
-- trace context and ARGV[10] the context, each sent only when it or one
-- after it is not empty. Returns the job's id and 1, as enqueue.lua does.
local request = ARGV[3]
if request == nil or #request > 32 or not string.find(request, REQUEST) then
  refuse('argument 3 is not a request id')
end
local wire = whole(4, 1, 2)
if #ARGV < 8 or #ARGV > 10 then refuse('expected 8 to 10 arguments') end
local payload = ARGV[5]
if #payload > MAX_PAYLOAD then refuse('a payload is over ' .. MAX_PAYLOAD .. ' bytes') end
-- Max attempts and the timeout as `whole` reads them: one digit, the
-- most often, is checked in place.
local attempts, timeout = ARGV[6], ARGV[8]
if #attempts ~= 1 or attempts == '0' or string.byte(attempts) < 48 or string.byte(attempts) > 57 then
  whole(6, 1, 4294967295)
end
if timeout ~= '0' then whole(8, 0, MAX_MS) end
if #ARGV[7] > 256 then refuse('a backoff is over 256 bytes') end
local trace, context = ARGV[9] or '', ARGV[10] or ''
if #trace > MAX_TRACE then refuse('a trace context is over ' .. MAX_TRACE .. ' bytes') end
if #context > MAX_CONTEXT then refuse('a context is over ' .. MAX_CONTEXT .. ' bytes') end

local epoch = id_epoch(wire)
local id = claim_sequence(base) .. epoch
local out = { id, '1' }
local replayed = answer_once(request, out)
if replayed then return replayed end
if timeout == '0' and trace == '' and context == '' then
  redis.call('HSET', base .. 'j:' .. id, 'd', payload, 'p', '3', 'ma', attempts, 'bo', ARGV[7],
    'sc', DEFAULT_SCORE, 'ct', now_text, 's', 'waiting', 'rt', now_text)
else
  local fields = { 'd', payload, 'p', '3', 'ma', attempts, 'bo', ARGV[7],
    'sc', DEFAULT_SCORE, 'ct', now_text, 's', 'waiting', 'rt', now_text }
  if timeout ~= '0' then fields[#fields + 1] = 'to'; fields[#fields + 1] = timeout end
  if trace ~= '' then fields[#fields + 1] = 'tc'; fields[#fields + 1] = trace end
  if context ~= '' then fields[#fields + 1] = 'jc'; fields[#fields + 1] = context end
  redis.call('HSET', base .. 'j:' .. id, unpack(fields))
end
-- The line's first job puts the default group in the fetch rotation
-- (`ring`) and wakes a worker (`wake`); one behind others needs neither
-- (see `line_up`). The event is `emit`'s. (The three are written in place:
-- a function of the prelude is made again on every call.)
if redis.call('RPUSH', base .. 'g:', id) == 1 then
  if redis.call('SADD', ringed_key, '') == 1 then redis.call('RPUSH', ring_key, '') end
  redis.call('ZADD', mark_key, '0', 'w')
end
if events_max > 0 then
  redis.call('XADD', base .. 'ev', 'MAXLEN', '~', ARGV[2], '*', 'e', 'enqueued', 'j', id)
end
redis.call('HINCRBY', meta, 'waiting', '1')
return out
