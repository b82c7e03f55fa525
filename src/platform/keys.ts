/**
 * Every Redis key of one Bakery shares the hash tag `{namespace}`, so the append script, which
 * touches an order stream, the global log and the outbox at once, stays in one Redis Cluster slot.
 */
export interface Keys {
  readonly orderStream: (orderKey: string) => string
  /**
   * An order's read-model hash in one generation of the read model. Generation 0 is the layout
   * from before `bakery replay` existed; replay builds generation n + 1 beside n and flips
   * `viewGeneration` (docs/replay.md).
   */
  readonly view: (orderKey: string, generation?: number) => string
  /** Every read-model hash starts with this: `<prefix><key>` or `<prefix><generation>:<key>`. */
  readonly viewPrefix: string
  /** The number of the live read-model generation (absent: 0). */
  readonly viewGeneration: string
  /** Held by the one `bakery replay` that may build the next generation. */
  readonly replayLock: string
  /** The counter the replay lock's fencing tokens are drawn from. */
  readonly replayFence: string
  /** Prefix of throw-away keys a tool builds aside, e.g. the read model `replay --verify` rebuilds. */
  readonly scratch: (label: string) => string
  readonly events: string
  readonly outbox: string
  /** Outbox entries a relay could not decode (e.g. from a newer Bakery), kept for a person. */
  readonly parked: string
  /** Unfinished orders by the time of their last (re)send, kept by the bakers' sweeper. */
  readonly unfinished: string
  /** How far into the global log the sweeper has indexed `unfinished`. */
  readonly sweepCursor: string
  /** Held by the baker that sweeps in the current period. */
  readonly sweepLease: string
  /** What an `Idempotency-Key` (by its SHA-256) of POST /orders was used for, until it expires. */
  readonly idempotency: (keyDigest: string) => string
}

export function keys(namespace: string): Keys {
  const tag = `{${namespace}}`
  return {
    orderStream: (orderKey) => `${tag}:order:${orderKey}`,
    view: (orderKey, generation = 0) =>
      generation === 0 ? `${tag}:view:${orderKey}` : `${tag}:view:${generation}:${orderKey}`,
    viewPrefix: `${tag}:view:`,
    viewGeneration: `${tag}:view-generation`,
    replayLock: `${tag}:replay-lock`,
    replayFence: `${tag}:replay-fence`,
    scratch: (label) => `${tag}:scratch:${label}:`,
    events: `${tag}:events`,
    outbox: `${tag}:outbox`,
    parked: `${tag}:outbox-parked`,
    unfinished: `${tag}:unfinished`,
    sweepCursor: `${tag}:sweep-cursor`,
    sweepLease: `${tag}:sweep-lease`,
    idempotency: (keyDigest) => `${tag}:idempotency:${keyDigest}`,
  }
}

/**
 * Lua that sets `key` to an order's read-model hash in the live generation, read in the same
 * atomic step as the script uses it (`bakery replay` flips the generation between two calls,
 * never during one). The arguments are Lua expressions: the generation key, the view prefix and
 * the order key. The hash shares the `{ns}` hash tag with the generation key, so a script that
 * uses it stays within one Redis Cluster slot.
 */
export const liveViewKeyLua = (generation: string, prefix: string, orderKey: string) => `
local generation = redis.call('GET', ${generation})
local key = ${prefix} .. ${orderKey}
if generation and generation ~= '0' then key = ${prefix} .. generation .. ':' .. ${orderKey} end
`
