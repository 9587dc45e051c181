-- Extends the leases a worker holds, then runs the queue's upkeep (due
-- delayed jobs, expired leases, completed jobs past their age). ARGV[7]:
-- lease ms; ARGV[8]: how many leases follow, each as a job id and its
-- token. Returns { positions (from 1) of the leases that are no longer
-- the worker's, positions of those whose cancellation was asked }.
local deadline = int(now + whole(7, 0, MAX_MS))
local count = whole(8, 0, 1000000)
if #ARGV ~= 8 + 2 * count then refuse('expected ' .. count .. ' leases') end
for i = 0, count - 1 do
  job_id_arg(9 + 2 * i)
  shaped(10 + 2 * i, TOKEN, 64, 'a lease token')
end
local lost = {}
local cancel = {}
for i = 0, count - 1 do
  local id = ARGV[9 + 2 * i]
  local member = lease_member(id, ARGV[10 + 2 * i])
  if redis.call('ZSCORE', active_key, member) then
    redis.call('ZADD', active_key, 'XX', deadline, member)
    if redis.call('HGET', job_key(id), 'cx') == '1' then cancel[#cancel + 1] = i + 1 end
  else
    lost[#lost + 1] = i + 1
  end
end
promote()
recover()
trim_completed_by_age(redis.call('HGET', meta, 'dft'))
return { lost, cancel }
