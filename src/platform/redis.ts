import { context, type Context } from '@opentelemetry/api'
import { Cluster, Redis, type Command, type RedisOptions as ClientOptions } from 'ioredis'
import { redact, type Config } from './config'
import { delayAfter, reconnecting } from './backoff'
import { StoreUnavailable } from './errors'
import type { Logger } from './logger'
import type { Replication } from './replication'
import { withScripts, type ScriptedRedis } from './scripts'
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
  /**
   * For a tool run by a person who wants an answer: connect on `connect()` or the first command,
   * and never reconnect (a failure is reported at once instead of retried for minutes).
   */
  readonly once?: boolean
}

/**
 * ioredis 6 speaks RESP3 unless told otherwise, and RESP3 changes reply shapes Bakery reads: a
 * stream read (XREAD, XREADGROUP) answers a map, and a script's `false` arrives as a boolean
 * instead of nil. Bakery's scripts and readers are written for RESP2, and it uses nothing RESP3
 * adds (push messages, client-side caching).
 */
export const RESP_PROTOCOL = 2

/** One Redis or a Redis Cluster: both speak every command Bakery sends. */
export type RedisClient = Redis | Cluster

/** Where Bakery's Redis is: REDIS_URL, or the nodes of a cluster with REDIS_URL's credentials. */
export type RedisTarget = Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>

export const isCluster = (target: RedisTarget) => target.REDIS_CLUSTER_NODES.length > 0

/** What a write waits for (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS); see Replication. */
export function replicationOf(
  config: RedisTarget & Pick<Config, 'REDIS_WAIT_REPLICAS' | 'REDIS_WAIT_TIMEOUT_MS'>,
): Replication {
  const wanted = config.REDIS_WAIT_REPLICAS
  return {
    replicas: wanted === 'auto' ? (isCluster(config) ? 1 : 0) : wanted,
    timeoutMs: config.REDIS_WAIT_TIMEOUT_MS,
  }
}

/** Where Redis is, for a message to a person (no password). */
export const describeTarget = (target: RedisTarget) =>
  isCluster(target)
    ? `the Redis Cluster at ${target.REDIS_CLUSTER_NODES.map((n) => `${n.host}:${n.port}`).join(',')}`
    : `Redis at ${redact(target.REDIS_URL)}`

/**
 * A connection to Redis, or to a Redis Cluster through ioredis's cluster client (it follows MOVED
 * and ASK, and finds the new master after a failover), that reconnects with backoff and says, once
 * per outage, what is wrong.
 */
export function connectRedis(
  target: RedisTarget,
  logger: Logger,
  { failFast, name, commandTimeoutMs, once = false }: RedisOptions,
): ScriptedRedis {
  const retry = (times: number) => (once ? null : delayAfter(reconnecting, times))
  const url = target.REDIS_URL
  const log = logger.child({ component: 'redis', connection: name })
  const options: ClientOptions = {
    connectionName: `bakery-${name}`,
    protocol: RESP_PROTOCOL,
    maxRetriesPerRequest: failFast || once ? 1 : null,
    ...(commandTimeoutMs === undefined ? {} : { commandTimeout: commandTimeoutMs }),
  }
  const where = describeTarget(target)
  const redis = isCluster(target)
    ? new Cluster([...target.REDIS_CLUSTER_NODES], {
        redisOptions: {
          ...options,
          ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
          ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
          ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
        },
        enableAutoPipelining: true,
        enableOfflineQueue: !failFast || once,
        // Writes and reads go to masters: a replica may not have the latest entries of a stream.
        scaleReads: 'master',
        clusterRetryStrategy: retry,
        lazyConnect: once,
      })
    : new Redis(url.href, {
        ...options,
        // Commands issued in the same tick go out in one write: a syscall per command was the
        // largest self time in every role's profile (docs/performance.md).
        enableAutoPipelining: true,
        enableOfflineQueue: !failFast || once,
        retryStrategy: retry,
        lazyConnect: once,
      })
  if (redis instanceof Redis && tracesAreRecorded() && commandsAreTraced())
    sendEachCommandFromItsCaller(redis)
  if (once) {
    redis.on('error', () => undefined)
    return withScripts(redis)
  }
  // An outage is announced once, by whichever comes first: a failed attempt to connect, or the
  // connection dropping (Redis may be back before a reconnect ever fails, and that is an outage too).
  let down = false
  redis.on('error', (error: Error) => {
    if (down) return
    down = true
    log.error(
      `cannot reach ${where} (${error.message}); is it running? ` +
        '(redis-server --daemonize yes) - retrying',
    )
  })
  redis.on('reconnecting', () => {
    if (down) return
    down = true
    log.warn(`lost the connection to ${where}; reconnecting`)
  })
  redis.on('ready', () => {
    if (down) log.info('Redis is back')
    down = false
  })
  return withScripts(redis)
}

/** A second connection like `redis`, e.g. for a blocking read that would hold the first. */
export function duplicateClient(redis: RedisClient): ScriptedRedis {
  // The two classes' duplicate() differ in signature, so the union cannot call it as one.
  const copy = redis instanceof Redis ? redis.duplicate() : redis.duplicate()
  copy.on('error', () => undefined)
  return withScripts(copy)
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
// AbortError: the connection closed with the command sent and unanswered (a master killed
// mid-pipeline); whether it ran is unknown, as with a timeout.
const UNREACHABLE_NAMES = new Set([
  'MaxRetriesPerRequestError',
  'ClusterAllFailedError',
  'AbortError',
])
// Replies of a Redis that is up but cannot take the command now: loading its data set, running a
// slow script, out of memory, refusing writes (a replica, a failed save), or a cluster mid-failover
// (a redirection ioredis did not follow: in a pipeline, nothing of it was run).
const BUSY_REPLY =
  /^(LOADING|BUSY|OOM|READONLY|MISCONF|MASTERDOWN|NOREPLICAS|CLUSTERDOWN|TRYAGAIN|MOVED|ASK)\b/
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
