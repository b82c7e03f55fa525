import type { Redis } from 'ioredis'
import { orderEvents } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import type { Keys } from '../platform/keys'
import { compareStreamIds, fieldRecord } from '../platform/redis'

/** One entry of the global log, decoded; `order` is the order it belongs to. */
export interface LogEvent extends StoredOrderEvent {
  readonly order: string
}

/** A decoded entry, or the reason it cannot be used (reported with its stream id, then skipped). */
export type LogEntry = LogEvent | MalformedEntry

/** Which events of the log to show: one order's, one type's, or any. */
export interface LogFilter {
  readonly order?: string
  readonly type?: string
}

export const matchesFilter = (entry: LogEvent, { order, type }: LogFilter): boolean =>
  (order === undefined || entry.order === order) &&
  (type === undefined || entry.event.$name === type)

/** The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if there is one. */
export function traceIdOf(carrier: Readonly<Record<string, string>>): string | undefined {
  const match = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(
    carrier.traceparent ?? '',
  )
  return match && !/^0+$/.test(match[1]!) ? match[1] : undefined
}

const KNOWN_TYPES: ReadonlySet<string> = new Set(orderEvents.map((message) => message.$name))

/**
 * Decodes an entry of an order stream (`order` absent) or of the global log. An event type this
 * version of Bakery does not know is named as such, not buried in a decoder's report.
 */
export function decodeLogEntry(id: string, fields: readonly string[], order?: string): LogEntry {
  const record = fieldRecord(fields)
  const type = record.type
  if (type !== undefined && !KNOWN_TYPES.has(type))
    return new MalformedEntry(id, `unknown event type ${JSON.stringify(type)}`)
  const logOrder = order ?? record.order
  if (logOrder === undefined) return new MalformedEntry(id, 'it names no order')
  let stored: StoredOrderEvent
  try {
    stored = decodeOrderEntry(id, fields)
  } catch (error) {
    if (error instanceof MalformedEntry) return error
    throw error
  }
  if (stored.event.orderKey !== logOrder)
    return new MalformedEntry(
      id,
      `it is filed under order ${logOrder} but its event is for ${stored.event.orderKey}`,
    )
  return { ...stored, order: logOrder }
}

export interface LogBatch {
  readonly entries: readonly LogEntry[]
  /** The id of the last entry read, decoded or not. */
  readonly lastId: string
}

export interface LogRange {
  /** First stream id to read (inclusive); default the start of the log. */
  readonly start?: string
  /** Last stream id to read (inclusive); default the end of the log when each batch is read. */
  readonly end?: string
  /** Entries per XRANGE. */
  readonly batchSize: number
}

/**
 * Reads the global log in batches of `batchSize`, oldest first: however long the log, only two
 * batches are held at a time, the one being used and the next, read ahead meanwhile.
 */
export async function* readLog(
  redis: Redis,
  keys: Keys,
  { start = '-', end = '+', batchSize }: LogRange,
): AsyncGenerator<LogBatch> {
  const read = (from: string) => redis.xrange(keys.events, from, end, 'COUNT', batchSize)
  let next: Promise<[string, string[]][]> | undefined = read(start)
  try {
    while (next) {
      const raw = await next
      next = undefined
      if (raw.length === 0) return
      const lastId = raw[raw.length - 1]![0]
      if (raw.length === batchSize) next = read(`(${lastId}`)
      yield { entries: raw.map(([id, fields]) => decodeLogEntry(id, fields)), lastId }
    }
  } finally {
    // A reader that stopped early leaves the read-ahead unused; its failure is of no interest.
    next?.catch(() => undefined)
  }
}

/** The id of the newest entry of the global log, or undefined when it is empty. */
export async function lastLogId(redis: Redis, keys: Keys): Promise<string | undefined> {
  const [newest] = await redis.xrevrange(keys.events, '+', '-', 'COUNT', 1)
  return newest?.[0]
}

export interface LogFollow {
  /** The id after which to start: the last entry already read. */
  readonly after: string
  /** Entries before this stream id are passed over; default none. */
  readonly start?: string
  /** Entries per XREAD. */
  readonly batchSize: number
  readonly signal: AbortSignal
}

const FOLLOW_BLOCK_MS = 500

/**
 * Tails the global log, yielding each entry as it is appended, until `signal` aborts or the reader
 * stops.
 */
export async function* followLog(
  redis: Redis,
  keys: Keys,
  { after, start = '-', batchSize, signal }: LogFollow,
): AsyncGenerator<LogEntry> {
  // A blocked XREAD holds its connection; the main one stays free for everything else.
  const reader = redis.duplicate()
  reader.on('error', () => undefined)
  let lastId = after
  try {
    while (!signal.aborted) {
      const result = await reader.xread(
        'COUNT',
        batchSize,
        'BLOCK',
        FOLLOW_BLOCK_MS,
        'STREAMS',
        keys.events,
        lastId,
      )
      if (!result) continue
      for (const [, entries] of result)
        for (const [id, fields] of entries) {
          lastId = id
          // A start in the future: entries before it are not shown, even when following.
          if (start !== '-' && compareStreamIds(id, start) < 0) continue
          if (signal.aborted) return
          yield decodeLogEntry(id, fields)
        }
    }
  } finally {
    reader.disconnect()
  }
}
