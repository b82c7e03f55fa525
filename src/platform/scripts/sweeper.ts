// The bakers' sweeper's script.

// Claims an order (ARGV[1]) of the unfinished set (KEYS[1]) for one resend: moves its score from
// before ARGV[2] (it is due) to ARGV[3] (now), so that of sweeps that overlap exactly one sends
// it, and none again before it is due again.
export const CLAIM_RESEND = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
`
