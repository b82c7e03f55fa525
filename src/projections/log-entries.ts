import type { RedisClient } from '../platform/redis'
import { orderEvents } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import type { PartitionKeys } from '../platform/keys'
import { compareStreamIds, duplicateClient, fieldRecord } from '../platform/redis'

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
 * Reads a partition's global log in batches of `batchSize`, oldest first: however long the log, only two
 * batches are held at a time, the one being used and the next, read ahead meanwhile.
 */
export async function* readLog(
  redis: RedisClient,
  partition: PartitionKeys,
  { start = '-', end = '+', batchSize }: LogRange,
): AsyncGenerator<LogBatch> {
  const read = (from: string) => redis.xrange(partition.events, from, end, 'COUNT', batchSize)
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

/** The id of the newest entry of a partition's global log, or undefined when it is empty. */
export async function lastLogId(
  redis: RedisClient,
  partition: PartitionKeys,
): Promise<string | undefined> {
  const [newest] = await redis.xrevrange(partition.events, '+', '-', 'COUNT', 1)
  return newest?.[0]
}

/**
 * The global logs of several partitions as one, oldest first by entry id; each entry comes with
 * the position in `partitions` of the one it was read from. Each partition's ids come from the
 * clock of the Redis that holds it, so across partitions the order is as good as those clocks
 * agree; within an order (one partition) it is exact.
 */
export async function* readMergedLog(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
  range: LogRange,
): AsyncGenerator<{ readonly from: number; readonly entry: LogEntry }> {
  const readers = partitions.map((partition) => entriesOf(redis, partition, range))
  const next = async (i: number) => {
    const read = await readers[i]!.next()
    return read.done ? undefined : read.value
  }
  try {
    // The next entry of each partition; undefined once it has no more.
    const heads = await Promise.all(readers.map((_, i) => next(i)))
    for (;;) {
      let oldest = -1
      for (const [i, head] of heads.entries())
        if (head && (oldest < 0 || compareStreamIds(head.streamId, heads[oldest]!.streamId) < 0))
          oldest = i
      if (oldest < 0) return
      yield { from: oldest, entry: heads[oldest]! }
      heads[oldest] = await next(oldest)
    }
  } finally {
    await Promise.all(readers.map((reader) => reader.return(undefined)))
  }
}

async function* entriesOf(
  redis: RedisClient,
  partition: PartitionKeys,
  range: LogRange,
): AsyncGenerator<LogEntry, void, undefined> {
  for await (const batch of readLog(redis, partition, range)) yield* batch.entries
}

export interface LogFollow {
  /** By partition (in the order given), the id after which to start: the last entry read. */
  readonly after: readonly string[]
  /** Entries before this stream id are passed over; default none. */
  readonly start?: string
  /** Entries per XREAD. */
  readonly batchSize: number
  readonly signal: AbortSignal
}

const FOLLOW_BLOCK_MS = 500

/**
 * Tails the global logs of `partitions`, yielding each entry as it is appended, until `signal`
 * aborts or the reader stops. Each partition is followed by a blocking XREAD on a connection of
 * its own (a blocked read holds its connection, and on a Redis Cluster one read cannot wait on
 * several partitions); entries come in the order they arrive.
 */
export async function* followLog(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
  { after, start = '-', batchSize, signal }: LogFollow,
): AsyncGenerator<LogEntry> {
  const readers = partitions.map(() => duplicateClient(redis))
  const arrived: LogEntry[] = []
  let wake: (() => void) | undefined
  let stopped = false
  let failure: Error | undefined
  const tail = async (partition: PartitionKeys, i: number) => {
    let lastId = after[i] ?? '0-0'
    while (!signal.aborted && !stopped) {
      const reply = await readers[i]!.xread(
        'COUNT',
        batchSize,
        'BLOCK',
        FOLLOW_BLOCK_MS,
        'STREAMS',
        partition.events,
        lastId,
      )
      for (const [, entries] of reply ?? [])
        for (const [id, fields] of entries) {
          lastId = id
          // A start in the future: entries before it are not shown, even when following.
          if (start !== '-' && compareStreamIds(id, start) < 0) continue
          arrived.push(decodeLogEntry(id, fields))
        }
      wake?.()
    }
  }
  const tails = Promise.all(partitions.map(tail)).then(
    () => undefined,
    (error: unknown) => {
      if (!stopped) failure = error instanceof Error ? error : new Error(String(error))
      wake?.()
    },
  )
  const onAbort = () => wake?.()
  signal.addEventListener('abort', onAbort)
  try {
    for (;;) {
      for (let entry = arrived.shift(); entry; entry = arrived.shift()) {
        if (signal.aborted) return
        yield entry
      }
      if (failure) throw failure
      if (signal.aborted) return
      // Woken by an arrival, an abort, or at the latest when a blocking read times out.
      await new Promise<void>((resolve) => (wake = resolve))
      wake = undefined
    }
  } finally {
    stopped = true
    signal.removeEventListener('abort', onAbort)
    for (const reader of readers) reader.disconnect()
    await tails
  }
}
