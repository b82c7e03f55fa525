import { Cluster } from 'ioredis'
import type { RedisClient } from '../platform/redis'
import type { PartitionKeys } from '../platform/keys'

/*
 * The read model's generations: each replay builds a new one beside the live one and swaps it in
 * by moving each partition's pointer (PartitionKeys.viewGeneration). These find and drop a
 * generation's keys, a partition at a time: the keys a SCAN of one partition finds share its hash
 * tag, so one UNLINK may take them all, on a Redis Cluster too.
 */

/** Unlinks every key matching `pattern`, a SCAN at a time. */
export async function unlinkMatching(redis: RedisClient, pattern: string): Promise<void> {
  await forEachScan(redis, pattern, async (found) => {
    await redis.unlink(...found)
  })
}

/** The SCAN pattern of one generation's view keys in a partition; order keys are 32 hex digits. */
export function generationPattern(partition: PartitionKeys, generation: number): string {
  return generation === 0
    ? `${partition.viewPrefix}${'?'.repeat(32)}`
    : `${partition.viewPrefix}${generation}:*`
}

/** The generation a read-model key belongs to (see PartitionKeys.view). */
function generationOf(partition: PartitionKeys, key: string): number {
  const match = /^(\d+):/.exec(key.slice(partition.viewPrefix.length))
  return match ? Number(match[1]) : 0
}

/** Unlinks a partition's read-model keys of every generation but `live`: what replays left. */
export async function unlinkOtherGenerations(
  redis: RedisClient,
  partition: PartitionKeys,
  live: number,
): Promise<void> {
  await forEachScan(redis, `${partition.viewPrefix}*`, async (found) => {
    const stale = found.filter((key) => generationOf(partition, key) !== live)
    if (stale.length > 0) await redis.unlink(...stale)
  })
}

export const liveGeneration = async (redis: RedisClient, partition: PartitionKeys) =>
  Number((await redis.get(partition.viewGeneration)) ?? '0')

/**
 * Runs `each` on every batch of keys a SCAN of `pattern` finds: on every master of a Redis
 * Cluster (a SCAN sees only the node it runs on), each batch from one node.
 */
export async function forEachScan(
  redis: RedisClient,
  pattern: string,
  each: (keys: string[]) => Promise<void>,
): Promise<void> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis]
  for (const node of nodes) {
    let cursor = '0'
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      if (found.length > 0) await each(found)
    } while (cursor !== '0')
  }
}
