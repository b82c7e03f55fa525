import { isLeft } from 'fp-ts/lib/Either'
import type { Result } from 'ioredis'
import type { RedisClient } from '../platform/redis'
import type { OrderKey } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { liveViewKeyLua, type Keys } from '../platform/keys'
import { fieldRecord } from '../platform/redis'
import { OrderView, type VersionedView } from './order-view'

// Every script here finds the order's hash in the live generation of the read model (see
// keys.ts): KEYS[1] is the generation key, ARGV[1] the view prefix, ARGV[2] the order key.
const LIVE_VIEW_KEY = liveViewKeyLua('KEYS[1]', 'ARGV[1]', 'ARGV[2]')

// Writes a view only if it is newer than the stored one: redelivered or reordered events can
// never move an order backwards.
const SAVE_IF_NEWER = `${LIVE_VIEW_KEY}
local stored = tonumber(redis.call('HGET', key, 'version') or '0') or 0
if tonumber(ARGV[3]) <= stored then return 0 end
redis.call('HSET', key, 'version', ARGV[3], unpack(ARGV, 4))
return 1
`

const GET = `${LIVE_VIEW_KEY}
return redis.call('HGETALL', key)
`

// The view and the entries of the order's stream (KEYS[2]) after the view's version (or all of
// them, with ARGV[3] = 'all'), as of one instant: a reader learns whether the view is behind the
// log, and what it misses, in one round trip. A stream's n-th entry is version n (streams are
// never trimmed), and an order's stream is a handful of entries, so the tail is cut from the
// whole range rather than searched for.
const GET_WITH_STREAM_TAIL = `${LIVE_VIEW_KEY}
local view = redis.call('HGETALL', key)
local after = 0
if ARGV[3] ~= 'all' then
  for i = 1, #view, 2 do
    if view[i] == 'version' then after = tonumber(view[i + 1]) or 0 end
  end
end
if redis.call('XLEN', KEYS[2]) <= after then return {view, {}} end
return {view, {unpack(redis.call('XRANGE', KEYS[2], '-', '+'), after + 1)}}
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    bakerySaveView(
      generation: string,
      viewPrefix: string,
      orderKey: string,
      version: number,
      ...fields: string[]
    ): Result<number, Context>
    bakeryGetView(
      generation: string,
      viewPrefix: string,
      orderKey: string,
    ): Result<string[], Context>
    bakeryGetViewWithTail(
      generation: string,
      orderStream: string,
      viewPrefix: string,
      orderKey: string,
      from: 'after-view' | 'all',
    ): Result<[string[], [id: string, fields: string[]][]], Context>
  }
}

export interface ViewWithTail {
  readonly stored: VersionedView | undefined
  /** The order's events after the stored view, oldest first. */
  readonly behind: readonly StoredOrderEvent[]
}

const toStoredEvent = ([id, fields]: [string, string[]]) => decodeOrderEntry(id, fields)

/** The read model: one Redis hash per order, in the live generation. */
export class ViewStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
  ) {
    redis.defineCommand('bakerySaveView', { numberOfKeys: 1, lua: SAVE_IF_NEWER })
    redis.defineCommand('bakeryGetView', { numberOfKeys: 1, lua: GET })
    redis.defineCommand('bakeryGetViewWithTail', { numberOfKeys: 2, lua: GET_WITH_STREAM_TAIL })
  }

  /** Saves the view unless a view at the same or a later version is stored; says whether it did. */
  async save(orderKey: OrderKey, { view, version }: VersionedView): Promise<boolean> {
    const fields = Object.entries(view).flat()
    const { viewGeneration, viewPrefix } = this.keys.of(orderKey)
    const saved = await this.redis.bakerySaveView(
      viewGeneration,
      viewPrefix,
      orderKey,
      version,
      ...fields,
    )
    return saved === 1
  }

  /** The stored view; undefined when there is none (or it does not decode: the log is the truth). */
  async get(orderKey: OrderKey): Promise<VersionedView | undefined> {
    return decodeView(await this.raw(orderKey))
  }

  /**
   * The stored view and the order's events after it (all of them when there is no view), as of
   * one instant: the view is up to date when `behind` is empty.
   */
  async withTail(orderKey: OrderKey): Promise<ViewWithTail> {
    const [flat, tail] = await this.getWithTail(orderKey, 'after-view')
    const stored = decodeView(fieldRecord(flat))
    if (stored || flat.length === 0) return { stored, behind: tail.map(toStoredEvent) }
    // A hash that is not a view (the log is the truth): the whole history, to fold from nothing.
    const [, history] = await this.getWithTail(orderKey, 'all')
    return { stored, behind: history.map(toStoredEvent) }
  }

  private getWithTail(orderKey: OrderKey, from: 'after-view' | 'all') {
    const { viewGeneration, viewPrefix, orderStream } = this.keys.of(orderKey)
    const stream = orderStream(orderKey)
    return this.redis.bakeryGetViewWithTail(viewGeneration, stream, viewPrefix, orderKey, from)
  }

  /** The stored hash as it is, undecoded (empty when there is none): for `bakery replay --verify`. */
  async raw(orderKey: OrderKey): Promise<Record<string, string>> {
    const { viewGeneration, viewPrefix } = this.keys.of(orderKey)
    const flat = await this.redis.bakeryGetView(viewGeneration, viewPrefix, orderKey)
    return fieldRecord(flat)
  }
}

/** A view as its Redis hash holds it; undefined when the hash is not a view. */
export function decodeView(hash: Record<string, string>): VersionedView | undefined {
  const view = OrderView.decode(hash)
  const version = Number(hash.version)
  if (isLeft(view) || !Number.isSafeInteger(version)) return undefined
  return { view: view.right, version }
}
