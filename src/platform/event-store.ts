import { randomBytes } from 'node:crypto'
import type { ChainableCommander } from 'ioredis'
import { timestamp, type MessageKind } from '../messages'
import { OutboxFull, VersionConflict } from './errors'
import type { Keys } from './keys'
import { currentTrace, decodeEntry, type EventCodec, type StoredEvent } from './stored-events'
import { NOT_WAITING, writeReplicated, type Replication } from './replication'
import type { ScriptedRedis } from './scripts'

/** A message the relay must put on the bus because events were appended. */
export interface OutboxMessage {
  readonly kind: MessageKind
  readonly message: { readonly $name: string }
}

/**
 * The fields of an order's read-model hash (its `version` is set by the append), written with the
 * events that produce it.
 */
export type ViewFields = Readonly<Record<string, string>>

export interface AppendOptions {
  /**
   * Refuse the append (OutboxFull) while the outbox holds this many entries or more; 0: no limit.
   * Checked in the append's own script, so it costs no round trip.
   */
  readonly outboxLimit?: number
  /** The order's read-model view after these events, saved with them if newer than the stored. */
  readonly view?: ViewFields
}

/** An append that may happen once per claim, e.g. per `Idempotency-Key`. */
export interface Claim {
  /** The Redis key that holds the claim (see Keys.idempotency). */
  readonly key: string
  /** What the claim remembers, returned to every later append with the same claim. */
  readonly value: string
  readonly ttlSeconds: number
}

export type AppendOnceResult =
  | { readonly appended: true; readonly version: number }
  | { readonly appended: false; readonly claimedBy: string }

/**
 * Ids that tell one append from another: random per process, then a counter (a random id per
 * append would cost a CSPRNG call per order).
 */
const appendIds = { prefix: randomBytes(9).toString('base64url'), next: 0 }
const nextAppendId = () => `${appendIds.prefix}.${(appendIds.next++).toString(36)}`

/** The event log: one Redis stream per order plus one global stream, and the outbox beside them. */
export class EventStore<E extends { readonly $name: string }> {
  constructor(
    private readonly redis: ScriptedRedis,
    readonly keys: Keys,
    /** Decodes the events read back (the domain's event union). */
    private readonly codec: EventCodec<E>,
    private readonly now: () => Date = () => new Date(),
    private readonly replication: Replication = NOT_WAITING,
  ) {}

  /**
   * Appends `events` to the order's stream if it is at `expectedVersion` (0: the stream must not
   * exist), with `outbox` messages to be relayed, and the order's read-model view after them if
   * `options.view` gives it. Returns the new version.
   * @throws VersionConflict when another writer got there first.
   * @throws OutboxFull when `options.outboxLimit` is reached.
   */
  async append(
    orderKey: string,
    expectedVersion: number,
    events: readonly E[],
    outbox: readonly OutboxMessage[],
    options: AppendOptions = {},
  ): Promise<number> {
    const { keys, args } = this.appendArguments(orderKey, expectedVersion, events, outbox, options)
    return this.rethrowConflict(orderKey, expectedVersion, () =>
      this.replicated((redis) => redis.bakeryAppend(...keys, ...args)),
    )
  }

  /**
   * Like `append`, but only if `claim` is not held; the append and taking the claim are one
   * atomic step. When the claim is held, nothing is written and its value is returned.
   */
  async appendOnce(
    claim: Claim,
    orderKey: string,
    expectedVersion: number,
    events: readonly E[],
    outbox: readonly OutboxMessage[],
    options: AppendOptions = {},
  ): Promise<AppendOnceResult> {
    const { keys, args } = this.appendArguments(orderKey, expectedVersion, events, outbox, options)
    const reply = await this.rethrowConflict(orderKey, expectedVersion, () =>
      this.replicated((redis) =>
        redis.bakeryAppendOnce(...keys, claim.key, claim.value, claim.ttlSeconds, ...args),
      ),
    )
    return reply[0] === 'appended'
      ? { appended: true, version: reply[1] }
      : { appended: false, claimedBy: reply[1] }
  }

  private appendArguments(
    orderKey: string,
    expectedVersion: number,
    events: readonly E[],
    outbox: readonly OutboxMessage[],
    { outboxLimit = 0, view }: AppendOptions,
  ) {
    // The keys of the order's partition: its stream, global log, outbox and generation pointer.
    const partition = this.keys.of(orderKey)
    const keys = [
      partition.orderStream(orderKey),
      partition.events,
      partition.outbox,
      partition.viewGeneration,
    ] as const
    const args: (string | number)[] = [
      expectedVersion,
      nextAppendId(),
      outboxLimit,
      orderKey,
      timestamp(this.now()),
      events.length,
      JSON.stringify(currentTrace()),
      outbox.length,
      view ? partition.viewPrefix : '',
    ]
    for (const event of events) args.push(event.$name, JSON.stringify(event))
    for (const entry of outbox) args.push(entry.kind, JSON.stringify(entry.message))
    if (view) for (const [field, value] of Object.entries(view)) args.push(field, value)
    return { keys, args }
  }

  /** The write, with WAIT for the replicas the store requires (see writeReplicated). */
  private replicated<T>(
    write: (redis: ScriptedRedis | ChainableCommander) => Promise<T> | ChainableCommander,
  ): Promise<T> {
    return writeReplicated(this.redis, this.replication, write)
  }

  private async rethrowConflict<T>(
    orderKey: string,
    expectedVersion: number,
    write: () => Promise<T>,
  ): Promise<T> {
    try {
      return await write()
    } catch (error) {
      const message = error instanceof Error ? error.message : ''
      const match = /^WRONGVERSION (\d+)/.exec(message)
      if (match) throw new VersionConflict(orderKey, expectedVersion, Number(match[1]))
      const full = /^OUTBOXFULL (\d+)/.exec(message)
      if (full) throw new OutboxFull(Number(full[1]))
      throw error
    }
  }

  /** How many events the order has (0: no such order). */
  async version(orderKey: string): Promise<number> {
    return this.redis.xlen(this.keys.orderStream(orderKey))
  }

  /**
   * The order's history after `afterVersion` (all of it by default), oldest first; empty when
   * the order does not exist.
   */
  async read(orderKey: string, afterVersion = 0): Promise<StoredEvent<E>[]> {
    const entries = await this.redis.xrange(this.keys.orderStream(orderKey), '-', '+')
    // An entry's position is its version (streams are never trimmed): what the caller already
    // folded is not decoded again.
    return entries.slice(afterVersion).map(([id, fields]) => decodeEntry(this.codec, id, fields))
  }

  /** The order's stream entries undecoded, for tools that report the ones that do not decode. */
  async entries(orderKey: string): Promise<[id: string, fields: string[]][]> {
    return this.redis.xrange(this.keys.orderStream(orderKey), '-', '+')
  }
}
