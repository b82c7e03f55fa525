import type { OrderEvent, OrderKey } from '../messages'
import type { OrderEventStore } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import { decodeLogEntry, readLog, traceIdOf, type LogEntry } from './log-entries'
import type { Archive } from './archive'
import type { PartitionKeys } from '../platform/keys'
import type { RedisClient } from '../platform/redis'
import { foldView, type OrderView } from './order-view'

/** One event of an order's history, as `bakery history` and `GET /orders/:key/events` show it. */
export interface HistoryEntry {
  readonly version: number
  readonly type: OrderEvent['$name']
  readonly recordedAt: string
  /** Time since the previous event of the order, in ms; null for the first. */
  readonly sincePreviousMs: number | null
  readonly traceId: string | null
  readonly streamId: string
  readonly event: OrderEvent
}

/** An entry that could not be used, with the id it has in the order's stream. */
export interface SkippedEntry {
  readonly streamId: string
  readonly reason: string
}

export interface OrderHistory {
  readonly orderKey: string
  readonly entries: readonly HistoryEntry[]
  readonly skipped: readonly SkippedEntry[]
}

/** Builds the history from an order stream's entries, oldest first. */
export function toHistory(orderKey: string, decoded: readonly LogEntry[]): OrderHistory {
  const entries: HistoryEntry[] = []
  const skipped: SkippedEntry[] = []
  let previous: number | undefined
  for (const entry of decoded) {
    if (entry instanceof MalformedEntry) {
      skipped.push({ streamId: entry.streamId, reason: entry.message })
      continue
    }
    const at = Date.parse(entry.recordedAt)
    entries.push({
      version: entry.version,
      type: entry.event.$name,
      recordedAt: entry.recordedAt,
      sincePreviousMs: previous === undefined ? null : at - previous,
      traceId: traceIdOf(entry.trace) ?? null,
      streamId: entry.streamId,
      event: entry.event,
    })
    previous = at
  }
  return { orderKey, entries, skipped }
}

/** The order's history read from its stream; entries that do not decode are listed as skipped. */
export async function readHistory(
  store: OrderEventStore,
  orderKey: OrderKey,
): Promise<OrderHistory> {
  const raw = await store.entries(orderKey)
  return toHistory(
    orderKey,
    raw.map(([id, fields]) => decodeLogEntry(id, fields, orderKey)),
  )
}

/**
 * An archived order's history: its stream is gone, so its events are looked for in its
 * partition's log, the archive's segments first (a scan of the whole partition). Each entry's
 * `streamId` is then its id in the global log.
 */
export async function readArchivedHistory(
  redis: RedisClient,
  partition: PartitionKeys,
  archive: Archive,
  orderKey: OrderKey,
): Promise<OrderHistory> {
  const found: LogEntry[] = []
  for await (const { entries } of readLog(redis, partition, { archive, batchSize: 2000 }))
    for (const entry of entries)
      if (!(entry instanceof MalformedEntry) && entry.order === orderKey) found.push(entry)
  return toHistory(orderKey, found)
}

/** Where to stop folding for time travel: after a version, or at an instant. */
export type Point =
  | { readonly kind: 'version'; readonly version: number }
  | { readonly kind: 'time'; readonly ms: number }

/** The order as it was at `point`: the fold of the events up to it. */
export interface PastState {
  /** The last event folded in; undefined when the order did not exist yet. */
  readonly last: HistoryEntry | undefined
  readonly view: OrderView | undefined
}

export function stateAt(history: OrderHistory, point: Point): PastState {
  const upTo = history.entries.filter((entry) =>
    point.kind === 'version'
      ? entry.version <= point.version
      : Date.parse(entry.recordedAt) <= point.ms,
  )
  return { last: upTo[upTo.length - 1], view: foldView(upTo)?.view }
}
