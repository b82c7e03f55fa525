// The codecs that read Bakery's environment variables (src/platform/config.ts declares them).
import * as t from 'io-ts'

export const IntFromString = (min: number, max: number) =>
  new t.Type<number, string, unknown>(
    `integer ${min}..${max}`,
    (u): u is number => typeof u === 'number',
    (u, c) => {
      if (typeof u !== 'string' || !/^\d+$/.test(u.trim())) return t.failure(u, c)
      const n = Number(u)
      return n >= min && n <= max ? t.success(n) : t.failure(u, c)
    },
    String,
  )

export const NumberFromString = (min: number) =>
  new t.Type<number, string, unknown>(
    `number >= ${min}`,
    (u): u is number => typeof u === 'number',
    (u, c) => {
      const n = typeof u === 'string' && u.trim() !== '' ? Number(u) : NaN
      return Number.isFinite(n) && n >= min ? t.success(n) : t.failure(u, c)
    },
    String,
  )

export const UrlString = (protocols: string[]) =>
  new t.Type<URL, string, unknown>(
    `URL (${protocols.join(', ')})`,
    (u): u is URL => u instanceof URL,
    (u, c) => {
      if (typeof u !== 'string' || !URL.canParse(u)) return t.failure(u, c)
      const url = new URL(u)
      return protocols.includes(url.protocol) ? t.success(url) : t.failure(u, c)
    },
    (url) => url.href,
  )

/**
 * One broker URL, or several nodes of one cluster, comma-separated. A node that names no user,
 * password or vhost takes them from the first, so `amqp://u:p@h1:5672/v,amqp://h2,amqp://h3`
 * reads as three nodes of vhost `v`; naming two different vhosts is an error.
 */
export const BrokerUrls = new t.Type<readonly URL[], string, unknown>(
  'URL (amqp:, amqps:), or several comma-separated nodes of one cluster with one vhost',
  (u): u is readonly URL[] => Array.isArray(u) && u.every((url) => url instanceof URL),
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c)
    const parts = u.split(',').map((part) => part.trim())
    if (!parts.every((part) => URL.canParse(part))) return t.failure(u, c)
    const urls = parts.map((part) => new URL(part))
    if (!urls.every((url) => url.protocol === 'amqp:' || url.protocol === 'amqps:'))
      return t.failure(u, c)
    const [first] = urls as [URL, ...URL[]]
    for (const url of urls.slice(1)) {
      if (!url.username && !url.password) {
        url.username = first.username
        url.password = first.password
      }
      if (url.pathname === '' || url.pathname === '/') url.pathname = first.pathname
    }
    return urls.every((url) => url.pathname === first.pathname) ? t.success(urls) : t.failure(u, c)
  },
  (urls) => urls.map((url) => url.href).join(','),
)

const QueueTypes = t.keyof({ classic: null, quorum: null })

export const BooleanString = new t.Type<boolean, string, unknown>(
  'boolean (true or false)',
  (u): u is boolean => typeof u === 'boolean',
  (u, c) => (u === 'true' || u === 'false' ? t.success(u === 'true') : t.failure(u, c)),
  String,
)

const LogLevels = t.keyof({
  fatal: null,
  error: null,
  warn: null,
  info: null,
  debug: null,
  trace: null,
  silent: null,
})

export const NamespaceString = new t.Type<string, string, unknown>(
  'namespace ([A-Za-z0-9_.-]{1,64})',
  (u): u is string => typeof u === 'string',
  (u, c) => (typeof u === 'string' && /^[\w.-]{1,64}$/.test(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
)

export const QueueType = QueueTypes as t.Type<t.TypeOf<typeof QueueTypes>, string, unknown>
export const LogLevel = LogLevels as t.Type<t.TypeOf<typeof LogLevels>, string, unknown>

/** `host:port` pairs, comma-separated; the empty string is none. */
export const HostPorts = new t.Type<readonly { host: string; port: number }[], string, unknown>(
  'list of host:port, comma-separated (or empty)',
  (u): u is readonly { host: string; port: number }[] => Array.isArray(u),
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c)
    if (u.trim() === '') return t.success([])
    const nodes = u
      .split(',')
      .map((part) => /^\s*([\w.-]+|\[[\da-fA-F:]+\]):(\d{1,5})\s*$/.exec(part))
    if (!nodes.every((match) => match && Number(match[2]) <= 65535)) return t.failure(u, c)
    return t.success(nodes.map((match) => ({ host: match![1]!, port: Number(match![2]) })))
  },
  (nodes) => nodes.map(({ host, port }) => `${host}:${port}`).join(','),
)

/** How many replicas must have a write: a count, or `auto` (one on a Redis Cluster, else none). */
export const ReplicaCount = new t.Type<number | 'auto', string, unknown>(
  'auto or an integer 0..5',
  (u): u is number | 'auto' => u === 'auto' || typeof u === 'number',
  (u, c) =>
    u === 'auto'
      ? t.success('auto')
      : typeof u === 'string' && /^[0-5]$/.test(u.trim())
        ? t.success(Number(u))
        : t.failure(u, c),
  String,
)
