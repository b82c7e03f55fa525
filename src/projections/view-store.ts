import { isLeft } from 'fp-ts/lib/Either'
import type { Redis, Result } from 'ioredis'
import type { OrderKey } from '../messages'
import type { Keys } from '../platform/keys'
import { OrderView, type VersionedView } from './order-view'

// Writes a view only if it is newer than the stored one: redelivered or reordered events can
// never move an order backwards.
const SAVE_IF_NEWER = `
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if tonumber(ARGV[1]) <= stored then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 2))
return 1
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    bakerySaveView(view: string, version: number, ...fields: string[]): Result<number, Context>
  }
}

/** The read model: one Redis hash per order. */
export class ViewStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {
    redis.defineCommand('bakerySaveView', { numberOfKeys: 1, lua: SAVE_IF_NEWER })
  }

  /** Saves the view unless a view at the same or a later version is stored; says whether it did. */
  async save(orderKey: OrderKey, { view, version }: VersionedView): Promise<boolean> {
    const fields = Object.entries(view).flat()
    return (await this.redis.bakerySaveView(this.keys.view(orderKey), version, ...fields)) === 1
  }

  /** The stored view; undefined when there is none (or it does not decode: the log is the truth). */
  async get(orderKey: OrderKey): Promise<VersionedView | undefined> {
    const hash = await this.redis.hgetall(this.keys.view(orderKey))
    const view = OrderView.decode(hash)
    const version = Number(hash.version)
    if (isLeft(view) || !Number.isSafeInteger(version)) return undefined
    return { view: view.right, version }
  }
}
