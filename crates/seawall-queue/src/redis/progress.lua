-- ARGV[7]: id; ARGV[8]: lease token; ARGV[9]: percent; ARGV[10]: message.
-- Returns 1, or 0 when the token is no longer the job's own.
local key = job_key(ARGV[7])
if not redis.call('ZSCORE', active_key, lease_member(ARGV[7], ARGV[8])) then return 0 end
redis.call('HSET', key, 'pp', ARGV[9], 'pm', ARGV[10])
emit('progress', ARGV[7], 'percent', ARGV[9], 'message', ARGV[10])
return 1
