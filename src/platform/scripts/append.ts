import { liveViewKeyLua } from '../keys'

/*
 * The event store's append, as Lua scripts Redis runs atomically. Keys: KEYS[1] the order's
 * stream, KEYS[2] the global log, KEYS[3] the outbox, KEYS[4] the read model's generation
 * pointer, and for the append-once KEYS[5] the claim. Arguments: see APPEND_BODY.
 */

// A resent append finds itself already there: the reply to an append was lost with its connection
// and ioredis sent the command again after reconnecting. Each append carries an id of its own,
// stored with its first event; when the entry after the expected version holds that id, the
// append was done, and it answers as it would have the first time. `done` shapes that answer.
const ALREADY_DONE = `
local current = redis.call('XLEN', KEYS[1])
local expected, appendId, eventCount = tonumber(ARGV[o + 1]), ARGV[o + 2], tonumber(ARGV[o + 6])
if current > expected then
  local fields = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', expected + 1)[expected + 1][2]
  for f = 1, #fields - 1, 2 do
    if fields[f] == 'append' then
      if fields[f + 1] == appendId then return done(expected + eventCount) end
      break
    end
  end
end
`

// Checks the expected version and appends to the order stream, the global log and the outbox in
// one atomic step: two writers can never interleave, and an event never exists without the
// messages that announce it. When the writer passes the order's read-model view after these
// events (the reception does for a new order), it is saved in the same step, if newer than the
// stored one, as the projector would: the order is readable from the moment the append returns.
// Its arguments start at ARGV[o + 1], so that APPEND_ONCE can put its own in front: expected
// version, append id, outbox limit (0: none), order key, recordedAt, event count, trace, outbox
// count, view prefix ('' for no view), then the events' (type, JSON) pairs, the outbox's
// (kind, JSON) pairs and the view's (field, value) pairs. KEYS[4] is the read model's
// generation key.
const APPEND_BODY = `
if current ~= expected then
  return redis.error_reply('WRONGVERSION ' .. current)
end
local outboxLimit = tonumber(ARGV[o + 3])
if outboxLimit > 0 and redis.call('XLEN', KEYS[3]) >= outboxLimit then
  return redis.error_reply('OUTBOXFULL ' .. outboxLimit)
end
local orderKey, recordedAt, trace = ARGV[o + 4], ARGV[o + 5], ARGV[o + 7]
local outboxCount, viewPrefix, i = tonumber(ARGV[o + 8]), ARGV[o + 9], o + 10
for n = 1, eventCount do
  local version = current + n
  local kind, event = ARGV[i], ARGV[i + 1]
  i = i + 2
  redis.call('XADD', KEYS[1], '*', 'version', version, 'type', kind, 'event', event,
    'recordedAt', recordedAt, 'trace', trace, 'append', appendId)
  redis.call('XADD', KEYS[2], '*', 'order', orderKey, 'version', version, 'type', kind,
    'event', event, 'recordedAt', recordedAt, 'trace', trace)
end
for n = 1, outboxCount do
  redis.call('XADD', KEYS[3], '*', 'order', orderKey, 'kind', ARGV[i], 'message', ARGV[i + 1],
    'trace', trace)
  i = i + 2
end
if viewPrefix ~= '' then
  ${liveViewKeyLua('KEYS[4]', 'viewPrefix', 'orderKey')}
  local stored = tonumber(redis.call('HGET', key, 'version') or '0') or 0
  if current + eventCount > stored then
    redis.call('HSET', key, 'version', current + eventCount, unpack(ARGV, i))
  end
end
`

export const APPEND = `local o = 0
local function done(version) return version end
${ALREADY_DONE}
${APPEND_BODY}
return done(current + eventCount)
`

// The same append, done only if the claim key (KEYS[5]) is free, which it then holds with
// ARGV[1] for ARGV[2] seconds: of concurrent appends with one claim, exactly one writes anything.
// The others get what the claim holds. A resent append is recognised before the claim is looked
// at: the claim it finds is its own.
export const APPEND_ONCE = `local o = 2
local function done(version) return {'appended', version} end
${ALREADY_DONE}
local claimed = redis.call('GET', KEYS[5])
if claimed then return {'claimed', claimed} end
${APPEND_BODY}
redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[2])
return done(current + eventCount)
`
