// The read model's scripts.
import { liveViewKeyLua } from '../keys'

// Every script here finds the order's hash in the live generation of the read model (see
// keys.ts): KEYS[1] is the generation key, ARGV[1] the view prefix, ARGV[2] the order key.
const LIVE_VIEW_KEY = liveViewKeyLua('KEYS[1]', 'ARGV[1]', 'ARGV[2]')

// Writes a view only if it is newer than the stored one: redelivered or reordered events can
// never move an order backwards.
export const SAVE_IF_NEWER = `${LIVE_VIEW_KEY}
local stored = tonumber(redis.call('HGET', key, 'version') or '0') or 0
if tonumber(ARGV[3]) <= stored then return 0 end
redis.call('HSET', key, 'version', ARGV[3], unpack(ARGV, 4))
return 1
`

export const GET_VIEW = `${LIVE_VIEW_KEY}
return redis.call('HGETALL', key)
`

// The view and the entries of the order's stream (KEYS[2]) after the view's version (or all of
// them, with ARGV[3] = 'all'), as of one instant: a reader learns whether the view is behind the
// log, and what it misses, in one round trip. A stream's n-th entry is version n (streams are
// never trimmed), and an order's stream is a handful of entries, so the tail is cut from the
// whole range rather than searched for.
export const GET_VIEW_WITH_TAIL = `${LIVE_VIEW_KEY}
local view = redis.call('HGETALL', key)
local after = 0
if ARGV[3] ~= 'all' then
  for i = 1, #view, 2 do
    if view[i] == 'version' then after = tonumber(view[i + 1]) or 0 end
  end
end
if redis.call('XLEN', KEYS[2]) <= after then return {view, {}} end
return {view, {unpack(redis.call('XRANGE', KEYS[2], '-', '+'), after + 1)}}
`
