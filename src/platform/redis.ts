import { Redis } from 'ioredis'
import { redact } from './config'
import type { Logger } from './logger'
import { tracesAreRecorded } from './tracing'

export interface RedisOptions {
  /**
   * Fail commands at once while disconnected (true: the reception answers 503 instead of
   * hanging) or hold them until Redis is back (false: a consumer's message simply waits).
   */
  readonly failFast: boolean
  readonly name: string
}

/** A Redis connection that reconnects with backoff and says, once per outage, what is wrong. */
export function connectRedis(url: URL, logger: Logger, { failFast, name }: RedisOptions): Redis {
  const log = logger.child({ component: 'redis', connection: name })
  const redis = new Redis(url.href, {
    connectionName: `bakery-${name}`,
    // Commands issued in the same tick go out in one write: a syscall per command was the
    // largest self time in every role's profile (docs/performance.md). Not while tracing: a
    // pipeline is sent from the context of its first command, so the ioredis spans of other
    // messages' commands would land in that message's trace.
    enableAutoPipelining: !tracesAreRecorded(),
    enableOfflineQueue: !failFast,
    maxRetriesPerRequest: failFast ? 1 : null,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 5000),
  })
  let down = false
  redis.on('error', (error: Error) => {
    if (down) return
    down = true
    log.error(
      `cannot reach Redis at ${redact(url)} (${error.message}); is it running? ` +
        '(redis-server --daemonize yes) - retrying',
    )
  })
  redis.on('ready', () => {
    if (down) log.info('Redis is back')
    down = false
  })
  return redis
}
