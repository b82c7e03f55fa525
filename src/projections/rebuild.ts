import type { ChainableCommander } from 'ioredis'
import type { OrderKey } from '../messages'
import type { OrderEventStore } from '../wiring'
import { MalformedEntry } from '../platform/errors'
import type { Keys, PartitionKeys } from '../platform/keys'
import { decodeLogEntry, lastLogId, readLog, type LogEvent } from './log-entries'
import type { Archive } from './archive'
import { evolveView, foldView, type VersionedView } from './order-view'
import { decodeView, type ViewStore } from './view-store'
import { generationPattern, unlinkMatching, unlinkOtherGenerations } from './generations'
import { holdReplayLock, LOCK_TTL_MS, ReplayInProgress, ReplayLockLost } from './replay-lock'
import type { ScriptedRedis } from '../platform/scripts'

/** Tuning and reporting shared by `replay` and `replay --verify`. */
export interface RebuildOptions {
  /** Log entries per XRANGE, and views per pipelined write. */
  readonly batchSize: number
  /** Views kept in memory between batches (most orders' events sit close together in the log). */
  readonly cacheSize: number
  readonly onSkip: (skipped: MalformedEntry) => void
  /**
   * Called after each batch with the number of log entries read so far; a promise it returns
   * holds the next batch back until it settles.
   */
  readonly onProgress: (entriesRead: number) => void | Promise<void>
  /** Where the start of the log is, when `bakery archive` moved it out of Redis. */
  readonly archive?: Archive
}

export interface RebuildResult {
  readonly entries: number
  readonly skipped: number
  readonly orders: number
}

/** A view as its Redis hash holds it. */
export function viewHash({ view, version }: VersionedView): Record<string, string> {
  return { version: String(version), ...view }
}

/**
 * Folds a partition's global log, up to and including `end`, into view hashes named by `keyFor`
 * (keys of the same partition). Batches
 * are read, folded and written one at a time, with a bounded cache of the views being built, so
 * memory stays flat however long the log is. The target keys must not be written by anyone else.
 */
export async function rebuildViews(
  redis: ScriptedRedis,
  partition: PartitionKeys,
  keyFor: (orderKey: string) => string,
  end: string,
  options: RebuildOptions & { readonly expireSeconds?: number },
): Promise<RebuildResult> {
  const cache = new Map<string, VersionedView | undefined>()
  let entries = 0
  let skipped = 0
  let orders = 0
  let writing: Promise<unknown> | undefined
  const { batchSize, archive } = options
  for await (const batch of readLog(redis, partition, { end, batchSize, archive })) {
    entries += batch.entries.length
    const events: LogEvent[] = []
    for (const entry of batch.entries) {
      if (entry instanceof MalformedEntry) {
        skipped += 1
        options.onSkip(entry)
      } else events.push(entry)
    }

    // Views this batch continues but the cache forgot are read back from the target.
    const missing = [
      ...new Set(events.filter((e) => e.version > 1 && !cache.has(e.order)).map((e) => e.order)),
    ]
    if (missing.length > 0) {
      const reads = redis.pipeline()
      for (const order of missing) reads.hgetall(keyFor(order))
      const loaded = await results<Record<string, string>>(reads)
      missing.forEach((order, i) => cache.set(order, decodeView(loaded[i] ?? {})))
    }

    const dirty = new Set<string>()
    for (const { order, version, event } of events) {
      const current = cache.get(order)
      if (current && version <= current.version) continue
      const view = evolveView(current?.view, event)
      if (!view) continue
      if (!current) orders += 1
      // Re-inserting keeps the Map in least-recently-used order for eviction below.
      cache.delete(order)
      cache.set(order, { view, version })
      dirty.add(order)
    }

    // Writing overlaps with folding the next batch; one connection keeps the order, so a view
    // read back later sees every write before it.
    await writing
    const pipeline = redis.pipeline()
    for (const order of dirty) {
      const built = cache.get(order)
      if (!built) continue
      const key = keyFor(order)
      pipeline.hset(key, viewHash(built))
      if (options.expireSeconds) pipeline.expire(key, options.expireSeconds)
    }
    writing = dirty.size > 0 ? results(pipeline) : undefined
    // Awaited before the next write or at the end; until then its failure must not go unhandled.
    writing?.catch(() => undefined)

    for (const order of cache.keys()) {
      if (cache.size <= options.cacheSize) break
      cache.delete(order)
    }
    await options.onProgress(entries)
  }
  await writing
  return { entries, skipped, orders }
}

/** An order's own stream, without the entries that do not decode. */
export async function orderStreamEvents(
  store: OrderEventStore,
  orderKey: OrderKey,
): Promise<LogEvent[]> {
  const raw = await store.entries(orderKey)
  return raw
    .map(([id, fields]) => decodeLogEntry(id, fields, orderKey))
    .filter((entry): entry is LogEvent => !(entry instanceof MalformedEntry))
}

