import type { Keys, PartitionKeys } from '../platform/keys'
import { liveGeneration } from './generations'
import type { ScriptedRedis } from '../platform/scripts'

export class ReplayInProgress extends Error {
  override readonly name = 'ReplayInProgress'
}

/** The replay's lock expired or was taken: it must not swap anything in. */
export class ReplayLockLost extends Error {
  override readonly name = 'ReplayLockLost'
}

export const LOCK_TTL_MS = 30_000

/**
 * The replay lock, renewed in the background; `check` throws once a renewal failed. `live` is each
 * partition's live generation when the lock was taken (a replay that stopped halfway through its
 * flips leaves partitions on different ones).
 */
export async function holdReplayLock(redis: ScriptedRedis, keys: Keys, ttlMs: number) {
  const live = await Promise.all(keys.partitions.map((p) => liveGeneration(redis, p)))
  const token = await redis.bakeryAcquireReplay(
    keys.replayLock,
    keys.replayFence,
    ttlMs,
    Math.max(...live),
  )
  if (token === null)
    throw new ReplayInProgress(
      `another replay is running in this namespace (it holds ${keys.replayLock}); try again when it finished`,
    )
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
    /**
     * Makes the generation this replay built live in one partition, only while the lock holds
     * this replay's token (checked just before), no newer replay flipped the partition (its fence,
     * checked in the same atomic step as the flip), and its live generation is still the one the
     * replay started from.
     */
    flip: async (partition: PartitionKeys): Promise<'lost' | 'moved' | 'flipped'> => {
      if ((await redis.get(keys.replayLock)) !== String(token)) return 'lost'
      const from = live[partition.index]!
      return redis.bakeryFlipGeneration(
        partition.viewGeneration,
        partition.generationFence,
        token,
        from,
      )
    },
    release: async () => {
      clearInterval(renew)
      await redis.bakeryRenewLock(keys.replayLock, String(token), 0).catch(() => undefined)
    },
  }
}
