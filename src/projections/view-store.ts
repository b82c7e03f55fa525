import { isLeft } from 'fp-ts/lib/Either'
import type { OrderKey } from '../messages'
import { decodeOrderEntry, type StoredOrderEvent } from '../wiring'
import { type Keys } from '../platform/keys'
import { fieldRecord } from '../platform/redis'
import { OrderView, type VersionedView } from './order-view'
import type { ScriptedRedis } from '../platform/scripts'
import { NOT_WAITING, writeReplicated, type Replication } from '../platform/replication'

export interface ViewWithTail {
  readonly stored: VersionedView | undefined
  /** The order's events after the stored view, oldest first. */
  readonly behind: readonly StoredOrderEvent[]
}

const toStoredEvent = ([id, fields]: [string, string[]]) => decodeOrderEntry(id, fields)

/** The read model: one Redis hash per order, in the live generation. */
export class ViewStore {
  constructor(
    private readonly redis: ScriptedRedis,
    private readonly keys: Keys,
    /**
     * What a save waits for, as an append does: a view its master acknowledged but never
     * replicated would vanish in a failover, after the message that made it was acknowledged.
     */
    private readonly replication: Replication = NOT_WAITING,
  ) {}

  /** Saves the view unless a view at the same or a later version is stored; says whether it did. */
  async save(orderKey: OrderKey, { view, version }: VersionedView): Promise<boolean> {
    const fields = Object.entries(view).flat()
    const { viewGeneration, viewPrefix } = this.keys.of(orderKey)
    const saved = await writeReplicated(this.redis, this.replication, (redis) =>
      redis.bakerySaveView(viewGeneration, viewPrefix, orderKey, version, ...fields),
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
