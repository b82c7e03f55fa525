import type * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import {
  BooleanString,
  BrokerUrls,
  HostPorts,
  IntFromString,
  LogLevel,
  NamespaceString,
  NumberFromString,
  QueueType,
  ReplicaCount,
  UrlString,
} from './config-types'

/**
 * The one place that reads the environment. Each variable is declared once with its default and a
 * one-line doc; `loadConfig` validates all of them and names every variable that is wrong.
 */

interface Variable<A> {
  readonly codec: t.Type<A, string, unknown>
  readonly default: string
  readonly doc: string
}
const variable = <A>(codec: t.Type<A, string, unknown>, def: string, doc: string): Variable<A> => ({
  codec,
  default: def,
  doc,
})

export const variables = {
  PORT: variable(
    IntFromString(0, 65535),
    '8000',
    'HTTP port of the reception (0 = any free port).',
  ),
  HEALTH_PORT: variable(
    IntFromString(0, 65535),
    '0',
    'HTTP port for /healthz and /readyz of the baker and projector (0 = any free port).',
  ),
  REDIS_URL: variable(
    UrlString(['redis:', 'rediss:']),
    'redis://127.0.0.1:6379',
    'Redis holding the event log, outbox and read model; a DB number in the path is honoured.',
  ),
  REDIS_CLUSTER_NODES: variable(
    HostPorts,
    '',
    'A Redis Cluster instead of one Redis: some of its nodes (host:port, comma-separated); user, password and TLS (rediss:) still come from REDIS_URL.',
  ),
  BAKERY_PARTITIONS: variable(
    IntFromString(1, 1024),
    '1',
    'Partitions of the event log, each with its own hash tag, global log and outbox, spread over the masters of a Redis Cluster; fixed once the store holds data.',
  ),
  REDIS_WAIT_REPLICAS: variable(
    ReplicaCount,
    'auto',
    'Replicas that must have an order before it is accepted (WAIT); auto: 1 on a Redis Cluster, 0 on one Redis.',
  ),
  REDIS_WAIT_TIMEOUT_MS: variable(
    IntFromString(1, 60_000),
    '1000',
    'How long the reception waits for REDIS_WAIT_REPLICAS before it answers 503 (the order may still be kept).',
  ),
  AMQP_URL: variable(
    BrokerUrls,
    'amqp://guest:guest@127.0.0.1:5672',
    'RabbitMQ carrying commands and events (the vhost in the path is honoured); several nodes of a cluster, comma-separated, are tried in turn.',
  ),
  QUEUE_TYPE: variable(
    QueueType,
    'classic',
    'classic (one broker) or quorum (replicated over a cluster); RabbitMQ cannot change the type of an existing queue.',
  ),
  QUEUE_DELIVERY_LIMIT: variable(
    IntFromString(1, 1000),
    '20',
    'Quorum queues: deliveries of one message (handed back by consumers that died) before RabbitMQ dead-letters it.',
  ),
  BAKERY_NAMESPACE: variable(
    NamespaceString,
    'bakery',
    'Prefix of every Redis key, so that several Bakeries can share one Redis.',
  ),
  BAKE_TIME_SCALE: variable(
    NumberFromString(0),
    '1',
    "Multiplies the original's bake time (FNV-1a of the pastry mod 100 ms); 0 bakes instantly.",
  ),
  PREFETCH: variable(
    IntFromString(1, 10000),
    '32',
    'Messages a consumer holds unacknowledged at once (its concurrency).',
  ),
  RETRY_MAX_ATTEMPTS: variable(
    IntFromString(1, 100),
    '8',
    'Times a message is handled before it is dead-lettered after transient errors.',
  ),
  RETRY_INITIAL_DELAY_MS: variable(
    IntFromString(1, 3_600_000),
    '100',
    'Delay before the first retry; it doubles on each attempt.',
  ),
  RETRY_MAX_DELAY_MS: variable(
    IntFromString(1, 3_600_000),
    '5000',
    'Upper bound of the retry delay.',
  ),
  RELAY_CLAIM_AFTER_MS: variable(
    IntFromString(100, 3_600_000),
    '15000',
    'How long an outbox entry may sit unconfirmed on another relay before this one takes it over.',
  ),
  STUCK_ORDER_AFTER_MS: variable(
    IntFromString(100, 86_400_000),
    '300000',
    "How old an unfinished order may get before a baker's sweeper sends its PlaceOrder again.",
  ),
  SHUTDOWN_TIMEOUT_MS: variable(
    IntFromString(0, 600_000),
    '10000',
    'How long a stopping role waits for in-flight work before it exits anyway.',
  ),
  LOG_LEVEL: variable(LogLevel, 'info', 'Log level (pino).'),
  JAEGER_UI_URL: variable(
    UrlString(['http:', 'https:']),
    'http://localhost:16686',
    'Jaeger UI, for the trace links Bakery prints.',
  ),
  BAKERY_TRACE_REDIS: variable(
    BooleanString,
    'false',
    'Adds a span per Redis command to the traces (about 10 more per order), to look into Redis.',
  ),
  SSE_HEARTBEAT_MS: variable(
    IntFromString(100, 600_000),
    '15000',
    'Interval of the comment lines that keep an idle GET /orders/:key/updates stream open through proxies.',
  ),
  SSE_MAX_STREAMS_PER_CLIENT: variable(
    IntFromString(1, 1_000_000),
    '32',
    'GET /orders/:key/updates streams one client address may have open at once; past it, 429.',
  ),
  SSE_MAX_STREAM_SECONDS: variable(
    IntFromString(1, 86_400),
    '900',
    'How long an update stream stays open; then it ends and the client reconnects with Last-Event-ID.',
  ),
  IDEMPOTENCY_TTL_SECONDS: variable(
    IntFromString(1, 31_536_000),
    '86400',
    'How long POST /orders remembers an Idempotency-Key (a retry after that places a new order).',
  ),
  OUTBOX_MAX_DEPTH: variable(
    IntFromString(0, 100_000_000),
    '100000',
    'The reception answers 503 to new orders while the outbox holds this many entries (0 = no limit).',
  ),
  REDIS_COMMAND_TIMEOUT_MS: variable(
    IntFromString(10, 600_000),
    '2000',
    "How long the reception waits for Redis to answer a request's command before it answers 503.",
  ),
  MAX_REQUESTS_IN_FLIGHT: variable(
    IntFromString(1, 100_000),
    '512',
    'Requests the reception works on at once; past it, 503 with Retry-After (update streams count only while they open).',
  ),
  HTTP_HEADERS_TIMEOUT_MS: variable(
    IntFromString(100, 600_000),
    '10000',
    "How long a client may take to send a request's headers before the reception closes the connection.",
  ),
  HTTP_REQUEST_TIMEOUT_MS: variable(
    IntFromString(100, 3_600_000),
    '30000',
    'How long a client may take to send a whole request (headers and body); at least HTTP_HEADERS_TIMEOUT_MS.',
  ),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: variable(
    IntFromString(100, 600_000),
    '5000',
    'How long an idle keep-alive connection stays open.',
  ),
} as const

