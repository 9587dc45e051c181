-- The inbox: notes other queues' scripts leave for this one (prelude,
-- after cancel.lua).

-- Reads the notes other queues' scripts left in this queue's inbox (see
-- `tell_parent` and flow.lua): `r <id>` releases a flow job whose children
-- all finished (a leaf at once) to wait, or to its delay; `f <id> <error>`
-- dead-letters a parent whose child failed; `x <id>` cancels a child of a
-- cancelled parent. A note for a job no longer waiting on its children is
-- dropped.
local function take_inbox()
  local notes = redis.call('LPOP', base .. 'inbox', '1000')
  if not notes then return end
  for _, note in ipairs(notes) do
    local kind, id, rest = string.match(note, '^(%a) (%S+) ?(.*)$')
    local key = job_key(id)
    if kind == 'x' then
      cancel_job(id)
    else
      local job = redis.call('HMGET', key, 's', 'pn', 'g', 'sc', 'dl')
      if job[1] == 'waiting-children' and (kind == 'f' or tonumber(job[2] or '0') <= 0) then
        redis.call('ZREM', base .. 'wc', id)
        redis.call('PEXPIRE', base .. 'kids:' .. id, KIDS_KEPT_MS)
        if kind == 'f' then
          make_dead(id, key, rest)
        else
          local delay = tonumber(job[5] or '0')
          if delay > 0 then
            local ready = int(now + delay)
            redis.call('HSET', key, 's', 'delayed', 'rt', ready)
            redis.call('ZADD', delayed_key, ready, id)
          else
            make_waiting(id, key, job[3] or '', job[4], false)
          end
          emit('released', id)
          wake()
        end
      end
    end
  end
end
