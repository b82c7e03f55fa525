import type { ChainableCommander } from 'ioredis'
import { StoreUnavailable } from './errors'
import type { ScriptedRedis } from './scripts'

/**
 * How many replicas must have a write before it counts as done (WAIT), and how long to wait for
 * them. Redis replicates asynchronously: without this, a write its master acknowledged can vanish
 * with the master in a failover.
 */
export interface Replication {
  readonly replicas: number
  readonly timeoutMs: number
}

export const NOT_WAITING: Replication = { replicas: 0, timeoutMs: 0 }

const MAX_REDIRECTIONS = 4
const isRedirection = (error: unknown) =>
  error instanceof Error && /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /.test(error.message)

/**
 * Runs `write`, then, if replicas are required, WAITs for them on the same connection: a
 * pipeline goes to one node, so on a Redis Cluster the WAIT reaches the master that took the
 * write. Too few replicas in time is a StoreUnavailable (503 to a client, a retry to a handler),
 * though the write stays on the master and will be replicated: a retry finds it done.
 */
export async function writeReplicated<T>(
  redis: ScriptedRedis,
  { replicas, timeoutMs }: Replication,
  write: (redis: ScriptedRedis | ChainableCommander) => Promise<T> | ChainableCommander,
): Promise<T> {
  if (replicas === 0) return (await write(redis)) as T
  for (let attempt = 1; ; attempt++) {
    const pipeline = redis.pipeline()
    void write(pipeline)
    const [[writeError, written] = [], [waitError, acknowledged] = []] =
      (await pipeline.wait(replicas, timeoutMs).exec()) ?? []
    // A pipeline is not redirected: MOVED (a failover moved the slot) means nothing was
    // written, and the client has learnt the slot's new master: send it again, there.
    if (isRedirection(writeError) && attempt < MAX_REDIRECTIONS) continue
    if (writeError) throw writeError
    if (waitError) throw waitError
    if (Number(acknowledged) < replicas)
      throw new StoreUnavailable(
        new Error(
          `${Number(acknowledged)} of ${replicas} replicas acknowledged the write within ${timeoutMs} ms`,
        ),
      )
    return written as T
  }
}
