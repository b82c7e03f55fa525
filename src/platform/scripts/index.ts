import type { Cluster, Redis, Result } from 'ioredis'
import { APPEND, APPEND_ONCE } from './append'
import { COMMIT_SEGMENT, DROP_ORDER_STREAM } from './archive'
import { PARK, UNPARK } from './outbox'
import { ACQUIRE_REPLAY, FLIP_GENERATION, RENEW_LOCK } from './replay'
import { CLAIM_RESEND } from './sweeper'
import { GET_VIEW, GET_VIEW_WITH_TAIL, SAVE_IF_NEWER } from './views'

/*
 * Every Lua script Bakery runs, in one registry. Each lives as a delimited constant in the file
 * of its subject (append, outbox, views, replay, sweeper, archive), with its keys and arguments written
 * above it; here each is named, given its number of keys, and typed. `withScripts` defines them
 * all on a client once, and its type says so: the event store, the view store, the replay lock
 * and the sweeper take only a client that has them. Every script touches the keys of one
 * partition (one hash tag), so each runs within one Redis Cluster slot.
 */
const SCRIPTS = {
  bakeryAppend: { keys: 4, lua: APPEND },
  bakeryAppendOnce: { keys: 5, lua: APPEND_ONCE },
  bakeryPark: { keys: 2, lua: PARK },
  bakeryUnpark: { keys: 2, lua: UNPARK },
  bakerySaveView: { keys: 1, lua: SAVE_IF_NEWER },
  bakeryGetView: { keys: 1, lua: GET_VIEW },
  bakeryGetViewWithTail: { keys: 2, lua: GET_VIEW_WITH_TAIL },
  bakeryAcquireReplay: { keys: 2, lua: ACQUIRE_REPLAY },
  bakeryFlipGeneration: { keys: 2, lua: FLIP_GENERATION },
  bakeryRenewLock: { keys: 1, lua: RENEW_LOCK },
  bakeryClaimResend: { keys: 1, lua: CLAIM_RESEND },
  bakeryCommitSegment: { keys: 5, lua: COMMIT_SEGMENT },
  bakeryDropOrderStream: { keys: 3, lua: DROP_ORDER_STREAM },
} as const

// The scripts' signatures, for clients and their pipelines alike (ioredis's own pattern).
declare module 'ioredis' {
  interface RedisCommander<Context> {
    bakeryAppend(
      orderStream: string,
      events: string,
      outbox: string,
      viewGeneration: string,
      ...args: (string | number)[]
    ): Result<number, Context>
    bakeryAppendOnce(
      orderStream: string,
      events: string,
      outbox: string,
      viewGeneration: string,
      claim: string,
      ...args: (string | number)[]
    ): Result<['appended', number] | ['claimed', string], Context>
    bakeryUnpark(
      outbox: string,
      parked: string,
      parkedId: string,
      ...fields: string[]
    ): Result<number, Context>
    bakeryPark(
      outbox: string,
      parked: string,
      group: string,
      outboxId: string,
      ...fields: string[]
    ): Result<number, Context>
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
    bakeryClaimResend(
      unfinished: string,
      orderKey: string,
      dueBefore: number,
      now: number,
    ): Result<number, Context>
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
    bakeryCommitSegment(
      events: string,
      archivedUpTo: string,
      segments: string,
      lock: string,
      pending: string,
      token: string,
      after: string,
      segment: string,
      lastId: string,
      nextId: string,
      ...finished: (string | number)[]
    ): Result<'lost' | 'moved' | 'committed', Context>
    bakeryDropOrderStream(
      orderStream: string,
      viewGeneration: string,
      pending: string,
      viewPrefix: string,
      orderKey: string,
      version: number,
    ): Result<'pending' | 'dropped' | 'gone' | 'kept', Context>
  }
}

declare const scriptsDefined: unique symbol

/** A client on which every script of SCRIPTS is defined. */
export type ScriptedRedis = (Redis | Cluster) & { readonly [scriptsDefined]: true }

const defined = new WeakSet<Redis | Cluster>()

/** Defines every script on `redis` (once per client) and returns it, typed as having them. */
export function withScripts(redis: Redis | Cluster): ScriptedRedis {
  if (!defined.has(redis)) {
    for (const [name, { keys, lua }] of Object.entries(SCRIPTS))
      redis.defineCommand(name, { numberOfKeys: keys, lua })
    defined.add(redis)
  }
  return redis as ScriptedRedis
}
