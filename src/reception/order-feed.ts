import { setTimeout as sleep } from 'node:timers/promises'
import type { RedisClient } from '../platform/redis'
import type { OrderKey } from '../messages'
import { decodeOrderEntry, type OrderEventStore, type StoredOrderEvent } from '../wiring'
import type { Logger } from '../platform/logger'
import { delayAfter, reconnecting } from '../platform/backoff'

/** What an update stream needs of the feed: to be told an order's events after a version. */
export interface OrderUpdates {
  subscribe(orderKey: OrderKey, version: number, subscriber: Subscriber): () => void
}

/** Someone waiting for an order's next events. */
export interface Subscriber {
  /** New events of the order, oldest first, each delivered once and with no gap. */
  readonly deliver: (events: readonly StoredOrderEvent[]) => void
  /** No more events will come: the feed is stopping, or it could not catch the order up. */
  readonly end: () => void
}

export interface OrderFeedOptions {
  /** A connection of its own: the feed blocks on it. */
  readonly reader: RedisClient
  /** The global log it follows: one partition's (PartitionKeys.events). */
  readonly log: string
  /** Reads an order's stream when a subscriber must catch up. */
  readonly store: OrderEventStore
  readonly logger: Logger
  /** How long one XREAD blocks; it is re-issued at once, so this bounds nothing a client sees. */
  readonly blockMs?: number
}

interface Watch {
  readonly orderKey: OrderKey
  readonly subscriber: Subscriber
  /** The last version this subscriber has. */
  version: number
  closed: boolean
}

/** Entries one XREAD of the global log returns at most. */
const BATCH = 1000

/**
 * Changes to orders, read from Redis rather than from this process's memory, so that a client
 * sees every change whichever reception replica wrote it. The feed follows the global log with
 * one blocking XREAD, on one connection, and hands each event to the watchers of its order, in
 * memory: a reception costs Redis one blocking read however many orders are watched, and a new
 * watcher costs one read of its order's stream (to catch up) and nothing after.
 */
export class OrderFeed implements OrderUpdates {
  private readonly watches = new Map<OrderKey, Set<Watch>>()
  private readonly log: Logger
  private running: Promise<void> | undefined
  private stopping = false
  private count = 0
  /** The last global-log id read; undefined while nobody watches. */
  private cursor: string | undefined
  /** Resolves once the feed follows the log from `cursor`: catching up before would miss events. */
  private following = deferred()
  private wake: (() => void) | undefined

  constructor(private readonly options: OrderFeedOptions) {
    this.log = options.logger.child({ component: 'order-feed' })
  }

  start(): void {
    this.running ??= this.loop()
  }

  /** Ends every subscription and stops reading. */
  async stop(): Promise<void> {
    this.stopping = true
    for (const watches of this.watches.values()) for (const watch of watches) this.close(watch)
    this.watches.clear()
    this.following.resolve()
    this.wake?.()
    this.options.reader.disconnect()
    await this.running
  }

  /**
   * Delivers the order's events after `version` (the last one the subscriber has) until the
   * returned function is called.
   */
  subscribe(orderKey: OrderKey, version: number, subscriber: Subscriber): () => void {
    const watch: Watch = { orderKey, subscriber, version, closed: false }
    let watches = this.watches.get(orderKey)
    if (!watches) this.watches.set(orderKey, (watches = new Set()))
    watches.add(watch)
    this.count += 1
    this.wake?.()
    void this.catchUp(watch)
    return () => this.remove(watch)
  }

  /**
   * What the order got between the subscriber's read and the feed taking the watch in. Once the
   * feed follows the log, every later event reaches the watch through the log; anything before
   * is in the order's stream.
   */
  private async catchUp(watch: Watch): Promise<void> {
    await this.following.promise
    if (watch.closed) return
    try {
      this.offer(watch, await this.options.store.read(watch.orderKey, watch.version))
    } catch (error) {
      // The client reconnects (EventSource does, with Last-Event-ID) and starts afresh.
      this.log.warn({ err: error }, 'cannot catch an update stream up; ending it')
      this.close(watch)
    }
  }

  /** Delivers what is new to the watch, in order; a gap means something was missed: read again. */
  private offer(watch: Watch, events: readonly StoredOrderEvent[]): void {
    const fresh: StoredOrderEvent[] = []
    for (const event of events) {
      if (event.version <= watch.version) continue
      if (event.version > watch.version + 1) {
        void this.catchUp(watch)
        break
      }
      fresh.push(event)
      watch.version = event.version
    }
    if (fresh.length > 0 && !watch.closed) watch.subscriber.deliver(fresh)
  }

  private close(watch: Watch): void {
    this.remove(watch)
    watch.subscriber.end()
  }

  private remove(watch: Watch): void {
    if (watch.closed) return
    watch.closed = true
    this.count -= 1
    const watches = this.watches.get(watch.orderKey)
    watches?.delete(watch)
    if (watches?.size === 0) this.watches.delete(watch.orderKey)
  }

  private async loop(): Promise<void> {
    const { reader } = this.options
    let failures = 0
    while (!this.stopping) {
      if (this.count === 0) {
        // Nobody watches: stop following; the next watcher catches up from its order's stream.
        this.cursor = undefined
        this.following = deferred()
        await new Promise<void>((resolve) => (this.wake = resolve))
        this.wake = undefined
        continue
      }
      try {
        if (this.cursor === undefined) {
          const [last] = await reader.xrevrange(this.options.log, '+', '-', 'COUNT', 1)
          this.cursor = last?.[0] ?? '0-0'
          this.following.resolve()
        }
        const reply = await reader.xread(
          'COUNT',
          BATCH,
          'BLOCK',
          this.options.blockMs ?? 5000,
          'STREAMS',
          this.options.log,
          this.cursor,
        )
        for (const [, entries] of reply ?? []) this.dispatch(entries)
        if (failures > 0) this.log.info('reading order updates again')
        failures = 0
      } catch (error) {
        if (this.stopping) break
        failures += 1
        if (failures === 1 || failures % 30 === 0)
          this.log.warn({ err: error }, 'cannot read order updates; retrying')
        await sleep(delayAfter(reconnecting, failures))
      }
    }
  }

  /** Hands each global-log entry to the watchers of its order; the others are not decoded. */
  private dispatch(entries: readonly [string, string[]][]): void {
    for (const [id, fields] of entries) {
      this.cursor = id
      const watches = this.watches.get(orderOf(fields) as OrderKey)
      if (!watches) continue
      let event: StoredOrderEvent
      try {
        event = decodeOrderEntry(id, fields)
      } catch (error) {
        this.log.error({ err: error, id }, 'skipping a global log entry that does not decode')
        continue
      }
      for (const watch of [...watches]) this.offer(watch, [event])
    }
  }
}

/** The `order` field of a global-log entry. */
function orderOf(fields: readonly string[]): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'order') return fields[i + 1]
  return undefined
}

/** A promise and the function that resolves it (Promise.withResolvers needs Node 22). */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}
