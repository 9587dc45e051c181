-- The queue's event stream, and waking a blocked worker (prelude, after
-- ids.lua).

-- Appends `id` to the list `lists[name]`, noting in `order` the order in
-- which the names first came.
local function collect(lists, order, name, id)
  local list = lists[name]
  if not list then
    list = {}
    lists[name] = list
    order[#order + 1] = name
  end
  list[#list + 1] = id
end

-- Events of one kind that many jobs share in one script (enqueued, active,
-- completed) go out as one entry whose `j` lists the ids, space-separated.
-- (The tables are made for the first event: a script that emits none
-- makes none.)
local batched, batch_order = nil, nil
local function emit_many(event, id)
  if events_max > 0 then
    if not batched then batched, batch_order = {}, {} end
    collect(batched, batch_order, event, id)
  end
end

-- The stream keeps about `events_max` entries: ARGV[2] is that number's
-- text (see `whole`), which saves formatting it again.
local function flush_events()
  if not batched then return end
  for _, event in ipairs(batch_order) do
    redis.call('XADD', base .. 'ev', 'MAXLEN', '~', ARGV[2], '*', 'e', event, 'j',
      table.concat(batched[event], ' '))
  end
  batched, batch_order = nil, nil
end

local function emit(event, id, a, b, c, d)
  if events_max > 0 then
    if c then
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', ARGV[2], '*', 'e', event, 'j', id, a, b, c, d)
    elseif a then
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', ARGV[2], '*', 'e', event, 'j', id, a, b)
    else
      redis.call('XADD', base .. 'ev', 'MAXLEN', '~', ARGV[2], '*', 'e', event, 'j', id)
    end
  end
end

-- Wakes one worker blocked on the queue.
local function wake()
  redis.call('ZADD', mark_key, '0', 'w')
end
