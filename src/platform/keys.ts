import { crc32 } from 'node:zlib'

/**
 * Bakery's Redis keys. The event log is split in P partitions (BAKERY_PARTITIONS): an order lives
 * in the partition its key hashes to, and every key of one partition carries the same hash tag,
 * so the append script, which touches an order's stream, its partition's global log and outbox
 * and its view at once, stays in one Redis Cluster slot. Partitions spread over the masters of a
 * cluster; on one Redis they cost nothing.
 *
 * The tag of partition i is `{<namespace>:p<i>}`; with one partition it is `{<namespace>}`, the
 * layout of every store from before partitions, which therefore needs no migration.
 */
export interface PartitionKeys {
  readonly index: number
  readonly orderStream: (orderKey: string) => string
  /**
   * An order's read-model hash in one generation of the read model. Generation 0 is the layout
   * from before `bakery replay` existed; replay builds generation n + 1 beside n and flips each
   * partition's `viewGeneration` (docs/replay.md).
   */
  readonly view: (orderKey: string, generation?: number) => string
  /** Every read-model hash starts with this: `<prefix><key>` or `<prefix><generation>:<key>`. */
  readonly viewPrefix: string
  /** The number of the live read-model generation of this partition (absent: 0). */
  readonly viewGeneration: string
  /** The highest replay fencing token that flipped this partition's generation. */
  readonly generationFence: string
  /** Prefix of throw-away keys a tool builds aside, e.g. the read model `replay --verify` rebuilds. */
  readonly scratch: (label: string) => string
  /** The partition's global log: every event of its orders, in append order. */
  readonly events: string
  readonly outbox: string
  /** Outbox entries a relay could not decode (e.g. from a newer Bakery), kept for a person. */
  readonly parked: string
  /** Unfinished orders by the time of their last (re)send, kept by the bakers' sweeper. */
  readonly unfinished: string
  /** How far into the partition's global log the sweeper has indexed `unfinished`. */
  readonly sweepCursor: string
  /** What an `Idempotency-Key` (by its SHA-256) of POST /orders was used for, until it expires. */
  readonly idempotency: (keyDigest: string) => string
  /**
   * The archive segments that hold the start of the partition's global log, oldest first (file
   * names, `<first id>_<last id>_<entries>.ndjson.gz`): what `bakery archive` moved out of Redis.
   */
  readonly archiveSegments: string
  /** The id of the last archived entry; the global log starts after it. */
  readonly archivedUpTo: string
  /** Held by the one `bakery archive` that may archive this partition. */
  readonly archiveLock: string
  /**
   * Finished orders whose stream is to go (order key -> version of its OrderBaked): recorded with
   * the commit of the segment that archived that event, removed once the stream is dropped, which
   * waits for the order's view to have folded it.
   */
  readonly archivePending: string
}

export interface Keys {
  readonly namespace: string
  readonly partitions: readonly PartitionKeys[]
  /** The partition of an order. */
  readonly of: (orderKey: string) => PartitionKeys
  /** An order's stream, in its partition. */
  readonly orderStream: (orderKey: string) => string
  /** An order's read-model hash, in its partition (see PartitionKeys.view). */
  readonly view: (orderKey: string, generation?: number) => string
  /** How many partitions the store was made with; a role with another BAKERY_PARTITIONS refuses. */
  readonly layout: string
  /** Held by the one `bakery replay` that may build the next generation. */
  readonly replayLock: string
  /** The counter the replay lock's fencing tokens are drawn from. */
  readonly replayFence: string
  /** Held by the baker that sweeps in the current period. */
  readonly sweepLease: string
}

/** The partition a key (an order key, an idempotency key's digest) belongs to, of `count`. */
export const partitionIndex = (key: string, count: number): number =>
  count === 1 ? 0 : crc32(key) % count

export function keys(namespace: string, partitionCount = 1): Keys {
  const partitions = Array.from({ length: partitionCount }, (_, index) =>
    partitionKeys(partitionCount === 1 ? `{${namespace}}` : `{${namespace}:p${index}}`, index),
  )
  // Keys of the whole store keep the namespace's own tag (partition 0's when there is one).
  const shared = `{${namespace}}`
  const of = (orderKey: string) => partitions[partitionIndex(orderKey, partitionCount)]!
  return {
    namespace,
    partitions,
    of,
    orderStream: (orderKey) => of(orderKey).orderStream(orderKey),
    view: (orderKey, generation) => of(orderKey).view(orderKey, generation),
    layout: `${shared}:partitions`,
    replayLock: `${shared}:replay-lock`,
    replayFence: `${shared}:replay-fence`,
    sweepLease: `${shared}:sweep-lease`,
  }
}

function partitionKeys(tag: string, index: number): PartitionKeys {
  return {
    index,
    orderStream: (orderKey) => `${tag}:order:${orderKey}`,
    view: (orderKey, generation = 0) =>
      generation === 0 ? `${tag}:view:${orderKey}` : `${tag}:view:${generation}:${orderKey}`,
    viewPrefix: `${tag}:view:`,
    viewGeneration: `${tag}:view-generation`,
    generationFence: `${tag}:generation-fence`,
    scratch: (label) => `${tag}:scratch:${label}:`,
    events: `${tag}:events`,
    outbox: `${tag}:outbox`,
    parked: `${tag}:outbox-parked`,
    unfinished: `${tag}:unfinished`,
    sweepCursor: `${tag}:sweep-cursor`,
    idempotency: (keyDigest) => `${tag}:idempotency:${keyDigest}`,
    archiveSegments: `${tag}:archive-segments`,
    archivedUpTo: `${tag}:archived-up-to`,
    archiveLock: `${tag}:archive-lock`,
    archivePending: `${tag}:archive-pending`,
  }
}

/**
 * Lua that sets `key` to an order's read-model hash in the live generation, read in the same
 * atomic step as the script uses it (`bakery replay` flips the generation between two calls,
 * never during one). The arguments are Lua expressions: the generation key, the view prefix and
 * the order key. The hash shares its partition's hash tag with the generation key, so a script that
 * uses it stays within one Redis Cluster slot.
 */
export const liveViewKeyLua = (generation: string, prefix: string, orderKey: string) => `
local generation = redis.call('GET', ${generation})
local key = ${prefix} .. ${orderKey}
if generation and generation ~= '0' then key = ${prefix} .. generation .. ':' .. ${orderKey} end
`
