import { context, type Context } from '@opentelemetry/api'
import { Redis, type Command } from 'ioredis'
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
  /**
   * A command not answered in this many ms fails (REDIS_COMMAND_TIMEOUT_MS): a Redis that is
   * connected but stalls must not hold requests forever. Not for a connection that blocks.
   */
  readonly commandTimeoutMs?: number
}

/** A Redis connection that reconnects with backoff and says, once per outage, what is wrong. */
export function connectRedis(
  url: URL,
  logger: Logger,
  { failFast, name, commandTimeoutMs }: RedisOptions,
): Redis {
  const log = logger.child({ component: 'redis', connection: name })
  const redis = new Redis(url.href, {
    connectionName: `bakery-${name}`,
    // Commands issued in the same tick go out in one write: a syscall per command was the
    // largest self time in every role's profile (docs/performance.md).
    enableAutoPipelining: true,
    enableOfflineQueue: !failFast,
    maxRetriesPerRequest: failFast ? 1 : null,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 5000),
    ...(commandTimeoutMs === undefined ? {} : { commandTimeout: commandTimeoutMs }),
  })
  if (tracesAreRecorded()) sendEachCommandFromItsCaller(redis)
  // An outage is announced once, by whichever comes first: a failed attempt to connect, or the
  // connection dropping (Redis may be back before a reconnect ever fails, and that is an outage too).
  let down = false
  redis.on('error', (error: Error) => {
    if (down) return
    down = true
    log.error(
      `cannot reach Redis at ${redact(url)} (${error.message}); is it running? ` +
        '(redis-server --daemonize yes) - retrying',
    )
  })
  redis.on('reconnecting', () => {
    if (down) return
    down = true
    log.warn(`lost the connection to Redis at ${redact(url)}; reconnecting`)
  })
  redis.on('ready', () => {
    if (down) log.info('Redis is back')
    down = false
  })
  return redis
}

/**
 * An auto-pipeline is sent from the context of the command that opened it, so the ioredis
 * instrumentation would hang every command's span under that first caller: other orders' Redis
 * calls would land in its trace. Each queued command remembers the context it was issued in and
 * is sent from that context.
 */
function sendEachCommandFromItsCaller(redis: Redis): void {
  const issuedIn = new WeakMap<Command, Context>()
  const openPipeline = redis.pipeline.bind(redis)
  redis.pipeline = (commands) => {
    const pipeline = openPipeline(commands) as ReturnType<typeof openPipeline> & QueuesCommands
    const queue = pipeline.sendCommand.bind(pipeline)
    pipeline.sendCommand = (command) => {
      issuedIn.set(command, context.active())
      return queue(command)
    }
    return pipeline
  }
  // The instance's own sendCommand wraps the prototype's, which the instrumentation patched.
  const send = redis.sendCommand.bind(redis)
  redis.sendCommand = (command, ...rest) => {
    const caller = issuedIn.get(command)
    return caller ? context.with(caller, () => send(command, ...rest)) : send(command, ...rest)
  }
}

interface QueuesCommands {
  sendCommand(command: Command): unknown
}

/** A Redis reply's flat `field, value, field, value …` list as a record. */
export function fieldRecord(flat: readonly string[]): Record<string, string> {
  const record: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i]!] = flat[i + 1]!
  return record
}

/** Orders two stream ids as Redis does: milliseconds, then the sequence number. */
export function compareStreamIds(a: string, b: string): number {
  const [aMs = '0', aSeq = '0'] = a.split('-')
  const [bMs = '0', bSeq = '0'] = b.split('-')
  const ms = BigInt(aMs) - BigInt(bMs)
  if (ms !== 0n) return ms < 0n ? -1 : 1
  const seq = BigInt(aSeq) - BigInt(bSeq)
  return seq === 0n ? 0 : seq < 0n ? -1 : 1
}