type Variables = typeof variables
export type Config = { readonly [K in keyof Variables]: t.TypeOf<Variables[K]['codec']> }

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n  ${problems.join('\n  ')}`)
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = []
  const config: Record<string, unknown> = {}
  for (const [name, v] of Object.entries(variables) as [keyof Variables, Variable<unknown>][]) {
    const raw = env[name] ?? v.default
    const decoded = v.codec.decode(raw)
    if (isLeft(decoded)) {
      problems.push(`${name}=${JSON.stringify(raw)} is not a valid ${v.codec.name}: ${v.doc}`)
    } else {
      config[name] = decoded.right
    }
  }
  const { HTTP_HEADERS_TIMEOUT_MS: headers, HTTP_REQUEST_TIMEOUT_MS: request } = config
  if (typeof headers === 'number' && typeof request === 'number' && request < headers)
    problems.push(
      `HTTP_REQUEST_TIMEOUT_MS=${request} is less than HTTP_HEADERS_TIMEOUT_MS=${headers}: the whole request cannot take less time than its headers`,
    )
  if (problems.length > 0) throw new ConfigError(problems)
  return config as Config
}

/** A URL with its password masked, for log lines. */
export function redact(url: URL): string {
  if (!url.password) return url.href
  const copy = new URL(url.href)
  copy.password = '***'
  return copy.href
}
