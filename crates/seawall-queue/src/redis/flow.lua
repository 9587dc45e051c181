-- Adds a flow, a tree of jobs, all or nothing: a parent runs only once
-- every child of its own finished (see `tell_parent`). KEYS[1] is the
-- root's queue's meta hash and ARGV[1] its key prefix; the other queues'
-- prefixes come with their jobs, and every key of every queue must be in
-- the root's slot (on a Cluster, queues that share a hash tag: the client
-- checks before it sends).
--
-- ARGV[7]: this call's request id; ARGV[8]: the wire version of the ids;
-- ARGV[9]: how many jobs; then 11 fields per job, parents before their
-- children: its queue's key prefix, its queue's name, its parent's place
-- in the call (from 1; 0 for the root, which comes first), what its final
-- failure does to its parent (`fail`, `ignore`, `drop`), then payload,
-- priority, max attempts, backoff, timeout ms, group, delay ms.
-- Returns the jobs' ids in the order of the call. A call re-sent with the
-- same request id answers the first call's ids and adds nothing.
--
-- Every job starts waiting for its children (`waiting-children`, in its
-- queue's `wc` set); a job without children is released at once by a note
-- in its queue's inbox, which its queue's next script reads (a fetch, a
-- count), as it would when its last child finished. A parent's delay
-- counts from its release.
local request = shaped(7, REQUEST, 32, 'a request id')
local wire = whole(8, 1, 2)
local count = whole(9, 1, MAX_FLOW_JOBS)
local FIELDS = 11
if #ARGV ~= 9 + count * FIELDS then refuse('expected ' .. count .. ' jobs of 11 fields') end
local parents, priorities, delays = {}, {}, {}
for k = 1, count do
  local at = 10 + (k - 1) * FIELDS
  shaped(at, '^[^%s]+:$', 300, 'a queue key prefix')
  shaped(at + 1, '^[^%s%c{}]+$', 128, 'a queue name')
  local low = 1
  if k == 1 then low = 0 end
  parents[k] = whole(at + 2, low, k - 1)
  local policy = ARGV[at + 3]
  if policy ~= 'fail' and policy ~= 'ignore' and policy ~= 'drop' then refuse('argument ' .. (at + 3) .. ' is not a failure policy') end
  if #ARGV[at + 4] > MAX_PAYLOAD then refuse('a payload is over ' .. MAX_PAYLOAD .. ' bytes') end
  priorities[k] = whole(at + 5, 0, 7)
  whole(at + 6, 1, 4294967295)
  if #ARGV[at + 7] > 256 then refuse('a backoff is over 256 bytes') end
  whole(at + 8, 0, MAX_MS)
  if #ARGV[at + 9] > MAX_KEY then refuse('a group is over ' .. MAX_KEY .. ' bytes') end
  delays[k] = whole(at + 10, 0, MAX_MS)
end

-- Each queue's ids and order numbers: per queue key prefix, the next
-- sequence and order to give.
local epoch = id_epoch(wire)
local sequences, orders, per_queue = {}, {}, {}
local ids = {}
for k = 1, count do
  local queue_base = ARGV[10 + (k - 1) * FIELDS]
  if not sequences[queue_base] then sequences[queue_base] = first_sequence(queue_base) end
  ids[k] = int(sequences[queue_base]) .. epoch
  sequences[queue_base] = sequences[queue_base] + 1
  per_queue[queue_base] = (per_queue[queue_base] or 0) + 1
end

local replayed = answer_once(request, ids)
if replayed then return replayed end
for queue_base, next_sequence in pairs(sequences) do
  redis.call('SET', queue_base .. 'jid', int(next_sequence - 1))
  -- Waiting jobs of one level run in the order of this counter.
  orders[queue_base] = redis.call('INCRBY', queue_base .. 'id', int(per_queue[queue_base])) - per_queue[queue_base]
end

for k = 1, count do
  local at = 10 + (k - 1) * FIELDS
  local queue_base, id = ARGV[at], ids[k]
  local key = queue_base .. 'j:' .. id
  orders[queue_base] = orders[queue_base] + 1
  local fields = { 'd', ARGV[at + 4], 'p', ARGV[at + 5], 'ma', ARGV[at + 6], 'bo', ARGV[at + 7],
    'sc', int(priorities[k] * STRIDE + orders[queue_base]), 'ct', now_text, 's', 'waiting-children',
    'rt', now_text, 'pn', '0' }
  if ARGV[at + 8] ~= '0' then fields[#fields + 1] = 'to'; fields[#fields + 1] = ARGV[at + 8] end
  if ARGV[at + 9] ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = ARGV[at + 9] end
  if delays[k] > 0 then fields[#fields + 1] = 'dl'; fields[#fields + 1] = int(delays[k]) end
  local parent = parents[k]
  if parent > 0 then
    local parent_base = ARGV[10 + (parent - 1) * FIELDS]
    local field = queue_base .. ' ' .. id
    fields[#fields + 1] = 'fp'
    fields[#fields + 1] = parent_base .. ' ' .. ids[parent] .. ' ' .. ARGV[at + 3]
    fields[#fields + 1] = 'fk'
    fields[#fields + 1] = field
    redis.call('SADD', queue_base .. 'fc', id)
    redis.call('HSET', parent_base .. 'kids:' .. ids[parent], field, '-')
    redis.call('HINCRBY', parent_base .. 'j:' .. ids[parent], 'pn', '1')
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', queue_base .. 'wc', now_text, id)
  if events_max > 0 then
    redis.call('XADD', queue_base .. 'ev', 'MAXLEN', '~', int(events_max), '*', 'e', 'enqueued', 'j', id)
  end
end
-- Jobs without children are released by their queues.
local has_children = {}
for k = 2, count do has_children[parents[k]] = true end
for k = 1, count do
  if not has_children[k] then
    local queue_base = ARGV[10 + (k - 1) * FIELDS]
    redis.call('RPUSH', queue_base .. 'inbox', 'r ' .. ids[k])
    redis.call('ZADD', queue_base .. 'mark', '0', 'w')
  end
end
return ids
