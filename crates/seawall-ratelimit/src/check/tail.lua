
-- Write the new state, or on a rejection block the subject for the
-- penalty; then answer with what was read.
if value then
  if ttl > 0 then
    redis.call('SET', KEYS[2], value, 'PX', string.format('%d', (ttl + 999) / 1000))
  end
else
  local penalty = tonumber(ARGV[1])
  if penalty > 0 then
    redis.call('SET', KEYS[1], string.format('%d', now + penalty),
      'PX', string.format('%d', (penalty + 999) / 1000))
  end
end
if backlog then return backlog end
return string.format('%d %d ', now, blocked) .. state
