-- Flows: a finished child tells its parent (prelude, after groups.lua).

-- A flow's child that finished tells its parent (in its own queue or
-- another; see flow.lua): completed, with its result, or failed (dead or
-- cancelled), which by the child's policy fails the parent (`fail`), is
-- recorded and passed over (`ignore`), or drops the dependency (`drop`).
-- The parent's children hash (`kids:<id>`) holds `-` for a pending child,
-- `c<result>` or `f<error>` after; a parent left with none pending, or
-- to be failed, gets a note in its queue's inbox, which that queue's
-- scripts read (`take_inbox`). Called for members of `fc`, the queue's
-- flow children, each once (the caller removes it from `fc`). A parent
-- that is gone (dead by another child and then removed) is told nothing:
-- no record is made again in its name.
local function tell_parent(id, key, failed, message)
  local flow = redis.call('HMGET', key, 'fp', 'fk', 'rv')
  if not flow[1] then return end
  local parent_base, parent, policy = string.match(flow[1], '^(%S+) (%S+) (%a+)$')
  local kids = parent_base .. 'kids:' .. parent
  if redis.call('HGET', kids, flow[2]) ~= '-' then return end
  if redis.call('EXISTS', parent_base .. 'j:' .. parent) == 0 then return end
  local note = nil
  if not failed then
    redis.call('HSET', kids, flow[2], 'c' .. (flow[3] or ''))
  elseif policy == 'drop' then
    redis.call('HDEL', kids, flow[2])
  else
    redis.call('HSET', kids, flow[2], 'f' .. message)
    if policy ~= 'ignore' then
      -- Named as the memory store names it: `<queue> <id>`. The child's key
      -- prefix is `<prefix>:{<queue>}:`, or `{<prefix>}:<queue>:` when
      -- the queues share one slot; neither a prefix nor a queue name holds
      -- a brace.
      local child_base, child = string.match(flow[2], '^(%S+) (%S+)$')
      local queue = string.match(child_base, '^{[^{}]*}:(.*):$') or string.match(child_base, '{([^{}]*)}:$')
      note = 'f ' .. parent .. ' a child failed (' .. (queue or child_base) .. ' ' .. child .. '): ' .. message
    end
  end
  if not note and redis.call('HINCRBY', parent_base .. 'j:' .. parent, 'pn', '-1') <= 0 then
    note = 'r ' .. parent
  end
  if note then
    redis.call('RPUSH', parent_base .. 'inbox', note)
    redis.call('ZADD', parent_base .. 'mark', '0', 'w')
  end
end
