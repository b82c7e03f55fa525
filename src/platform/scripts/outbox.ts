// The outbox's parking, as scripts: an entry is in the outbox or parked, never in neither.

// Parks one outbox entry (KEYS[1]) in KEYS[2]: the copy first, so that a Redis refusing writes
// (maxmemory) stops the script before the entry is acknowledged and deleted.
export const PARK = `
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
`

// Puts a parked entry (ARGV[1] in KEYS[2]) back into the outbox (KEYS[1]) with the fields that
// follow: the outbox entry first, so that a Redis refusing writes keeps it parked.
export const UNPARK = `
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
`
