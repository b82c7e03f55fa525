import { randomBytes } from 'node:crypto'
import { context, propagation } from '@opentelemetry/api'
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { PathReporter } from 'io-ts/lib/PathReporter'
import type { Redis, Result } from 'ioredis'
import {
  NonNegativeInt,
  OrderEvent,
  Timestamp,
  timestamp,
  type BusMessage,
  type OrderKey,
} from '../messages'
import type { Keys } from './keys'
import { fieldRecord } from './redis'

/** W3C trace context headers (`traceparent`, `tracestate`), as a propagator writes them. */
export type TraceCarrier = Record<string, string>

export interface StoredEvent {
  /** Position in the order's stream, from 1. */
  readonly version: number
  readonly recordedAt: Timestamp
  readonly event: OrderEvent
  readonly trace: TraceCarrier
  /** The entry's id in the stream it was read from. */
  readonly streamId: string
}

/** A message the relay must put on the bus because events were appended. */
export interface OutboxMessage {
  readonly kind: 'command' | 'event'
  readonly message: BusMessage
}

export class VersionConflict extends Error {
  override readonly name = 'VersionConflict'
  constructor(
    readonly orderKey: string,
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`order ${orderKey} is at version ${actual}, expected ${expected}`)
  }
}

/** The outbox holds more than the limit the append was given: the bus is far behind. */
export class OutboxFull extends Error {
  override readonly name = 'OutboxFull'
  constructor(readonly limit: number) {
    super(`the outbox holds ${limit} entries or more`)
  }
}

/** A stream entry that does not decode: reported with its id, never silently used. */
export class MalformedEntry extends Error {
  override readonly name = 'MalformedEntry'
  constructor(
    readonly streamId: string,
    reason: string,
  ) {
    super(`stream entry ${streamId} is malformed: ${reason}`)
  }
}

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
// messages that announce it. Its arguments start at ARGV[o + 1], so that APPEND_ONCE can put its
// own in front.
const APPEND_BODY = `
if current ~= expected then
  return redis.error_reply('WRONGVERSION ' .. current)
end
local outboxLimit = tonumber(ARGV[o + 3])
if outboxLimit > 0 and redis.call('XLEN', KEYS[3]) >= outboxLimit then
  return redis.error_reply('OUTBOXFULL ' .. outboxLimit)
end
local orderKey, recordedAt, trace = ARGV[o + 4], ARGV[o + 5], ARGV[o + 7]
local i = o + 8
for n = 1, eventCount do
  local version = current + n
  local kind, event = ARGV[i], ARGV[i + 1]
  i = i + 2
  redis.call('XADD', KEYS[1], '*', 'version', version, 'type', kind, 'event', event,
    'recordedAt', recordedAt, 'trace', trace, 'append', appendId)
  redis.call('XADD', KEYS[2], '*', 'order', orderKey, 'version', version, 'type', kind,
    'event', event, 'recordedAt', recordedAt, 'trace', trace)
end
while i <= #ARGV do
  redis.call('XADD', KEYS[3], '*', 'order', orderKey, 'kind', ARGV[i], 'message', ARGV[i + 1],
    'trace', trace)
  i = i + 2
end
`

const APPEND = `local o = 0
local function done(version) return version end
${ALREADY_DONE}
${APPEND_BODY}
return done(current + eventCount)
`

