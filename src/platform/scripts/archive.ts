// The scripts of `bakery archive`.
import { liveViewKeyLua } from '../keys'

// Commits one archive segment of a partition: the segment file is written and synced; this makes
// it part of the log and takes its entries out of Redis, in one atomic step. KEYS[1] the global
// log, KEYS[2] the archived-up-to marker, KEYS[3] the segment list, KEYS[4] the archive lock,
// KEYS[5] the orders whose stream is to go (a hash: order key -> version). ARGV[1] the lock's
// token, ARGV[2] the marker the segment starts after ('' for none), ARGV[3] the segment's file
// name, ARGV[4] its last entry's id, ARGV[5] the id right after it (XTRIM MINID keeps that and
// everything later), then (order key, version) pairs: the orders whose OrderBaked the segment
// holds, recorded with the commit so that a run that stops right after it still has them dropped
// by the next. 'lost': the lock is no longer this run's; 'moved': another run committed
// meanwhile. Either way nothing changes, and the segment is not read.
export const COMMIT_SEGMENT = `
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 'lost' end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return 'moved' end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[5])
for i = 6, #ARGV - 1, 2 do redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]) end
return 'committed'
`

// Drops the stream of a finished order whose events are all archived, leaving its view as the
// order's snapshot. KEYS[1] the order's stream, KEYS[2] the read model's generation key, KEYS[3]
// the partition's orders whose stream is to go (a hash: order key -> version). ARGV[1] the view prefix,
// ARGV[2] the order key, ARGV[3] the version of its last archived event. The stream goes only
// if that event is its last and the live view has folded it, and the order leaves the hash; an
// order whose view is behind stays in it (the next archive run tries again); one with events
// after it leaves the hash and keeps its stream.
export const DROP_ORDER_STREAM = `
local length = redis.call('XLEN', KEYS[1])
if length == tonumber(ARGV[3]) then
  ${liveViewKeyLua('KEYS[2]', 'ARGV[1]', 'ARGV[2]')}
  local folded = tonumber(redis.call('HGET', key, 'version') or '0') or 0
  if folded < length then return 'pending' end
  redis.call('DEL', KEYS[1])
end
redis.call('HDEL', KEYS[3], ARGV[2])
if length == 0 then return 'gone' end
return length == tonumber(ARGV[3]) and 'dropped' or 'kept'
`
