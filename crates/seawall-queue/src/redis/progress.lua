-- ARGV[7]: id; ARGV[8]: lease token; ARGV[9]: percent; ARGV[10]: message.
-- Returns 1, or 0 when the token is no longer the job's own.
local id = job_id_arg(7)
local token = shaped(8, TOKEN, 64, 'a lease token')
local percent = whole(9, 0, 100)
local message = ARGV[10] or ''
if #message > MAX_MESSAGE then refuse('a progress message is over ' .. MAX_MESSAGE .. ' bytes') end
if not redis.call('ZSCORE', active_key, lease_member(id, token)) then return 0 end
redis.call('HSET', job_key(id), 'pp', int(percent), 'pm', message)
emit('progress', id, 'percent', ARGV[9], 'message', message)
return 1
