import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { context, propagation, ROOT_CONTEXT } from '@opentelemetry/api'
import type { ChainableCommander } from 'ioredis'
import type { PartitionKeys } from '../platform/keys'
import { OrderBaked, OrderPlaced, PlaceOrder, type OrderEvent, type OrderKey } from '../messages'
import type { OrderEventStore } from '../wiring'
import { VersionConflict } from '../platform/errors'
import type { Logger } from '../platform/logger'
import { metrics } from '../platform/metrics'
import { fieldRecord } from '../platform/redis'
import { evolve, initialState } from './order'
import type { ScriptedRedis } from '../platform/scripts'

/**
 * The PlaceOrder to send again for an order that is not finished (pending, or baking with no
 * baker left to finish it); none for a finished or unknown order. The baker's handler takes a
 * repeated PlaceOrder in its stride: nothing for a finished order, the rest of the bake for one
 * in the oven.
 */
export function commandToResend(history: readonly OrderEvent[]): PlaceOrder | undefined {
  const placed = history.find((event): event is OrderPlaced => event.$name === OrderPlaced.$name)
  const { status } = history.reduce(evolve, initialState)
  if (!placed || (status !== 'pending' && status !== 'baking')) return undefined
  const { orderKey, customer, pastry, orderTime } = placed
  return PlaceOrder.create({ orderKey, customer, pastry, orderTime })
}

export interface SweeperOptions {
  readonly redis: ScriptedRedis
  readonly store: OrderEventStore
  readonly logger: Logger
  /** An order unfinished this long after it was placed (or last sent again) is sent again. */
  readonly stuckAfterMs: number
}

/** Log entries indexed per round trip, and round trips per sweep (the rest waits for the next). */
const INDEX_BATCH = 1000
const INDEX_BATCHES_PER_SWEEP = 20
/** Stuck orders sent again per sweep at most. */
const RESEND_PER_SWEEP = 100

/**
 * Follows a partition's global log from its sweep cursor into its `unfinished` set, placed orders
 * in and baked ones out, for at most `rounds` batches (all of it with Infinity). Idempotent:
 * indexing an entry twice leaves the set as once, so overlapping callers do no harm.
 */
export async function indexUnfinished(
  redis: ScriptedRedis,
  { events, unfinished, sweepCursor }: PartitionKeys,
  rounds: number,
): Promise<void> {
  let cursor = (await redis.get(sweepCursor)) ?? '0-0'
  for (let round = 0; round < rounds; round++) {
    const entries = await redis.xrange(events, `(${cursor}`, '+', 'COUNT', INDEX_BATCH)
    if (entries.length === 0) return
    const transaction = redis.multi()
    for (const [id, flat] of entries) {
      const { order, type } = fieldRecord(flat)
      if (order === undefined) continue
      // Scored by when it was placed: the time in its log entry's id.
      if (type === OrderPlaced.$name) transaction.zadd(unfinished, 'NX', id.split('-')[0]!, order)
      else if (type === OrderBaked.$name) transaction.zrem(unfinished, order)
    }
    cursor = entries.at(-1)![0]
    await exec(transaction.set(sweepCursor, cursor))
  }
}

/**
 * Finds orders that stay pending or baking (their command lost with the last second of a Redis
 * crash, or on the way) and sends their PlaceOrder again through the outbox. Every baker runs
 * one and none leads: in each period the one that takes the lease (SET NX, expiring with the
 * period) sweeps. It keeps `{ns}:unfinished`, a sorted set of the orders placed and not yet baked,
 * by following the global log from `{ns}:sweep-cursor`; an order's stream has the last word.
 * Each resend is claimed in the set by one atomic script, so sweeps that overlap (a lease that
 * ran out) still send an order once per STUCK_ORDER_AFTER_MS.
 */
export class Sweeper {
  private readonly holder = randomBytes(6).toString('hex')
  private readonly log: Logger
  private readonly periodMs: number
  private readonly stopped = new AbortController()
  private running: Promise<void> | undefined

