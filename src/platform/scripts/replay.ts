// The replay lock and the read-model generation flip, as scripts.

// Takes the replay lock (KEYS[1]) if it is free. Its value is a fencing token: a number drawn from
// a counter (KEYS[2]) that only grows, and above every partition's live generation (ARGV[2], the
// highest), so it also names the generation this replay builds. Returns the token, or nil when
// another replay holds the lock.
export const ACQUIRE_REPLAY = `
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local token = redis.call('INCR', KEYS[2])
if token <= tonumber(ARGV[2]) then
  token = tonumber(ARGV[2]) + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
`
// Makes the built generation (ARGV[1], the token) live in one partition: its pointer KEYS[1] and
// its fence KEYS[2], the highest token that flipped it, share the partition's hash tag. A replay
// whose token is below the fence lost to a newer one ('lost'); a pointer that is no longer the
// generation the replay started from (ARGV[2]) moved under it ('moved').
export const FLIP_GENERATION = `
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[1]) then return 'lost' end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then return 'moved' end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
return 'flipped'
`
// Renews or releases the replay lock only while this replay holds it.
export const RENEW_LOCK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`
