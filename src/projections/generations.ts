import type { Redis } from 'ioredis'
import type { Keys } from '../platform/keys'

/*
 * The read model's generations: each replay builds a new one beside the live one and swaps it in
 * by moving a pointer (Keys.viewGeneration). These find and drop a generation's keys.
 */

/** Unlinks every key matching `pattern`, a SCAN at a time. */
export async function unlinkMatching(redis: Redis, pattern: string): Promise<void> {
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
export async function unlinkOtherGenerations(
  redis: Redis,
  keys: Keys,
  live: number,
): Promise<void> {
  await forEachScan(redis, `${keys.viewPrefix}*`, async (found) => {
    const stale = found.filter((key) => generationOf(keys, key) !== live)
    if (stale.length > 0) await redis.unlink(...stale)
  })
}

export const liveGeneration = async (redis: Redis, keys: Keys): Promise<number> =>
  Number((await redis.get(keys.viewGeneration)) ?? '0')

/** Runs `each` on every batch of keys a SCAN of `pattern` finds. */
export async function forEachScan(
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
