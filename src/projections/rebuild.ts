import { randomBytes } from 'node:crypto'
import type { ChainableCommander, Redis, Result } from 'ioredis'
import type { OrderKey } from '../messages'
import { MalformedEntry, type EventStore } from '../platform/event-store'
import type { Keys } from '../platform/keys'
import { fieldRecord } from '../platform/redis'
import { decodeLogEntry, lastLogId, readLog, type LogEvent } from './log-entries'
import { evolveView, foldView, writesView, type VersionedView } from './order-view'
import { decodeView, type ViewStore } from './view-store'

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
 * Folds the global log, up to and including `end`, into view hashes named by `keyFor`. Batches
 * are read, folded and written one at a time, with a bounded cache of the views being built, so
 * memory stays flat however long the log is. The target keys must not be written by anyone else.
 */
export async function rebuildViews(
  redis: Redis,
  keys: Keys,
  keyFor: (orderKey: string) => string,
  end: string,
  options: RebuildOptions & { readonly expireSeconds?: number },
): Promise<RebuildResult> {
  const cache = new Map<string, VersionedView | undefined>()
  let entries = 0
  let skipped = 0
  let orders = 0
  let writing: Promise<unknown> | undefined
  for await (const batch of readLog(redis, keys, { end, batchSize: options.batchSize })) {
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
async function orderStreamEvents(store: EventStore, orderKey: OrderKey): Promise<LogEvent[]> {
  const raw = await store.entries(orderKey)
  return raw
    .map(([id, fields]) => decodeLogEntry(id, fields, orderKey))
    .filter((entry): entry is LogEvent => !(entry instanceof MalformedEntry))
}

/** An order's view folded from its own stream, ignoring entries that do not decode. */
export async function foldOrderStream(
  store: EventStore,
  orderKey: OrderKey,
): Promise<VersionedView | undefined> {
  return foldView(await orderStreamEvents(store, orderKey))
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

/** Unlinks every key matching `pattern`, a SCAN at a time. */
async function unlinkMatching(redis: Redis, pattern: string): Promise<void> {
  await forEachScan(redis, pattern, async (found) => {
    await redis.unlink(...found)
  })
}

/** The SCAN pattern of one generation's view keys; order keys are 32 hex digits. */
export function generationPattern(keys: Keys, generation: number): string {
  return generation === 0
    ? `${keys.viewPrefix}${'?'.repeat(32)}`
    : `${keys.viewPrefix}${generation}:*`
}

/** The generation a read-model key belongs to (see Keys.view). */
function generationOf(keys: Keys, key: string): number {
  const match = /^(\d+):/.exec(key.slice(keys.viewPrefix.length))
  return match ? Number(match[1]) : 0
}

/** Unlinks the read-model keys of every generation but `live`: what interrupted replays left. */
async function unlinkOtherGenerations(redis: Redis, keys: Keys, live: number): Promise<void> {
  await forEachScan(redis, `${keys.viewPrefix}*`, async (found) => {
    const stale = found.filter((key) => generationOf(keys, key) !== live)
    if (stale.length > 0) await redis.unlink(...stale)
  })
}

export const liveGeneration = async (redis: Redis, keys: Keys): Promise<number> =>
  Number((await redis.get(keys.viewGeneration)) ?? '0')

// Takes the replay lock if it is free. Its value is a fencing token: a number drawn from a counter
// that only grows, and above the live generation, so it also names the generation this replay
// builds. Returns the token and the live generation, or nil when another replay holds the lock.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local live = tonumber(redis.call('GET', KEYS[3]) or '0')
local token = redis.call('INCR', KEYS[2])
if token <= live then
  token = live + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return {token, live}
`
// Makes the built generation live, only for the replay whose token the lock still holds, and only
// if the live generation is still the one it started from.
const FLIP = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 'moved' end
redis.call('SET', KEYS[2], ARGV[1])
return 'flipped'
`
// Renews or releases the replay lock only while this replay holds it.
const RENEW = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    bakeryAcquireReplay(
      lock: string,
      fence: string,
      pointer: string,
      ttlMs: number,
    ): Result<[token: number, live: number] | null, Context>
    bakeryFlipGeneration(
      lock: string,
      pointer: string,
      token: number,
      from: number,
    ): Result<'lost' | 'moved' | 'flipped', Context>
    bakeryRenewLock(lock: string, token: string, ttlMs: number): Result<number, Context>
  }
}

export class ReplayInProgress extends Error {
  override readonly name = 'ReplayInProgress'
}

/** The replay's lock expired or was taken: it must not swap anything in. */
export class ReplayLockLost extends Error {
  override readonly name = 'ReplayLockLost'
}

const LOCK_TTL_MS = 30_000

export interface ReplayResult extends RebuildResult {
  readonly generation: number
  /** Log entries appended while the replay ran, folded in after the swap. */
  readonly caughtUp: number
}

/** The replay lock, renewed in the background; `check` throws once a renewal failed. */
async function holdReplayLock(redis: Redis, keys: Keys, ttlMs: number) {
  redis.defineCommand('bakeryAcquireReplay', { numberOfKeys: 3, lua: ACQUIRE })
  redis.defineCommand('bakeryRenewLock', { numberOfKeys: 1, lua: RENEW })
  const acquired = await redis.bakeryAcquireReplay(
    keys.replayLock,
    keys.replayFence,
    keys.viewGeneration,
    ttlMs,
  )
  if (!acquired)
    throw new ReplayInProgress(
      `another replay is running in this namespace (it holds ${keys.replayLock}); try again when it finished`,
    )
  const [token, live] = acquired
  let lost: string | undefined
  // A renewal that fails, for whatever reason, ends the replay: past that point another replay
  // may hold the lock, and only the holder may swap.
  const renew = setInterval(() => {
    redis.bakeryRenewLock(keys.replayLock, String(token), ttlMs).then(
      (held) => {
        if (held !== 1) lost ??= 'it expired or another replay took it'
      },
      (error: unknown) => {
        lost ??= `the lock could not be renewed (${error instanceof Error ? error.message : String(error)})`
      },
    )
  }, ttlMs / 3)
  return {
    token,
    live,
    check: () => {
      if (lost)
        throw new ReplayLockLost(`the replay lost its lock: ${lost}; nothing was swapped in`)
    },
    release: async () => {
      clearInterval(renew)
      await redis.bakeryRenewLock(keys.replayLock, String(token), 0).catch(() => undefined)
    },
  }
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
  redis: Redis,
  keys: Keys,
  store: EventStore,
  views: ViewStore,
  options: RebuildOptions & {
    /** How long the lock outlives a replay that stopped renewing it (default 30 s). */
    readonly lockTtlMs?: number
  },
): Promise<ReplayResult> {
  redis.defineCommand('bakeryFlipGeneration', { numberOfKeys: 2, lua: FLIP })
  const lock = await holdReplayLock(redis, keys, options.lockTtlMs ?? LOCK_TTL_MS)
  const { token: next, live: current } = lock
  let flipped = false
  try {
    await unlinkOtherGenerations(redis, keys, current)

    const end = await lastLogId(redis, keys)
    const fenced = {
      ...options,
      onProgress: async (read: number) => {
        lock.check()
        await options.onProgress(read)
      },
    }
    const built = end
      ? await rebuildViews(redis, keys, (order) => keys.view(order, next), end, fenced)
      : { entries: 0, skipped: 0, orders: 0 }

    lock.check()
    const flip = await redis.bakeryFlipGeneration(
      keys.replayLock,
      keys.viewGeneration,
      next,
      current,
    )
    if (flip === 'lost')
      throw new ReplayLockLost('the replay lost its lock before the swap; nothing was swapped in')
    if (flip === 'moved')
      throw new ReplayInProgress('the live generation changed during the replay; run it again')
    flipped = true

    let caughtUp = 0
    let skipped = built.skipped
    for await (const batch of readLog(redis, keys, {
      start: end ? `(${end}` : '-',
      batchSize: options.batchSize,
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

    await unlinkMatching(redis, generationPattern(keys, current))
    return { ...built, skipped, generation: next, caughtUp }
  } catch (error) {
    // What this replay built and never swapped in goes now if it can (else on the next run).
    if (!flipped) await unlinkMatching(redis, generationPattern(keys, next)).catch(() => undefined)
    throw error
  } finally {
    await lock.release()
  }
}

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
  redis: Redis,
  keys: Keys,
  store: EventStore,
  views: ViewStore,
  options: RebuildOptions & { readonly onDifference: (difference: ViewDifference) => void },
): Promise<VerifyResult> {
  const prefix = keys.scratch(`verify-${randomBytes(6).toString('hex')}`)
  const scratch = (order: string) => `${prefix}${order}`
  try {
    const generation = await liveGeneration(redis, keys)
    const end = await lastLogId(redis, keys)
    const built = end
      ? await rebuildViews(redis, keys, scratch, end, { ...options, expireSeconds: 3600 })
      : { entries: 0, skipped: 0, orders: 0 }
    // SCAN may return a key twice; a difference is reported once.
    const reported = new Set<string>()
    const confirm = async (candidate: ViewDifference) => {
      const order = candidate.orderKey as OrderKey
      if (reported.has(order)) return
      const [history, live] = await Promise.all([orderStreamEvents(store, order), views.raw(order)])
      const folded = foldView(history)
      const now = diffViews(order, folded ? viewHash(folded) : {}, live)
      if (!now || lagsByDesign(history, live)) return
      reported.add(order)
      options.onDifference(now)
    }

    // Every rebuilt view against the live one.
    await forEachScan(redis, `${prefix}*`, async (found) => {
      const orders = found.map((key) => key.slice(prefix.length) as OrderKey)
      const reads = redis.pipeline()
      for (const [i, order] of orders.entries()) {
        reads.hgetall(found[i]!)
        reads.bakeryGetView(keys.viewGeneration, keys.viewPrefix, order)
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
    const livePrefix = keys.view('', generation)
    await forEachScan(redis, generationPattern(keys, generation), async (found) => {
      const orders = found.map((key) => key.slice(livePrefix.length))
      const checks = redis.pipeline()
      for (const order of orders) checks.exists(scratch(order))
      const exists = await results<number>(checks)
      for (const [i, order] of orders.entries())
        if (exists[i] === 0) await confirm({ orderKey: order, kind: 'unexpected', fields: [] })
    })
    return { ...built, differences: reported.size }
  } finally {
    await unlinkMatching(redis, `${prefix}*`)
  }
}

async function forEachScan(
  redis: Redis,
  pattern: string,
  each: (keys: string[]) => Promise<void>,
): Promise<void> {
  let cursor = '0'
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (found.length > 0) await each(found)
  } while (cursor !== '0')
}

/** A pipeline's replies, or its first error. */
async function results<T>(pipeline: ChainableCommander): Promise<T[]> {
  const replies = (await pipeline.exec()) ?? []
  return replies.map(([error, reply]) => {
    if (error) throw error
    return reply as T
  })
}
