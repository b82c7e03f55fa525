import { setTimeout as sleep } from 'node:timers/promises'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { context, propagation } from '@opentelemetry/api'
import type { BusInstance } from '@node-ts/bus-core'
import { isLeft } from 'fp-ts/lib/Either'
import type { Redis } from 'ioredis'
import { OrderBaked, PlaceOrder, type BusMessage } from '../messages'
import { parseTrace } from './event-store'
import type { Logger } from './logger'
import { fieldRecord } from './redis'
import { metrics } from './metrics'

export const RELAY_GROUP = 'relay'

export interface RelayOptions {
  /** A connection of its own: the relay blocks on it while waiting for entries. */
  readonly redis: Redis
  readonly outboxKey: string
  readonly bus: BusInstance
  readonly logger: Logger
  readonly batchSize?: number
  /** An entry pending this long on another relay is taken over (that relay is presumed dead). */
  readonly claimAfterMs?: number
}

interface OutboxEntry {
  readonly id: string
  readonly fields: Record<string, string>
}

/**
 * Moves outbox entries to the bus. An entry is acknowledged (and deleted) only after RabbitMQ
 * confirmed its publish; a crash in between means it is sent again, which the consumers tolerate.
 * Relays in several processes share the outbox through one consumer group.
 */
export class OutboxRelay {
  private readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  private readonly log: Logger
  private running: Promise<void> | undefined
  private stopping = false
  private backlog = true
  /** Whether the consumer group is known to exist; checked again after any failure. */
  private grouped = false
  private lastClaim = 0

  constructor(private readonly options: RelayOptions) {
    this.log = options.logger.child({ component: 'outbox-relay' })
  }

  start(): void {
    this.running ??= this.loop()
  }

  /** Stops after the batch in hand; undelivered entries stay in the outbox for the next relay. */
  async stop(): Promise<void> {
    this.stopping = true
    // A blocking read returns within a second; a Redis that is away would hold it forever.
    // Not awaited after that: a command queued for an absent Redis never settles.
    await Promise.race([this.running, sleep(2000)])
    this.options.redis.disconnect()
  }

  private async loop(): Promise<void> {
    const { redis, outboxKey } = this.options
    let failures = 0
    while (!this.stopping) {
      try {
        if (!this.grouped) await this.ensureGroup()
        const entries = await this.nextBatch()
        const delivered = await this.deliver(entries)
        if (delivered.length > 0) {
          await redis
            .multi()
            .xack(outboxKey, RELAY_GROUP, ...delivered)
            .xdel(outboxKey, ...delivered)
            .exec()
          for (const id of delivered) metrics.relayed(id)
        }
        if (delivered.length < entries.length)
          throw new Error(`${entries.length - delivered.length} messages not confirmed`)
        if (failures > 0) this.log.info('relaying again')
        failures = 0
      } catch (error) {
        if (this.stopping) break
        failures += 1
        this.backlog = true
        this.grouped = false
        if (failures === 1 || failures % 30 === 0)
          this.log.warn({ err: error }, 'cannot relay the outbox yet; retrying')
        await sleep(Math.min(100 * 2 ** failures, 5000))
      }
    }
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.options.redis.xgroup(
        'CREATE',
        this.options.outboxKey,
        RELAY_GROUP,
        '0',
        'MKSTREAM',
      )
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error
    }
    this.grouped = true
  }

  /** Its own unconfirmed entries first, then entries of dead relays, then new ones. */
  private async nextBatch(): Promise<OutboxEntry[]> {
    const { redis, outboxKey } = this.options
    const count = this.options.batchSize ?? 256
    if (this.backlog) {
      const own = await readGroup(redis, outboxKey, this.consumer, count, '0')
      if (own.length > 0) return own
      this.backlog = false
    }
    const claimAfterMs = this.options.claimAfterMs ?? 15_000
    if (Date.now() - this.lastClaim > claimAfterMs / 3) {
      this.lastClaim = Date.now()
      const [, claimed] = (await redis.xautoclaim(
        outboxKey,
        RELAY_GROUP,
        this.consumer,
        claimAfterMs,
        '0-0',
        'COUNT',
        count,
      )) as [string, [string, string[]][]]
      if (claimed.length > 0) {
        this.log.info({ entries: claimed.length }, 'took over entries of a relay that stopped')
        return claimed.map(toEntry)
      }
    }
    return readGroup(redis, outboxKey, this.consumer, count, '>', 1000)
  }

  /** Publishes the entries at once; returns the ids the broker confirmed. */
  private async deliver(entries: readonly OutboxEntry[]): Promise<string[]> {
    const results = await Promise.allSettled(entries.map((entry) => this.publish(entry)))
    const delivered: string[] = []
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') delivered.push(entries[i]!.id)
    })
    return delivered
  }

  private async publish(entry: OutboxEntry): Promise<void> {
    // An entry deleted after it was read (another relay finished it) comes back without fields.
    if (Object.keys(entry.fields).length === 0) return
    const message = decodeOutboxMessage(entry.fields)
    if (!message) {
      // Written by something other than Bakery's append script: keep it out of the way, loudly.
      this.log.error({ id: entry.id, fields: entry.fields }, 'malformed outbox entry dropped')
      return
    }
    const { bus } = this.options
    const trace = parseTrace(entry.fields.trace ?? '')
    const options = { correlationId: message.orderKey, attributes: {} }
    // The publish continues the trace of the request that wrote the entry.
    const parent = propagation.extract(context.active(), trace)
    await context.with(parent, () =>
      message.$name === PlaceOrder.$name
        ? bus.send(message, options)
        : bus.publish(message, options),
    )
  }
}

function decodeOutboxMessage(fields: Record<string, string>): BusMessage | undefined {
  let json: unknown
  try {
    json = JSON.parse(fields.message ?? '')
  } catch {
    return undefined
  }
  // Only the bus's messages: an entry for an exchange that is not declared would close the channel.
  const codec = fields.kind === 'command' ? PlaceOrder.codec : OrderBaked.codec
  const decoded = codec.decode(json)
  return isLeft(decoded) ? undefined : decoded.right
}

async function readGroup(
  redis: Redis,
  key: string,
  consumer: string,
  count: number,
  from: '0' | '>',
  blockMs?: number,
): Promise<OutboxEntry[]> {
  const args: (string | number)[] = ['GROUP', RELAY_GROUP, consumer, 'COUNT', count]
  if (blockMs !== undefined) args.push('BLOCK', blockMs)
  args.push('STREAMS', key, from)
  const reply = (await redis.call('XREADGROUP', ...args)) as
    | [string, [string, string[] | null][]][]
    | null
  const entries = reply?.[0]?.[1] ?? []
  return entries.map(([id, fields]) => toEntry([id, fields ?? []]))
}

function toEntry([id, fields]: [string, string[]]): OutboxEntry {
  return { id, fields: fieldRecord(fields) }
}
