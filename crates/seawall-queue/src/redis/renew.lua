-- Extends the leases a worker holds, then runs the queue's upkeep (due
-- delayed jobs, expired leases). ARGV[7]: lease ms; ARGV[8]: how many leases
-- follow, each as a job id and its token. Returns { lost ids, ids whose
-- cancellation was asked }.
local deadline = now + tonumber(ARGV[7])
local count = tonumber(ARGV[8])
local lost = {}
local cancel = {}
for i = 0, count - 1 do
  local id = ARGV[9 + 2 * i]
  local member = lease_member(id, ARGV[10 + 2 * i])
  if redis.call('ZSCORE', active_key, member) then
    redis.call('ZADD', active_key, 'XX', deadline, member)
    if redis.call('HGET', job_key(id), 'cx') == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
promote()
recover()
return { lost, cancel }
