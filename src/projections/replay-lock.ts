import type { Result } from 'ioredis'
import type { RedisClient } from '../platform/redis'
import type { Keys, PartitionKeys } from '../platform/keys'
import { liveGeneration } from './generations'

// Takes the replay lock (KEYS[1]) if it is free. Its value is a fencing token: a number drawn from
// a counter (KEYS[2]) that only grows, and above every partition's live generation (ARGV[2], the
// highest), so it also names the generation this replay builds. Returns the token, or nil when
// another replay holds the lock.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local token = redis.call('INCR', KEYS[2])
if token <= tonumber(ARGV[2]) then
  token = tonumber(ARGV[2]) + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
`
// Makes the built generation (ARGV[1], the token) live in one partition: its pointer KEYS[1] and
// its fence KEYS[2], the highest token that flipped it, share the partition's hash tag. A replay
// whose token is below the fence lost to a newer one ('lost'); a pointer that is no longer the
// generation the replay started from (ARGV[2]) moved under it ('moved').
const FLIP = `
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[1]) then return 'lost' end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then return 'moved' end
redis.call('SET', KEYS[1], ARGV[1])
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
      ttlMs: number,
      highestLive: number,
    ): Result<number | null, Context>
    bakeryFlipGeneration(
      pointer: string,
      fence: string,
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

export const LOCK_TTL_MS = 30_000

const defined = new WeakSet<RedisClient>()

/** Registers the lock's scripts on `redis`, once per client. */
function defineLockScripts(redis: RedisClient): void {
  if (defined.has(redis)) return
  redis.defineCommand('bakeryAcquireReplay', { numberOfKeys: 2, lua: ACQUIRE })
  redis.defineCommand('bakeryFlipGeneration', { numberOfKeys: 2, lua: FLIP })
  redis.defineCommand('bakeryRenewLock', { numberOfKeys: 1, lua: RENEW })
  defined.add(redis)
}

/**
 * The replay lock, renewed in the background; `check` throws once a renewal failed. `live` is each
 * partition's live generation when the lock was taken (a replay that stopped halfway through its
 * flips leaves partitions on different ones).
 */
export async function holdReplayLock(redis: RedisClient, keys: Keys, ttlMs: number) {
  defineLockScripts(redis)
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
