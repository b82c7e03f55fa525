import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import type { OrderKey } from '../messages'
import { decodeEntry, type StoredEvent } from '../platform/event-store'
import type { Keys } from '../platform/keys'
import type { Logger } from '../platform/logger'
import { compareStreamIds } from '../platform/redis'

/** Someone waiting for an order's next events. */
export interface Subscriber {
  /** New events of the order, oldest first, each delivered once. */
  readonly deliver: (events: readonly StoredEvent[]) => void
  /** The feed is stopping: no more events will come. */
  readonly end: () => void
}

export interface OrderFeedOptions {
  /** A connection of its own: the feed blocks on it. */
  readonly reader: Redis
  /** Any other connection, to wake the reader when the set of orders watched changes. */
  readonly commands: Redis
  readonly keys: Keys
  readonly logger: Logger
  /** How long one XREAD blocks; it is re-issued at once, so this bounds nothing a client sees. */
  readonly blockMs?: number
}

interface Watch {
  readonly subscriber: Subscriber
  /** The last stream id this subscriber has seen. */
  after: string
}

/**
 * Changes to orders, read from Redis rather than from this process's memory, so that a client
 * sees every change whichever reception replica wrote it. One blocking XREAD covers every order
 * watched, on one connection: a reception holds one extra Redis connection however many clients
 * watch. When an order is watched that the pending XREAD does not cover, the read is cut short
 * with CLIENT UNBLOCK and re-issued with it.
 */
export class OrderFeed {
  private readonly watches = new Map<string, Set<Watch>>()
  private readonly log: Logger
  private running: Promise<void> | undefined
  private stopping = false
  private reading = false
  /** The set of streams changed since the pending XREAD was issued. */
  private changed = false
  private readerId: number | undefined
  private wake: (() => void) | undefined

  constructor(private readonly options: OrderFeedOptions) {
    this.log = options.logger.child({ component: 'order-feed' })
    // A reconnected reader is another client, with another id.
    options.reader.on('ready', () => (this.readerId = undefined))
  }

  start(): void {
    this.running ??= this.loop()
  }

  /** Ends every subscription and stops reading. */
  async stop(): Promise<void> {
    this.stopping = true
    for (const watches of this.watches.values()) for (const watch of watches) watch.subscriber.end()
    this.watches.clear()
    this.wake?.()
    await this.interrupt()
    this.options.reader.disconnect()
    await this.running
  }

  /** The number of subscriptions, for tests and metrics. */
  get size(): number {
    let size = 0
    for (const watches of this.watches.values()) size += watches.size
    return size
  }

  /**
   * Delivers the order's events that come after stream id `after` (the last one the subscriber
   * has) until the returned function is called.
   */
  subscribe(orderKey: OrderKey, after: string, subscriber: Subscriber): () => void {
    const stream = this.options.keys.orderStream(orderKey)
    const watch: Watch = { subscriber, after }
    let watches = this.watches.get(stream)
    if (!watches) {
      watches = new Set()
      this.watches.set(stream, watches)
      this.changed = true
      if (this.reading) void this.interrupt()
      this.wake?.()
    }
    watches.add(watch)
    return () => {
      const current = this.watches.get(stream)
      current?.delete(watch)
      // The pending XREAD may go on covering the stream; it is dropped from the next one.
      if (current?.size === 0) this.watches.delete(stream)
    }
  }

  private async loop(): Promise<void> {
    const { reader } = this.options
    let failures = 0
    while (!this.stopping) {
      if (this.watches.size === 0) {
        await new Promise<void>((resolve) => (this.wake = resolve))
        this.wake = undefined
        continue
      }
      try {
        this.readerId ??= Number(await reader.client('ID'))
        const streams = [...this.watches.keys()]
        const cursors = streams.map((stream) => earliest(this.watches.get(stream)))
        this.changed = false
        this.reading = true
        const reply = await reader.xread(
          'COUNT',
          100,
          'BLOCK',
          this.options.blockMs ?? 5000,
          'STREAMS',
          ...streams,
          ...cursors,
        )
        this.reading = false
        for (const [stream, entries] of reply ?? []) this.dispatch(stream, entries)
        if (failures > 0) this.log.info('reading order updates again')
        failures = 0
      } catch (error) {
        this.reading = false
        if (this.stopping) break
        failures += 1
        if (failures === 1 || failures % 30 === 0)
          this.log.warn({ err: error }, 'cannot read order updates; retrying')
        await sleep(Math.min(100 * 2 ** failures, 5000))
      }
    }
  }

  private dispatch(stream: string, entries: readonly [string, string[]][]): void {
    const events: StoredEvent[] = []
    for (const [id, fields] of entries) {
      try {
        events.push(decodeEntry(id, fields))
      } catch (error) {
        this.log.error(
          { err: error, stream },
          'skipping an order stream entry that does not decode',
        )
      }
    }
    const last = entries[entries.length - 1]?.[0]
    for (const watch of this.watches.get(stream) ?? []) {
      const fresh = events.filter((event) => compareStreamIds(event.streamId, watch.after) > 0)
      if (last && compareStreamIds(last, watch.after) > 0) watch.after = last
      if (fresh.length > 0) watch.subscriber.deliver(fresh)
    }
  }

  /**
   * Cuts the pending XREAD short. CLIENT UNBLOCK travels on another connection and may reach
   * Redis before the XREAD does (it answers 0 then): it is tried again for a little while.
   */
  private async interrupt(): Promise<void> {
    const id = this.readerId
    if (id === undefined) return
    for (
      let attempt = 0;
      attempt < 20 && this.reading && (this.changed || this.stopping);
      attempt++
    ) {
      try {
        if ((await this.options.commands.client('UNBLOCK', id)) === 1) return
      } catch {
        return // Redis is away; the reader's own retry covers it.
      }
      await sleep(5)
    }
  }
}

/** The earliest cursor among a stream's subscribers: the XREAD must cover all of them. */
function earliest(watches: ReadonlySet<Watch> | undefined): string {
  let min: string | undefined
  for (const watch of watches ?? [])
    if (!min || compareStreamIds(watch.after, min) < 0) min = watch.after
  return min ?? '$'
}
