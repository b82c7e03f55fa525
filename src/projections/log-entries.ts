import type { RedisClient } from '../platform/redis'
import { orderEvents } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import type { PartitionKeys } from '../platform/keys'
import { compareStreamIds, duplicateClient, fieldRecord } from '../platform/redis'
import { readSegment, segmentRange, type Archive, type RawEntry } from './archive'

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
  /** First stream id to read (inclusive, or exclusive as `(id`); default the start of the log. */
  readonly start?: string
  /** Last stream id to read (inclusive); default the end of the log when each batch is read. */
  readonly end?: string
  /** Entries per XRANGE. */
  readonly batchSize: number
  /**
   * The archive that holds the start of the log (`bakery archive`); without it only what Redis
   * still holds is read.
   */
  readonly archive?: Archive
}

/**
 * Reads a partition's global log in batches of `batchSize`, oldest first: its archived segments
 * when `range.archive` is given, then what Redis holds.
 */
export function readLog(
  redis: RedisClient,
  partition: PartitionKeys,
  range: LogRange,
): AsyncGenerator<LogBatch> {
  return range.archive
    ? readThroughArchive(redis, partition, range.archive, range)
    : readLive(redis, partition, range)
}

const toBatch = (raw: readonly RawEntry[]): LogBatch => ({
  entries: raw.map(([id, fields]) => decodeLogEntry(id, fields)),
  lastId: raw[raw.length - 1]![0],
})

/**
 * What Redis holds of a partition's global log, in batches: however long the log, only two
 * batches are held at a time, the one being used and the next, read ahead meanwhile.
 */
async function* readLive(
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
      if (raw.length === batchSize) next = read(`(${raw[raw.length - 1]![0]}`)
      yield toBatch(raw)
    }
  } finally {
    // A reader that stopped early leaves the read-ahead unused; its failure is of no interest.
    next?.catch(() => undefined)
  }
}

/**
 * A partition's archived segments, then what Redis holds after them. An archive run may commit
 * while this reads (its commit lists the segment and trims the log in one step), so after each
 * read from Redis the segment list is looked at again: a new segment is read before going on,
 * and what was already read is not read twice.
 */
async function* readThroughArchive(
  redis: RedisClient,
  partition: PartitionKeys,
  archive: Archive,
  { start = '-', end = '+', batchSize }: LogRange,
): AsyncGenerator<LogBatch> {
  // The id of the last entry read or passed over; everything up to it is done.
  let after: string | undefined
  let segmentsRead = 0
  const unread = (id: string) => after === undefined || compareStreamIds(id, after) > 0
  const wanted = (id: string) => unread(id) && afterStart(id, start)
  for (;;) {
    const segments = await redis.lrange(partition.archiveSegments, segmentsRead, -1)
    segmentsRead += segments.length
    for (const segment of segments) {
      const { first, last } = segmentRange(segment)
      if (pastEnd(first, end)) return
      // A segment that ends before what is wanted is passed over unread.
      if (wanted(last))
        for await (const raw of readSegment(archive.segmentPath(partition, segment), batchSize)) {
          const kept = raw.filter(([id]) => wanted(id))
          const stop = kept.findIndex(([id]) => pastEnd(id, end))
          const usable = stop < 0 ? kept : kept.slice(0, stop)
          if (usable.length > 0) yield toBatch(usable)
          if (stop >= 0) return
        }
      if (unread(last)) after = last
    }
    const from = after !== undefined && afterStart(after, start) ? `(${after}` : start
    const raw = await redis.xrange(partition.events, from, end, 'COUNT', batchSize)
    if ((await redis.llen(partition.archiveSegments)) > segmentsRead) continue
    if (raw.length === 0) return
    yield toBatch(raw)
    after = raw[raw.length - 1]![0]
    if (raw.length < batchSize) return
  }
}

/** Whether a stream id is at or after an XRANGE start bound (`-`, `id`, `(id`, or `ms`). */
function afterStart(id: string, start: string): boolean {
  if (start === '-') return true
  if (start.startsWith('(')) return compareStreamIds(id, start.slice(1)) > 0
  return compareStreamIds(id, start.includes('-') ? start : `${start}-0`) >= 0
}

/** Whether a stream id is past an XRANGE end bound (`+`, `id`, `(id`, or `ms`: all of it). */
function pastEnd(id: string, end: string): boolean {
  if (end === '+') return false
  if (end.startsWith('(')) return compareStreamIds(id, end.slice(1)) >= 0
  if (!end.includes('-')) return BigInt(id.split('-')[0]!) > BigInt(end)
  return compareStreamIds(id, end) > 0
}

/**
 * The id of the newest entry of a partition's global log, or undefined when it has none: the
 * newest Redis holds, else the last archived one.
 */
export async function lastLogId(
  redis: RedisClient,
  partition: PartitionKeys,
): Promise<string | undefined> {
  const [newest] = await redis.xrevrange(partition.events, '+', '-', 'COUNT', 1)
  return newest?.[0] ?? (await redis.get(partition.archivedUpTo)) ?? undefined
}

/** An archived store read without its archive: a replay would lose the archived orders. */
export class ArchiveRequired extends Error {
  override readonly name = 'ArchiveRequired'
}

/** By partition, the id of its last archived entry; null where nothing is archived. */
export const archivedUpTo = (redis: RedisClient, partitions: readonly PartitionKeys[]) =>
  Promise.all(partitions.map((partition) => redis.get(partition.archivedUpTo)))

/** Throws ArchiveRequired when a partition's log starts in the archive and none was given. */
export async function requireArchive(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
  archive: Archive | undefined,
  what: string,
): Promise<void> {
  if (archive) return
  const marks = await archivedUpTo(redis, partitions)
  const first = marks.findIndex((mark) => mark !== null)
  if (first >= 0)
    throw new ArchiveRequired(
      `the start of the log of ${marks.filter((mark) => mark !== null).length} partition(s) is ` +
        `archived (partition ${partitions[first]!.index} up to ${marks[first]}); ${what} needs ` +
        'it: pass --archive <dir>',
    )
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