  constructor(private readonly options: SweeperOptions) {
    this.log = options.logger.child({ component: 'sweeper' })
    this.periodMs = Math.max(50, Math.round(options.stuckAfterMs / 4))
  }

  start(): void {
    this.running ??= this.loop()
  }

  async stop(): Promise<void> {
    this.stopped.abort()
    // A sweep waiting for an absent Redis would hold the stop forever.
    await Promise.race([this.running, sleep(2000)])
  }

  private async loop(): Promise<void> {
    let failures = 0
    while (!this.stopped.signal.aborted) {
      // Jittered, so that the bakers do not all ask for the lease at once.
      const wait = this.periodMs * (0.5 + Math.random())
      const woke = await sleep(wait, true, { signal: this.stopped.signal }).catch(() => false)
      if (!woke) break
      try {
        await this.sweep()
        failures = 0
      } catch (error) {
        failures += 1
        if (failures === 1 || failures % 30 === 0)
          this.log.warn({ err: error }, 'cannot sweep for stuck orders yet; retrying')
      }
    }
  }

  /** One sweep, if this baker holds the period's lease; resolves to the orders sent again. */
  async sweep(now = Date.now()): Promise<number> {
    const { redis, store } = this.options
    const lease = await redis.set(store.keys.sweepLease, this.holder, 'PX', this.periodMs, 'NX')
    if (lease !== 'OK') return 0
    await this.index()
    return this.resendDue(now)
  }

  /**
   * Sends again the orders of `unfinished` that are due at `now`; resolves to how many. Safe to
   * run in several bakers at once (what a lease that ran out allows): each order is sent by one.
   */
  async resendDue(now: number): Promise<number> {
    const { redis, store } = this.options
    let sent = 0
    for (const { unfinished } of store.keys.partitions) {
      const due = await redis.zrangebyscore(
        unfinished,
        '-inf',
        now - this.options.stuckAfterMs,
        'LIMIT',
        0,
        RESEND_PER_SWEEP,
      )
      for (const order of due) if (await this.resend(order as OrderKey, now)) sent += 1
    }
    return sent
  }

  /** Brings each partition's `unfinished` up to date with its global log, a bounded step each. */
  async index(): Promise<void> {
    for (const partition of this.options.store.keys.partitions)
      await indexUnfinished(this.options.redis, partition, INDEX_BATCHES_PER_SWEEP)
  }

  /** Sends the order's PlaceOrder again if its stream says it is still unfinished. */
  private async resend(orderKey: OrderKey, now: number): Promise<boolean> {
    const { redis, store, stuckAfterMs } = this.options
    const { unfinished } = store.keys.of(orderKey)
    // Not again before another STUCK_ORDER_AFTER_MS, whichever baker sweeps next.
    if ((await redis.bakeryClaimResend(unfinished, orderKey, now - stuckAfterMs, now)) !== 1)
      return false
    try {
      const history = await store.read(orderKey)
      const command = commandToResend(history.map((stored) => stored.event))
      if (!command) {
        await redis.zrem(unfinished, orderKey)
        return false
      }
      // Appended at the version just read, with no event: if the order moved on meanwhile, it
      // is not stuck. The command continues the order's trace.
      const trace = propagation.extract(ROOT_CONTEXT, history[0]?.trace ?? {})
      await context.with(trace, () =>
        store.append(orderKey, history.length, [], [{ kind: 'command', message: command }]),
      )
      metrics.orderResent()
      this.log.warn(
        { orderKey, version: history.length, stuckAfterMs },
        'order unfinished for too long: PlaceOrder sent again',
      )
      return true
    } catch (error) {
      if (error instanceof VersionConflict) return false
      this.log.warn({ err: error, orderKey }, 'cannot check or resend an unfinished order')
      return false
    }
  }
}

async function exec(transaction: ChainableCommander): Promise<void> {
  for (const [error] of (await transaction.exec()) ?? []) if (error) throw error
}