// The same append, done only if the claim key (KEYS[4]) is free, which it then holds with
// ARGV[1] for ARGV[2] seconds: of concurrent appends with one claim, exactly one writes anything.
// The others get what the claim holds. A resent append is recognised before the claim is looked
// at: the claim it finds is its own.
const APPEND_ONCE = `local o = 2
local function done(version) return {'appended', version} end
${ALREADY_DONE}
local claimed = redis.call('GET', KEYS[4])
if claimed then return {'claimed', claimed} end
${APPEND_BODY}
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[2])
return done(current + eventCount)
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    bakeryAppend(
      orderStream: string,
      events: string,
      outbox: string,
      ...args: (string | number)[]
    ): Result<number, Context>
    bakeryAppendOnce(
      orderStream: string,
      events: string,
      outbox: string,
      claim: string,
      ...args: (string | number)[]
    ): Result<['appended', number] | ['claimed', string], Context>
  }
}

export interface AppendOptions {
  /**
   * Refuse the append (OutboxFull) while the outbox holds this many entries or more; 0: no limit.
   * Checked in the append's own script, so it costs no round trip.
   */
  readonly outboxLimit?: number
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

const Envelope = t.type({
  version: t.string,
  event: t.string,
  recordedAt: Timestamp,
  trace: t.string,
})

const TraceCarrierCodec = t.record(t.string, t.string)

export function parseTrace(raw: string): TraceCarrier {
  if (raw === '') return {}
  try {
    const parsed: unknown = JSON.parse(raw)
    return TraceCarrierCodec.is(parsed) ? parsed : {}
  } catch {
    return {}
  }
}

/** The active trace context, to be stored beside what is written so a later hop can continue it. */
export function currentTrace(): TraceCarrier {
  const carrier: TraceCarrier = {}
  propagation.inject(context.active(), carrier)
  return carrier
}

/** Decodes one event-log entry (order stream or global log). */
export function decodeEntry(streamId: string, fields: readonly string[]): StoredEvent {
  const envelope = Envelope.decode(fieldRecord(fields))
  if (isLeft(envelope)) throw new MalformedEntry(streamId, PathReporter.report(envelope).join('; '))
  const version = NonNegativeInt.decode(Number(envelope.right.version))
  if (isLeft(version) || version.right < 1)
    throw new MalformedEntry(
      streamId,
      `version ${envelope.right.version} is not a positive integer`,
    )
  let json: unknown
  try {
    json = JSON.parse(envelope.right.event)
  } catch {
    throw new MalformedEntry(streamId, 'event is not JSON')
  }
  const event = OrderEvent.decode(json)
  if (isLeft(event)) throw new MalformedEntry(streamId, PathReporter.report(event).join('; '))
  return {
    version: version.right,
    recordedAt: envelope.right.recordedAt,
    event: event.right,
    trace: parseTrace(envelope.right.trace),
    streamId,
  }
}

/**
 * Ids that tell one append from another: random per process, then a counter (a random id per
 * append would cost a CSPRNG call per order).
 */
const appendIds = { prefix: randomBytes(9).toString('base64url'), next: 0 }
const nextAppendId = () => `${appendIds.prefix}.${(appendIds.next++).toString(36)}`

/** The event log: one Redis stream per order plus one global stream, and the outbox beside them. */
export class EventStore {
  constructor(
    private readonly redis: Redis,
    readonly keys: Keys,
    private readonly now: () => Date = () => new Date(),
  ) {
    redis.defineCommand('bakeryAppend', { numberOfKeys: 3, lua: APPEND })
    redis.defineCommand('bakeryAppendOnce', { numberOfKeys: 4, lua: APPEND_ONCE })
  }

  /**
   * Appends `events` to the order's stream if it is at `expectedVersion` (0: the stream must not
   * exist), with `outbox` messages to be relayed. Returns the new version.
   * @throws VersionConflict when another writer got there first.
   * @throws OutboxFull when `options.outboxLimit` is reached.
   */
  async append(
    orderKey: OrderKey,
    expectedVersion: number,
    events: readonly OrderEvent[],
    outbox: readonly OutboxMessage[],
    options: AppendOptions = {},
  ): Promise<number> {
    const args = this.appendArguments(orderKey, expectedVersion, events, outbox, options)
    return this.rethrowConflict(orderKey, expectedVersion, () =>
      this.redis.bakeryAppend(
        this.keys.orderStream(orderKey),
        this.keys.events,
        this.keys.outbox,
        ...args,
      ),
    )
  }

  /**
   * Like `append`, but only if `claim` is not held; the append and taking the claim are one
   * atomic step. When the claim is held, nothing is written and its value is returned.
   */
  async appendOnce(
    claim: Claim,
    orderKey: OrderKey,
    expectedVersion: number,
    events: readonly OrderEvent[],
    outbox: readonly OutboxMessage[],
    options: AppendOptions = {},
  ): Promise<AppendOnceResult> {
    const args = this.appendArguments(orderKey, expectedVersion, events, outbox, options)
    const reply = await this.rethrowConflict(orderKey, expectedVersion, () =>
      this.redis.bakeryAppendOnce(
        this.keys.orderStream(orderKey),
        this.keys.events,
        this.keys.outbox,
        claim.key,
        claim.value,
        claim.ttlSeconds,
        ...args,
      ),
    )
    return reply[0] === 'appended'
      ? { appended: true, version: reply[1] }
      : { appended: false, claimedBy: reply[1] }
  }

  private appendArguments(
    orderKey: OrderKey,
    expectedVersion: number,
    events: readonly OrderEvent[],
    outbox: readonly OutboxMessage[],
    { outboxLimit = 0 }: AppendOptions,
  ): (string | number)[] {
    const args: (string | number)[] = [
      expectedVersion,
      nextAppendId(),
      outboxLimit,
      orderKey,
      timestamp(this.now()),
      events.length,
      JSON.stringify(currentTrace()),
    ]
    for (const event of events) args.push(event.$name, JSON.stringify(event))
    for (const entry of outbox) args.push(entry.kind, JSON.stringify(entry.message))
    return args
  }

  private async rethrowConflict<T>(
    orderKey: OrderKey,
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
  async version(orderKey: OrderKey): Promise<number> {
    return this.redis.xlen(this.keys.orderStream(orderKey))
  }

  /**
   * The order's history after `afterVersion` (all of it by default), oldest first; empty when
   * the order does not exist.
   */
  async read(orderKey: OrderKey, afterVersion = 0): Promise<StoredEvent[]> {
    const entries = await this.redis.xrange(this.keys.orderStream(orderKey), '-', '+')
    // An entry's position is its version (streams are never trimmed): what the caller already
    // folded is not decoded again.
    return entries.slice(afterVersion).map(([id, fields]) => decodeEntry(id, fields))
  }

  /** The order's stream entries undecoded, for tools that report the ones that do not decode. */
  async entries(orderKey: OrderKey): Promise<[id: string, fields: string[]][]> {
    return this.redis.xrange(this.keys.orderStream(orderKey), '-', '+')
  }
}
