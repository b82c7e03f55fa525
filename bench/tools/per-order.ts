// What one order costs, counted rather than timed, so that a busy machine does not blur it:
//   - the messages that cross RabbitMQ (a queue of this bench's own, bound to every exchange);
//   - the Redis commands and Lua script calls (INFO commandstats of a redis-server of its own);
//   - the CPU milliseconds of each role, at a low, steady rate (the one timed figure here).
// The three roles run from dist/ (npm run build first), with instant bakes, and tracing off or
// (--tracing) exported over OTLP/HTTP protobuf to a sink here that counts the bytes.
//   npx tsx bench/tools/per-order.ts [--orders 200] [--rate 50] [--tracing] [--trace-redis]
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import amqp from 'amqplib'
import { Redis } from 'ioredis'
import { keys } from '../../src/platform/keys'
import { sampleProcess } from '../procstat'
import {
  createVhost,
  freePort,
  isolatedEnv,
  receptionUrl,
  postOrder,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from '../../harness'

const { values } = parseArgs({
  options: {
    orders: { type: 'string', default: '200' },
    rate: { type: 'string', default: '50' },
    tracing: { type: 'boolean', default: false },
    'trace-redis': { type: 'boolean', default: false },
  },
})
const ORDERS = Number(values.orders)
const RATE = Number(values.rate)

/** Takes OTLP/HTTP exports and counts their bytes. */
async function startSink(): Promise<{ url: string; bytes: () => number; close: () => void }> {
  let bytes = 0
  const server = createServer((req, res) => {
    req.on('data', (chunk: Buffer) => (bytes += chunk.length))
    req.on('end', () => res.writeHead(200).end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, bytes: () => bytes, close: () => server.close() }
}

async function main(): Promise<void> {
  const sink = values.tracing ? await startSink() : undefined
  const dir = mkdtempSync(join(tmpdir(), 'bakery-per-order-'))
  const port = await freePort()
  const server = spawn('redis-server', ['--port', String(port), '--dir', dir, '--save', ''], {
    stdio: 'ignore',
  })
  const redisUrl = `redis://127.0.0.1:${port}`
  const redis = new Redis(redisUrl, { lazyConnect: true })
  const vhost = await createVhost('per-order')
  const roles: [string, RoleProcess][] = []
  try {
    await waitFor('redis-server', async () => (await redis.connect().then(() => true)) || false)
    const namespace = uniqueNamespace('per-order')
    const k = keys(namespace)
    const env = {
      ...isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0' }),
      REDIS_URL: redisUrl,
      ...(sink && {
        OTEL_SDK_DISABLED: 'false',
        OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
        OTEL_BSP_SCHEDULE_DELAY: '200',
        BAKERY_TRACE_REDIS: String(values['trace-redis']),
      }),
    }
    for (const name of ['reception', 'baker', 'projector'])
      roles.push([name, await startRole(name, env)])
    const base = receptionUrl(roles[0]![1])

    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createChannel()
    const { queue } = await channel.assertQueue('', { exclusive: true })
    const exchanges = await vhost.exchanges()
    for (const exchange of exchanges) await channel.bindQueue(queue, exchange, '')

    // The bench's own Redis calls, subtracted from the counts: an order is finished when its
    // view says so and the outbox is empty (its OrderBaked was relayed and acknowledged).
    const own = new Map<string, number>()
    const count = (name: string) => own.set(name, (own.get(name) ?? 0) + 1)
    const settled = async (order: string) => {
      count('hget')
      count('xlen')
      const [status, outbox] = await Promise.all([
        redis.hget(k.view(order), 'status'),
        redis.xlen(k.partitions[0]!.outbox),
      ])
      return status === 'finished' && outbox === 0
    }

    // A few orders first, so that what is measured is the steady state.
    let last = ''
    for (let i = 0; i < 10; i++) last = await postOrder(base)
    await waitFor('the warm-up to settle', () => settled(last))
    await channel.purgeQueue(queue)
    await redis.config('RESETSTAT')
    own.clear()
    const bytesBefore = sink?.bytes() ?? 0
    const cpuBefore = roles.map(([, role]) => sampleProcess(role.child.pid!)?.cpuS ?? 0)

    const orders: string[] = []
    const started = performance.now()
    for (let i = 0; i < ORDERS; i++) {
      const due = started + (i * 1000) / RATE
      const wait = due - performance.now()
      if (wait > 0) await sleep(wait)
      orders.push(await postOrder(base))
    }
    await waitFor('every order to be finished', () => settled(orders[orders.length - 1]!), {
      timeoutMs: 60_000,
    })
    const cpuAfter = roles.map(([, role]) => sampleProcess(role.child.pid!)?.cpuS ?? 0)
    const stats = (await redis.info('commandstats')).split('\n')
    let messages = 0
    while (await channel.get(queue, { noAck: true })) messages++
    await connection.close()

    const commands = new Map<string, number>()
    for (const line of stats) {
      const match = /^cmdstat_(\S+):calls=(\d+)/.exec(line.trim())
      if (!match) continue
      const calls = Number(match[2]) - (own.get(match[1]!) ?? 0) - (match[1] === 'info' ? 1 : 0)
      if (calls > 0) commands.set(match[1]!, calls)
    }
    const total = [...commands.values()].reduce((a, b) => a + b, 0)
    const rows: [string, string][] = [
      ['orders', String(ORDERS)],
      ['messages through RabbitMQ per order', (messages / ORDERS).toFixed(2)],
      ['Redis commands per order (all)', (total / ORDERS).toFixed(2)],
      ...[...commands.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([name, calls]): [string, string] => [`  ${name}`, (calls / ORDERS).toFixed(2)]),
      ...roles.map(([name], i): [string, string] => [
        `CPU ms per order, ${name}`,
        (((cpuAfter[i]! - cpuBefore[i]!) * 1000) / ORDERS).toFixed(3),
      ]),
      [
        'CPU ms per order, the three roles',
        (((sum(cpuAfter) - sum(cpuBefore)) * 1000) / ORDERS).toFixed(3),
      ],
      ...(sink
        ? [['OTLP bytes per order (so far)', ((sink.bytes() - bytesBefore) / ORDERS).toFixed(0)]]
        : []),
    ] as [string, string][]
    for (const [label, value] of rows) console.log(`${label.padEnd(40)} ${value.padStart(8)}`)
    console.log(
      JSON.stringify({
        bench: 'per-order',
        at: new Date().toISOString(),
        orders: ORDERS,
        rate: RATE,
        tracing: values.tracing,
        cpuMsPerOrder: ((sum(cpuAfter) - sum(cpuBefore)) * 1000) / ORDERS,
        messagesPerOrder: messages / ORDERS,
        redisCommandsPerOrder: total / ORDERS,
        commandsPerOrder: Object.fromEntries(
          [...commands].map(([name, calls]) => [name, calls / ORDERS]),
        ),
      }),
    )
  } finally {
    await Promise.all(roles.map(([, role]) => role.stop()))
    redis.disconnect()
    server.kill('SIGTERM')
    await vhost.drop()
    rmSync(dir, { recursive: true, force: true })
    sink?.close()
  }
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0)

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
