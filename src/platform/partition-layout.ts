import { keys as keysOf, type Keys } from './keys'
import type { RedisClient } from './redis'

/**
 * BAKERY_PARTITIONS does not match the store: the orders would be looked for in the wrong
 * partitions. A role or tool stops with this message instead of serving wrong answers.
 */
export class PartitionMismatch extends Error {
  override readonly name = 'PartitionMismatch'
  constructor(keys: Keys, stored: number) {
    const wanted = keys.partitions.length
    const plural = (n: number) => `${n} partition${n === 1 ? '' : 's'}`
    super(
      `BAKERY_PARTITIONS=${wanted}, but namespace ${keys.namespace} was made with ` +
        `${plural(stored)}: its orders would be looked for in the wrong places. ` +
        `Set BAKERY_PARTITIONS=${stored}, or start afresh in another BAKERY_NAMESPACE ` +
        '(the partitions of a store holding data cannot change).',
    )
  }
}

/**
 * Records the store's number of partitions on first use, and throws PartitionMismatch when it
 * holds data laid out for another number. A store from before partitions (no record, a global
 * log under the namespace's own tag) has one.
 */
export async function claimPartitionLayout(redis: RedisClient, keys: Keys): Promise<void> {
  const wanted = keys.partitions.length
  let stored = await redis.get(keys.layout)
  if (stored === null) {
    const unpartitionedLog = keysOf(keys.namespace, 1).partitions[0]!.events
    if (wanted > 1 && (await redis.exists(unpartitionedLog)) === 1)
      throw new PartitionMismatch(keys, 1)
    await redis.set(keys.layout, String(wanted), 'NX')
    stored = await redis.get(keys.layout)
  }
  if (Number(stored) !== wanted) throw new PartitionMismatch(keys, Number(stored))
}
