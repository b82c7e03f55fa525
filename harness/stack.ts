// The shared Redis and RabbitMQ, and a namespace and vhost of one's own on them: what the tests and
// the benchmarks run Bakery against.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'

const run = promisify(execFile)

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const AMQP_BASE = 'amqp://guest:guest@127.0.0.1:5672'
export const ROOT = join(__dirname, '..')

/** A Redis key namespace no other run uses. */
export const uniqueNamespace = (label: string) => `test-${label}-${randomBytes(4).toString('hex')}`

/**
 * Deletes every key of a namespace: they all carry its name first in their hash tag (`{ns}` or
 * `{ns:<partition>}`).
 */
export async function dropNamespace(namespace: string, url = REDIS_URL): Promise<void> {
  const redis = new Redis(url)
  try {
    const stream = redis.scanStream({ match: `{${namespace}[}:]*`, count: 1000 })
    for await (const keys of stream as AsyncIterable<string[]>)
      if (keys.length) await redis.unlink(...keys)
  } finally {
    redis.disconnect()
  }
}

export interface Vhost {
  readonly name: string
  readonly url: string
  /** The broker's own count of a queue's ready and delivered-but-unacknowledged messages. */
  readonly queue: (queue: string) => Promise<{ ready: number; unacknowledged: number }>
  /** Every exchange declared in the vhost, but the broker's own (`amq.*`, the default). */
  readonly exchanges: () => Promise<string[]>
  readonly drop: () => Promise<void>
}

/** A RabbitMQ vhost of its own, so the queues and exchanges of one run never meet another's. */
export async function createVhost(label: string): Promise<Vhost> {
  const name = `test-${label}-${randomBytes(4).toString('hex')}`
  await run('rabbitmqctl', ['-q', 'add_vhost', name])
  await run('rabbitmqctl', ['-q', 'set_permissions', '-p', name, 'guest', '.*', '.*', '.*'])
  const list = async (what: string, columns: readonly string[]) => {
    const args = ['-q', '--no-table-headers', what, '-p', name, ...columns]
    const { stdout } = await run('rabbitmqctl', args)
    return stdout
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => line.split('\t').map((cell) => cell.trim()))
  }
  return {
    name,
    url: `${AMQP_BASE}/${encodeURIComponent(name)}`,
    queue: async (queue) => {
      const rows = await list('list_queues', ['name', 'messages_ready', 'messages_unacknowledged'])
      const row = rows.find(([queueName]) => queueName === queue)
      if (!row) throw new Error(`no queue ${queue} in vhost ${name}`)
      return { ready: Number(row[1]), unacknowledged: Number(row[2]) }
    },
    exchanges: async () =>
      (await list('list_exchanges', ['name']))
        .map(([exchange = '']) => exchange)
        .filter((exchange) => exchange !== '' && !exchange.startsWith('amq.')),
    drop: async () => {
      await run('rabbitmqctl', ['-q', 'delete_vhost', name]).catch(() => undefined)
    },
  }
}

export async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  if (typeof address !== 'object' || address === null) throw new Error('no port')
  return address.port
}

/**
 * The environment of a role on its own vhost and namespace: any free ports, no trace export
 * unless `overrides` asks for it.
 */
export function isolatedEnv(
  amqpUrl: string,
  namespace: string,
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    AMQP_URL: amqpUrl,
    REDIS_URL,
    BAKERY_NAMESPACE: namespace,
    PORT: '0',
    HEALTH_PORT: '0',
    OTEL_SDK_DISABLED: 'true',
    ...overrides,
  }
}

/** A vhost and namespace of their own, and the environment that points the roles at them. */
export async function isolatedBakery(label: string, extra: Record<string, string> = {}) {
  const vhost = await createVhost(label)
  const namespace = uniqueNamespace(label)
  const env = isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0', ...extra })
  return { vhost, namespace, env }
}
