import { randomBytes } from 'node:crypto'
import type { OrderKey } from '../messages'
import type { OrderEventStore } from '../wiring'
import type { Keys, PartitionKeys } from '../platform/keys'
import { fieldRecord } from '../platform/redis'
import { forEachScan, generationPattern, liveGeneration, unlinkMatching } from './generations'
import { lastLogId, type LogEvent } from './log-entries'
import { foldView, writesView } from './order-view'
import {
  orderStreamEvents,
  rebuildViews,
  results,
  viewHash,
  type RebuildOptions,
  type RebuildResult,
} from './rebuild'
import { decodeView, type ViewStore } from './view-store'
import type { ScriptedRedis } from '../platform/scripts'

/** A field on which the rebuilt view and the live one disagree; null: the field is absent. */
export interface FieldDifference {
  readonly field: string
  readonly expected: string | null
  readonly actual: string | null
}

export interface ViewDifference {
  readonly orderKey: string
  /** missing: the log has the order, the read model not; unexpected: the other way round. */
  readonly kind: 'missing' | 'unexpected' | 'different'
  readonly fields: readonly FieldDifference[]
}

/** Compares a view folded from the log with the live hash (empty hashes: no view). */
export function diffViews(
  orderKey: string,
  expected: Readonly<Record<string, string>>,
  actual: Readonly<Record<string, string>>,
): ViewDifference | undefined {
  const names = [...new Set([...Object.keys(expected), ...Object.keys(actual)])].sort()
  const fields = names.flatMap((field) => {
    const e = expected[field] ?? null
    const a = actual[field] ?? null
    return e === a ? [] : [{ field, expected: e, actual: a }]
  })
  if (fields.length === 0) return undefined
  const kind =
    Object.keys(actual).length === 0
      ? 'missing'
      : Object.keys(expected).length === 0
        ? 'unexpected'
        : 'different'
  return { orderKey, kind, fields }
}

/** One line per difference, for a person. */
export function formatDifference(difference: ViewDifference): string {
  const { orderKey, kind, fields } = difference
  if (kind === 'missing') return `${orderKey}: in the log but missing from the read model`
  if (kind === 'unexpected') return `${orderKey}: in the read model but not in the log`
  const what = fields.map(
    ({ field, expected, actual }) =>
      `${field} is ${actual === null ? 'absent' : JSON.stringify(actual)}, the log says ${expected === null ? 'absent' : JSON.stringify(expected)}`,
  )
  return `${orderKey}: ${what.join('; ')}`
}

export interface VerifyResult extends RebuildResult {
  readonly differences: number
}

/**
 * Rebuilds the read model aside (throw-away keys that expire within the hour even if this is
 * killed) and compares it with the live one, both ways. A difference is checked once more
 * against the order's stream as it is now, so an order that merely moved on while the rebuild ran
 * is not reported, nor one whose view waits for its OrderBaked by design (`lagsByDesign`).
 */
export async function verifyReadModel(
  redis: ScriptedRedis,
  keys: Keys,
  store: OrderEventStore,
  views: ViewStore,
  options: RebuildOptions & { readonly onDifference: (difference: ViewDifference) => void },
): Promise<VerifyResult> {
  const label = `verify-${randomBytes(6).toString('hex')}`
  // SCAN may return a key twice; a difference is reported once.
  const reported = new Set<string>()
  const report = (difference: ViewDifference) => {
    reported.add(difference.orderKey)
    options.onDifference(difference)
  }
  const confirm = async (candidate: ViewDifference) => {
    const order = candidate.orderKey as OrderKey
    if (reported.has(order)) return
    const [history, live] = await Promise.all([orderStreamEvents(store, order), views.raw(order)])
    if (history.length === 0 && options.archive) {
      // An archived order has no stream left: the rebuild, read from the archive, is its fold,
      // unless the live view is ahead of it (the order moved on after the rebuild's end).
      if (!aheadOfRebuild(candidate)) report(candidate)
      return
    }
    const folded = foldView(history)
    const now = diffViews(order, folded ? viewHash(folded) : {}, live)
    if (!now || lagsByDesign(history, live)) return
    report(now)
  }
  const total = { entries: 0, skipped: 0, orders: 0 }
  for (const partition of keys.partitions) {
    const before = total.entries
    const built = await verifyPartition(redis, partition, label, confirm, {
      ...options,
      onProgress: (read) => options.onProgress(before + read),
    })
    total.entries += built.entries
    total.skipped += built.skipped
    total.orders += built.orders
  }
  return { ...total, differences: reported.size }
}

/** verifyReadModel for one partition: candidates for a difference go to `confirm`. */
async function verifyPartition(
  redis: ScriptedRedis,
  partition: PartitionKeys,
  label: string,
  confirm: (candidate: ViewDifference) => Promise<void>,
  options: RebuildOptions,
): Promise<RebuildResult> {
  const prefix = partition.scratch(label)
  const scratch = (order: string) => `${prefix}${order}`
  try {
    const generation = await liveGeneration(redis, partition)
    const end = await lastLogId(redis, partition)
    const built = end
      ? await rebuildViews(redis, partition, scratch, end, { ...options, expireSeconds: 3600 })
      : { entries: 0, skipped: 0, orders: 0 }

    // Every rebuilt view against the live one.
    await forEachScan(redis, `${prefix}*`, async (found) => {
      const orders = found.map((key) => key.slice(prefix.length) as OrderKey)
      const reads = redis.pipeline()
      for (const [i, order] of orders.entries()) {
        reads.hgetall(found[i]!)
        reads.bakeryGetView(partition.viewGeneration, partition.viewPrefix, order)
      }
      const replies = await results<Record<string, string> | string[]>(reads)
      const candidates = orders.flatMap((order, i) => {
        const rebuilt = replies[2 * i]
        const live = replies[2 * i + 1]
        const difference = diffViews(
          order,
          rebuilt && !Array.isArray(rebuilt) ? rebuilt : {},
          Array.isArray(live) ? fieldRecord(live) : {},
        )
        return difference ? [difference] : []
      })
      for (const candidate of candidates) await confirm(candidate)
    })

    // Every live view the rebuild does not have.
    const livePrefix = partition.view('', generation)
    await forEachScan(redis, generationPattern(partition, generation), async (found) => {
      const orders = found.map((key) => key.slice(livePrefix.length))
      const checks = redis.pipeline()
      for (const order of orders) checks.exists(scratch(order))
      const exists = await results<number>(checks)
      for (const [i, order] of orders.entries())
        if (exists[i] === 0) await confirm({ orderKey: order, kind: 'unexpected', fields: [] })
    })
    return built
  } finally {
    await unlinkMatching(redis, `${prefix}*`)
  }
}

/** Whether a difference is only that the live view is at a later version than the rebuilt one. */
function aheadOfRebuild({ fields }: ViewDifference): boolean {
  const version = fields.find(({ field }) => field === 'version')
  return version !== undefined && Number(version.actual) > Number(version.expected ?? 0)
}

/**
 * Whether a live view is the fold of the log up to its own version, and behind the log only by
 * events that never write the read model: an order in the oven, whose view says `pending` until
 * OrderBaked is projected. That is the read model working as designed, not a difference.
 */
export function lagsByDesign(
  history: readonly LogEvent[],
  live: Readonly<Record<string, string>>,
): boolean {
  const stored = decodeView(live)
  if (!stored) return false
  const upToView = foldView(history.filter((entry) => entry.version <= stored.version))
  if (!upToView || diffViews('', viewHash(upToView), live)) return false
  return history.every((entry) => entry.version <= stored.version || !writesView(entry.event))
}
