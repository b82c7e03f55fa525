import type { Redis, Result } from 'ioredis'
import type { Keys } from '../platform/keys'

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

export const LOCK_TTL_MS = 30_000

const defined = new WeakSet<Redis>()

/** Registers the lock's scripts on `redis`, once per client. */
function defineLockScripts(redis: Redis): void {
  if (defined.has(redis)) return
  redis.defineCommand('bakeryAcquireReplay', { numberOfKeys: 3, lua: ACQUIRE })
  redis.defineCommand('bakeryFlipGeneration', { numberOfKeys: 2, lua: FLIP })
  redis.defineCommand('bakeryRenewLock', { numberOfKeys: 1, lua: RENEW })
  defined.add(redis)
}

/** The replay lock, renewed in the background; `check` throws once a renewal failed. */
export async function holdReplayLock(redis: Redis, keys: Keys, ttlMs: number) {
  defineLockScripts(redis)
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
    /**
     * Makes the generation this replay built live, only while the lock holds this replay's token,
     * and only if the live generation is still the one it started from.
     */
    flip: () => redis.bakeryFlipGeneration(keys.replayLock, keys.viewGeneration, token, live),
    release: async () => {
      clearInterval(renew)
      await redis.bakeryRenewLock(keys.replayLock, String(token), 0).catch(() => undefined)
    },
  }
}
