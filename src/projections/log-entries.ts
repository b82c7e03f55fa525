import type { RedisClient } from '../platform/redis'
import { orderEvents } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import type { PartitionKeys } from '../platform/keys'
import { compareStreamIds, fieldRecord } from '../platform/redis'

/** One entry of the global log, decoded; `order` is the order it belongs to. */
export interface LogEvent extends StoredOrderEvent {
  readonly order: string
}

/** A decoded entry, or the reason it cannot be used (reported with its stream id, then skipped). */
export type LogEntry = LogEvent | MalformedEntry

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
 * The global logs of several partitions as one, oldest first by entry id. Each partition's ids come
 * from the clock of the Redis that holds it, so across partitions the order is as good as those
 * clocks agree; within an order (one partition) it is exact.
 */
export async function* readMergedLog(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
  range: LogRange,
): AsyncGenerator<{ readonly partition: number; readonly entry: LogEntry }> {
  const readers = partitions.map((partition) => entriesOf(redis, partition, range))
  try {
    const heads = await Promise.all(readers.map((reader) => reader.next()))
    for (;;) {
      let oldest: number | undefined
      for (const [i, head] of heads.entries()) {
        if (head.done) continue
        const current = oldest === undefined ? undefined : heads[oldest]!
        if (
          !current ||
          current.done ||
          compareStreamIds(head.value.streamId, current.value.streamId) < 0
        )
          oldest = i
      }
      if (oldest === undefined) return
      const head = heads[oldest]!
      if (head.done) return
      yield { partition: partitions[oldest]!.index, entry: head.value }
      heads[oldest] = await readers[oldest]!.next()
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
