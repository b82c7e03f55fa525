import { isLeft } from 'fp-ts/lib/Either'
import type { Redis, Result } from 'ioredis'
import type { OrderKey } from '../messages'
import type { Keys } from '../platform/keys'
import { fieldRecord } from '../platform/redis'
import { OrderView, type VersionedView } from './order-view'

// Both scripts find the order's hash in the live generation of the read model (see keys.ts), in
// the same atomic step as they use it: `bakery replay` flips the generation between two calls,
// never during one. The hash's name is built here from the generation; it shares the `{ns}` hash
// tag with the generation key, so a script stays within one Redis Cluster slot.
const LIVE_VIEW_KEY = `
local generation = redis.call('GET', KEYS[1])
local key = ARGV[1] .. ARGV[2]
if generation and generation ~= '0' then key = ARGV[1] .. generation .. ':' .. ARGV[2] end
`

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

// The view and the length of the order's stream (KEYS[2]) as of one instant: a reader can tell
// whether the view is behind the log with a single round trip.
const GET_WITH_STREAM_VERSION = `${LIVE_VIEW_KEY}
return {redis.call('XLEN', KEYS[2]), redis.call('HGETALL', key)}
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
    bakeryGetViewAtStream(
      generation: string,
      orderStream: string,
      viewPrefix: string,
      orderKey: string,
    ): Result<[number, string[]], Context>
  }
}

/** The read model: one Redis hash per order, in the live generation. */
export class ViewStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {
    redis.defineCommand('bakerySaveView', { numberOfKeys: 1, lua: SAVE_IF_NEWER })
    redis.defineCommand('bakeryGetView', { numberOfKeys: 1, lua: GET })
    redis.defineCommand('bakeryGetViewAtStream', {
      numberOfKeys: 2,
      lua: GET_WITH_STREAM_VERSION,
    })
  }

  /** Saves the view unless a view at the same or a later version is stored; says whether it did. */
  async save(orderKey: OrderKey, { view, version }: VersionedView): Promise<boolean> {
    const fields = Object.entries(view).flat()
    const { viewGeneration, viewPrefix } = this.keys
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

  /** The stored view, with the version of the order's stream at the same instant. */
  async getAtStream(
    orderKey: OrderKey,
  ): Promise<{ readonly stored: VersionedView | undefined; readonly streamVersion: number }> {
    const [streamVersion, flat] = await this.redis.bakeryGetViewAtStream(
      this.keys.viewGeneration,
      this.keys.orderStream(orderKey),
      this.keys.viewPrefix,
      orderKey,
    )
    return { stored: decodeView(fieldRecord(flat)), streamVersion }
  }

  /** The stored hash as it is, undecoded (empty when there is none): for `bakery replay --verify`. */
  async raw(orderKey: OrderKey): Promise<Record<string, string>> {
    const flat = await this.redis.bakeryGetView(
      this.keys.viewGeneration,
      this.keys.viewPrefix,
      orderKey,
    )
    return fieldRecord(flat)
  }
}

function decodeView(hash: Record<string, string>): VersionedView | undefined {
  const view = OrderView.decode(hash)
  const version = Number(hash.version)
  if (isLeft(view) || !Number.isSafeInteger(version)) return undefined
  return { view: view.right, version }
}
