-- Job ids: an epoch and a sequence that never repeat (prelude, after
-- base.lua).

-- Ids never repeat, even after Redis lost its last writes (a failover, an
-- fsync window), whatever the servers' clocks say: an id is
-- `<sequence>-<epoch>`. The epoch is the first 16 hex digits of the
-- server's replication id, which Redis draws at random (160 bits) when
-- the server starts and again when a replica is promoted, and keeps for
-- as long as it stays the primary: a server restarted without its last
-- writes, or a replica promoted without them, gives ids of another epoch
-- than the lost ones. The sequence is the last one plus one, or the
-- server's clock in microseconds since 2026, whichever is larger, so ids
-- of one primary grow in enqueue order, and usually across a failover
-- too; after a loss, or with a clock behind, a sequence may come again,
-- never with the same epoch (unless two primaries drew the same 64 bits).
-- `INFO replication` costs the server about 4 µs a call (not a job), and
-- no round trip. A replica names its primary's replication id, so one that
-- takes writes (`replica-read-only no`) would give ids its primary gives
-- too: an enqueue on any replica is refused before it writes.
--
-- Wire version 1 leaves the epoch out: while a worker of the release
-- before epochs is alive, ids are digits alone, as that release gave
-- them, from the same sequence.
--
-- INFO's text is looked through with plain finds: a pattern that does not
-- start with `^` is tried at every byte of the text, which costs the
-- server more than INFO itself.
local function id_epoch(wire)
  local replication = redis.call('INFO', 'replication')
  if string.find(replication, 'role:slave', 1, true) then
    refuse('this server is a replica: enqueue on the primary (a writable replica would repeat its ids)')
  end
  if wire < 2 then return '' end
  local at = string.find(replication, 'master_replid:', 1, true)
  local replid = at and string.match(replication, '^%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x', at + 14)
  if not replid then refuse('the server names no replication id (INFO replication)') end
  return '-' .. replid
end

-- The server's clock in microseconds since 2026, the least a new id
-- sequence may be (see `id_epoch`).
local clock_id = (clock_s - 1767225600) * 1000000 + clock_us

-- The first of a queue's new id sequences: the last one plus one, or
-- `clock_id`, whichever is larger; `queue_base` is the queue's key prefix.
local function first_sequence(queue_base)
  local first = tonumber(redis.call('GET', queue_base .. 'jid') or '0') + 1
  if clock_id > first then return clock_id end
  return first
end

-- The sequence of a call that adds one job, taken as `first_sequence`
-- takes it and written at once: the clock's, written with `SET … GET`,
-- which answers the last one; when that was not below the clock's, the
-- last plus one, written again. One command where `first_sequence` and
-- the `SET` after it are two, for a call that cannot be refused once it
-- has its id (a replay of it moves the sequence on and adds nothing).
-- Returns the sequence as text.
local function claim_sequence(queue_base)
  local sequence = int(clock_id)
  local last = tonumber(redis.call('SET', queue_base .. 'jid', sequence, 'GET') or '0')
  if last >= clock_id then
    sequence = int(last + 1)
    redis.call('SET', queue_base .. 'jid', sequence)
  end
  return sequence
end
