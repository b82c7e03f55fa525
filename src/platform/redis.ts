import { context, type Context } from '@opentelemetry/api'
import { Redis, type Command } from 'ioredis'
import { redact } from './config'
import { delayAfter, reconnecting } from './backoff'
import { StoreUnavailable } from './errors'
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

/**
 * ioredis 6 speaks RESP3 unless told otherwise, and RESP3 changes reply shapes Bakery reads: a
 * stream read (XREAD, XREADGROUP) answers a map, and a script's `false` arrives as a boolean
 * instead of nil. Bakery's scripts and readers are written for RESP2, and it uses nothing RESP3
 * adds (push messages, client-side caching).
 */
export const RESP_PROTOCOL = 2

/** A Redis connection that reconnects with backoff and says, once per outage, what is wrong. */
export function connectRedis(
  url: URL,
  logger: Logger,
  { failFast, name, commandTimeoutMs }: RedisOptions,
): Redis {
  const log = logger.child({ component: 'redis', connection: name })
  const redis = new Redis(url.href, {
    connectionName: `bakery-${name}`,
    protocol: RESP_PROTOCOL,
    // Commands issued in the same tick go out in one write: a syscall per command was the
    // largest self time in every role's profile (docs/performance.md).
    enableAutoPipelining: true,
    enableOfflineQueue: !failFast,
    maxRetriesPerRequest: failFast ? 1 : null,
    retryStrategy: (times) => delayAfter(reconnecting, times),
    ...(commandTimeoutMs === undefined ? {} : { commandTimeout: commandTimeoutMs }),
  })
  if (tracesAreRecorded() && commandsAreTraced()) sendEachCommandFromItsCaller(redis)
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

/** Whether the ioredis instrumentation wrapped `sendCommand` (BAKERY_TRACE_REDIS). */
function commandsAreTraced(): boolean {
  return (Redis.prototype.sendCommand as { __wrapped?: unknown }).__wrapped === true
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

// What ioredis rejects a command with when the server cannot be reached or answered in time. It
// throws plain Errors for these, so their messages are all there is to go by.
const UNREACHABLE = [
  'Connection is closed',
  "Stream isn't writeable",
  'Command timed out',
  'Socket timeout',
  'Cluster is disconnect',
  "Cluster isn't ready",
  'None of startup nodes is available',
  'Node is disconnected',
  'No master node is available',
  'Too many Cluster redirections',
]
const UNREACHABLE_NAMES = new Set(['MaxRetriesPerRequestError', 'ClusterAllFailedError'])
// Replies of a Redis that is up but cannot take the command now: loading its data set, running a
// slow script, out of memory, refusing writes (a replica, a failed save), or a cluster mid-failover.
const BUSY_REPLY =
  /^(LOADING|BUSY|OOM|READONLY|MISCONF|MASTERDOWN|NOREPLICAS|CLUSTERDOWN|TRYAGAIN)\b/
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
])

/**
 * `error` as a StoreUnavailable when it says Redis cannot answer now; undefined when it is anything
 * else (a script error, a malformed reply, a bug), which retrying would not cure.
 */
export function asStoreUnavailable(error: unknown): StoreUnavailable | undefined {
  if (error instanceof StoreUnavailable) return error
  if (!(error instanceof Error)) return undefined
  const code = (error as { code?: unknown }).code
  const unavailable =
    UNREACHABLE_NAMES.has(error.name) ||
    UNREACHABLE.some((message) => error.message.startsWith(message)) ||
    (error.name === 'ReplyError' && BUSY_REPLY.test(error.message)) ||
    (typeof code === 'string' && NETWORK_CODES.has(code))
  return unavailable ? new StoreUnavailable(error) : undefined
}
