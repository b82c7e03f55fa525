import { setTimeout as sleep } from 'node:timers/promises'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { context, propagation } from '@opentelemetry/api'
import type { BusInstance } from '@node-ts/bus-core'
import { isLeft } from 'fp-ts/lib/Either'
import { describeFieldErrors, type AnyMessageDefinition, type MessageKind } from '../messages'
import { parseTrace } from './stored-events'
import type { Logger } from './logger'
import { fieldRecord } from './redis'
import { metrics } from './metrics'
import { park } from './outbox-parking'
import { delayAfter, reconnecting } from './backoff'
import type { ScriptedRedis } from './scripts'

export const RELAY_GROUP = 'relay'

export interface RelayOptions {
  /** A connection of its own: the relay blocks on it while waiting for entries. */
  readonly redis: ScriptedRedis
  readonly outboxKey: string
  /** Where entries that do not decode are kept (Keys.parked). */
  readonly parkedKey: string
  readonly bus: BusInstance
  /** Every message the relay may meet; an entry naming another is parked. */
  readonly messages: readonly AnyMessageDefinition[]
  /** The message's correlation id on the bus (its order's key, say). */
  readonly correlationIdOf: (message: object) => string | undefined
  readonly logger: Logger
  readonly batchSize?: number
  /** An entry pending this long on another relay is taken over (that relay is presumed dead). */
  readonly claimAfterMs?: number
}

interface OutboxEntry {
  readonly id: string
  readonly fields: Record<string, string>
}

/** A decoded entry: the message, and whether it is sent (a command) or published (an event). */
interface Outgoing {
  readonly kind: MessageKind
  readonly message: Message
}

type Message = { readonly $name: string; readonly $version: number }

/** An entry the relay cannot decode, and why. */
interface Undecodable {
  readonly entry: OutboxEntry
  readonly reason: string
}

/**
 * Moves outbox entries to the bus. An entry is acknowledged (and deleted) only after RabbitMQ
 * confirmed its publish; a crash in between means it is sent again, which the consumers tolerate.
 * An entry that does not decode (written by a newer Bakery, say) is parked, in the same step.
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

  private readonly definitions: ReadonlyMap<string, AnyMessageDefinition>

  constructor(private readonly options: RelayOptions) {
    this.log = options.logger.child({ component: 'outbox-relay' })
    this.definitions = new Map(options.messages.map((definition) => [definition.$name, definition]))
  }

  start(): void {
    // A reply lost with its connection is no error here: ioredis sends the command again once
    // reconnected. A read of new entries ('>') sent again skips the entries the lost reply handed
    // this relay; they wait in its pending list, which it reads first after every (re)connection.
    this.options.redis.on('ready', () => (this.backlog = true))
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
    let failures = 0
    while (!this.stopping) {
      try {
        if (!this.grouped) await this.ensureGroup()
        const entries = await this.nextBatch()
        const { delivered, undecodable } = await this.deliver(entries)
        await this.settle(delivered, undecodable)
        const unsettled = entries.length - delivered.length - undecodable.length
        if (unsettled > 0) throw new Error(`${unsettled} messages not confirmed`)
        if (failures > 0) this.log.info('relaying again')
        failures = 0
      } catch (error) {
        if (this.stopping) break
        failures += 1
        this.backlog = true
        this.grouped = false
        if (failures === 1 || failures % 30 === 0)
          this.log.warn({ err: error }, 'cannot relay the outbox yet; retrying')
        await sleep(delayAfter(reconnecting, failures))
      }
    }
  }

  /** Parks what does not decode, then acknowledges and deletes what was published. */
  private async settle(delivered: string[], undecodable: Undecodable[]): Promise<void> {
    const { redis, outboxKey, parkedKey } = this.options
    for (const { entry, reason } of undecodable) {
      const where = { outbox: outboxKey, parked: parkedKey, group: RELAY_GROUP }
      await park(redis, where, entry.id, entry.fields, reason)
      metrics.outboxParked()
      this.log.error(
        { id: entry.id, reason, parked: parkedKey },
        'outbox entry cannot be decoded; parked (bakery dead-letters list)',
      )
    }
    if (delivered.length === 0) return
    await redis
      .multi()
      .xack(outboxKey, RELAY_GROUP, ...delivered)
      .xdel(outboxKey, ...delivered)
      .exec()
    for (const id of delivered) metrics.relayed(id)
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

  /** Publishes the entries at once: the ids the broker confirmed, and those that do not decode. */
  private async deliver(
    entries: readonly OutboxEntry[],
  ): Promise<{ delivered: string[]; undecodable: Undecodable[] }> {
    const delivered: string[] = []
    const undecodable: Undecodable[] = []
    const published: Promise<void>[] = []
    const publishedIds: string[] = []
    for (const entry of entries) {
      // An entry deleted after it was read (another relay finished it) comes back without fields.
      if (Object.keys(entry.fields).length === 0) {
        delivered.push(entry.id)
        continue
      }
      const outgoing = decodeOutboxEntry(this.definitions, entry.fields)
      if (typeof outgoing === 'string') {
        undecodable.push({ entry, reason: outgoing })
        continue
      }
      published.push(this.publish(entry, outgoing))
      publishedIds.push(entry.id)
    }
    const results = await Promise.allSettled(published)
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') delivered.push(publishedIds[i]!)
    })
    return { delivered, undecodable }
  }

  private async publish(entry: OutboxEntry, { kind, message }: Outgoing): Promise<void> {
    const { bus, correlationIdOf } = this.options
    const trace = parseTrace(entry.fields.trace ?? '')
    const correlationId = correlationIdOf(message)
    const options = { ...(correlationId === undefined ? {} : { correlationId }), attributes: {} }
    // The publish continues the trace of the request that wrote the entry.
    const parent = propagation.extract(context.active(), trace)
    await context.with(parent, () =>
      kind === 'command' ? bus.send(message, options) : bus.publish(message, options),
    )
  }
}

/** The entry's message and kind, or why this version of Bakery cannot publish it. */
function decodeOutboxEntry(
  definitions: ReadonlyMap<string, AnyMessageDefinition>,
  fields: Record<string, string>,
): Outgoing | string {
  const { kind } = fields
  if (kind !== 'command' && kind !== 'event') return `unknown kind ${JSON.stringify(kind)}`
  let json: unknown
  try {
    json = JSON.parse(fields.message ?? '')
  } catch {
    return 'the message is not JSON'
  }
  const name: unknown = (json as { $name?: unknown } | null)?.$name
  const definition = typeof name === 'string' ? definitions.get(name) : undefined
  if (!definition) return `unknown message ${JSON.stringify(name)}`
  if (definition.kind !== kind)
    return `${definition.$name} is a ${definition.kind}, but the entry says ${kind}`
  const decoded = definition.codec.decode(json)
  if (isLeft(decoded))
    return `the message is not a valid ${definition.$name} v${definition.$version}: ${describeFieldErrors(decoded.left)}`
  return { kind, message: decoded.right as Message }
}

async function readGroup(
  redis: ScriptedRedis,
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