/** An order's view folded from its own stream, ignoring entries that do not decode. */
export async function foldOrderStream(
  store: OrderEventStore,
  orderKey: OrderKey,
): Promise<VersionedView | undefined> {
  return foldView(await orderStreamEvents(store, orderKey))
}

export interface ReplayResult extends RebuildResult {
  readonly generation: number
  /** Log entries appended while the replay ran, folded in after the swap. */
  readonly caughtUp: number
}

/**
 * Rebuilds the read model from the global log into a fresh generation and swaps it in:
 * 0. take the lock, whose fencing token names the new generation, and drop the keys of every
 *    generation but the live one (left by interrupted replays);
 * 1. build the new generation from the log up to its current end, while the old one stays live;
 * 2. flip the generation pointer (one atomic SET: each read or save script sees the old or the
 *    new), only if the lock still holds this replay's token: a replay that lost its lock never
 *    swaps in what it built, however far it got;
 * 3. refold the orders that got events between 1 and 2 into the new generation (save-if-newer, as
 *    the projector does; everything the projector saves after 2 lands there already);
 * 4. drop the old generation.
 * A GET compares the view's version with the order's stream, so an order whose new view is not
 * there yet, or is behind, is folded from its stream: never a 404, never an older state.
 */
export async function replayReadModel(
  redis: ScriptedRedis,
  keys: Keys,
  store: OrderEventStore,
  views: ViewStore,
  options: RebuildOptions & {
    /** How long the lock outlives a replay that stopped renewing it (default 30 s). */
    readonly lockTtlMs?: number
  },
): Promise<ReplayResult> {
  const lock = await holdReplayLock(redis, keys, options.lockTtlMs ?? LOCK_TTL_MS)
  const { token: next, live } = lock
  const flipped = new Set<number>()
  try {
    for (const partition of keys.partitions)
      await unlinkOtherGenerations(redis, partition, live[partition.index]!)

    const ends = await Promise.all(keys.partitions.map((p) => lastLogId(redis, p)))
    let built: RebuildResult = { entries: 0, skipped: 0, orders: 0 }
    for (const partition of keys.partitions) {
      const end = ends[partition.index]
      if (!end) continue
      const before = built.entries
      const fenced = {
        ...options,
        onProgress: async (read: number) => {
          lock.check()
          await options.onProgress(before + read)
        },
      }
      const keyFor = (order: string) => partition.view(order, next)
      const part = await rebuildViews(redis, partition, keyFor, end, fenced)
      built = {
        entries: built.entries + part.entries,
        skipped: built.skipped + part.skipped,
        orders: built.orders + part.orders,
      }
    }

    lock.check()
    for (const partition of keys.partitions) {
      const flip = await lock.flip(partition)
      if (flip === 'lost')
        throw new ReplayLockLost('the replay lost its lock before the swap; nothing was swapped in')
      if (flip === 'moved')
        throw new ReplayInProgress('the live generation changed during the replay; run it again')
      flipped.add(partition.index)
    }

    let caughtUp = 0
    let skipped = built.skipped
    for (const partition of keys.partitions) {
      const end = ends[partition.index]
      const start = end ? `(${end}` : '-'
      for await (const batch of readLog(redis, partition, {
        start,
        batchSize: options.batchSize,
        archive: options.archive,
      })) {
        caughtUp += batch.entries.length
        const orders = new Set<OrderKey>()
        for (const entry of batch.entries) {
          if (entry instanceof MalformedEntry) {
            skipped += 1
            options.onSkip(entry)
          } else orders.add(entry.event.orderKey)
        }
        await Promise.all(
          [...orders].map(async (order) => {
            const folded = await foldOrderStream(store, order)
            if (folded) await views.save(order, folded)
          }),
        )
      }
    }

    for (const partition of keys.partitions)
      await unlinkMatching(redis, generationPattern(partition, live[partition.index]!))
    return { ...built, skipped, generation: next, caughtUp }
  } catch (error) {
    // What this replay built and never swapped in goes now if it can (else on the next run). A
    // partition it did flip keeps the new generation: it is complete, as the old one was.
    for (const partition of keys.partitions)
      if (!flipped.has(partition.index))
        await unlinkMatching(redis, generationPattern(partition, next)).catch(() => undefined)
    throw error
  } finally {
    await lock.release()
  }
}

/** A pipeline's replies, or its first error. */
export async function results<T>(pipeline: ChainableCommander): Promise<T[]> {
  const replies = (await pipeline.exec()) ?? []
  return replies.map(([error, reply]) => {
    if (error) throw error
    return reply as T
  })
}
