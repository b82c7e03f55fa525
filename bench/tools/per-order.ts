// What one order costs, counted rather than timed, so that a busy machine does not blur it:
//   - the messages that cross RabbitMQ (a queue of this bench's own, bound to every exchange);
//   - the Redis commands and Lua script calls (INFO commandstats of a redis-server of its own);
//   - the CPU milliseconds per order of each role, at a low, steady rate (the timed figures);
//   - those of that redis-server (INFO cpu: all threads, and the main thread that runs the
//     commands), of the local RabbitMQ's beam.smp (/proc; a shared broker, so others' traffic and
//     this tool's counting queue count too) and of this tool itself (the load it generates).
// Each CPU figure is given as measured and net of the background: the same processes' CPU per
// second over --idle seconds with no orders (blocking reads timing out, timers), taken first.
// --partitions N runs the roles and this tool with BAKERY_PARTITIONS=N. --concurrency C places
// the orders C at a time as fast as they are answered instead of at --rate, and reports the
// orders/s from the first POST to the last order finished (the machine's saturation).
// The three roles run from dist/ (npm run build first), with instant bakes, and tracing off or
// (--tracing) exported over OTLP/HTTP protobuf to a sink here that counts the bytes.
//   npx tsx bench/tools/per-order.ts [--orders 200] [--rate 50 | --concurrency 32]
//     [--partitions 1] [--idle 5] [--tracing] [--trace-redis]
import { spawn, spawnSync } from 'node:child_process'
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
import { machineTicks, sampleProcess } from '../procstat'
import {
  createVhost,
  freePort,
  isolatedEnv,
  placeOrders,
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
    partitions: { type: 'string', default: '1' },
    concurrency: { type: 'string' },
    idle: { type: 'string', default: '5' },
  },
})
const ORDERS = Number(values.orders)
const RATE = Number(values.rate)
const PARTITIONS = Number(values.partitions)
const CONCURRENCY = values.concurrency === undefined ? undefined : Number(values.concurrency)
const IDLE_S = Number(values.idle)

/** CPU seconds so far of each process measured, by name. */
type CpuSample = Map<string, number>

/** The local RabbitMQ's Erlang VM, as bench/run.ts finds it; undefined when there is none. */
function beamPid(): number | undefined {
  const found = spawnSync('pgrep', ['-x', 'beam.smp'], { encoding: 'utf8' })
  return Number(found.stdout?.trim().split('\n')[0]) || undefined
}

/** used_cpu_sys + used_cpu_user of a Redis: all threads, and its main thread alone. */
async function redisCpu(redis: Redis): Promise<{ all: number; main: number }> {
  const info = await redis.info('cpu')
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1])
  return {
    all: field('used_cpu_sys') + field('used_cpu_user'),
    main: field('used_cpu_sys_main_thread') + field('used_cpu_user_main_thread'),
  }
}

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
    const k = keys(namespace, PARTITIONS)
    const env = {
      ...isolatedEnv(vhost.url, namespace, {
        BAKE_TIME_SCALE: '0',
        BAKERY_PARTITIONS: String(PARTITIONS),
      }),
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
    // view says so and every outbox is empty (its OrderBaked was relayed and acknowledged).
    const own = new Map<string, number>()
    const count = (name: string, n = 1) => own.set(name, (own.get(name) ?? 0) + n)
    const settled = async (order: string) => {
      count('hget')
      count('xlen', k.partitions.length)
      const [status, ...outboxes] = await Promise.all([
        redis.hget(k.view(order), 'status'),
        ...k.partitions.map((partition) => redis.xlen(partition.outbox)),
      ])
      return status === 'finished' && outboxes.every((length) => length === 0)
    }
    /** The first of `orders` whose view is not finished yet (one pipeline). */
    const firstUnfinished = async (orders: readonly string[]) => {
      count('hget', orders.length)
      const pipeline = redis.pipeline()
      for (const order of orders) pipeline.hget(k.view(order), 'status')
      const replies = (await pipeline.exec()) ?? []
      return orders.find((_, i) => replies[i]?.[1] !== 'finished')
    }

    const rabbit = beamPid()
    const measured = [
      ...roles.map(([name]) => name),
      'redis',
      'redis main thread',
      'rabbitmq',
      'this tool',
    ]
    const sampleCpu = async (): Promise<CpuSample> => {
      count('info')
      const redisNow = await redisCpu(redis)
      const sample: CpuSample = new Map(
        roles.map(([name, role]) => [name, sampleProcess(role.child.pid!)?.cpuS ?? NaN]),
      )
      sample.set('redis', redisNow.all)
      sample.set('redis main thread', redisNow.main)
      sample.set('rabbitmq', rabbit === undefined ? NaN : (sampleProcess(rabbit)?.cpuS ?? NaN))
      const { user, system } = process.cpuUsage()
      sample.set('this tool', (user + system) / 1e6)
      return sample
    }
    const cpuBetween = (a: CpuSample, b: CpuSample) =>
      new Map(measured.map((name) => [name, b.get(name)! - a.get(name)!]))

    // A few orders first, so that what is measured is the steady state; then the background.
    let last = ''
    for (let i = 0; i < 10; i++) last = await postOrder(base)
    await waitFor('the warm-up to settle', () => settled(last))
    const idleFrom = await sampleCpu()
    const idleStarted = performance.now()
    await sleep(IDLE_S * 1000)
    const idle = cpuBetween(idleFrom, await sampleCpu())
    const idleS = (performance.now() - idleStarted) / 1000
    await channel.purgeQueue(queue)
    await redis.config('RESETSTAT')
    own.clear()
    const bytesBefore = sink?.bytes() ?? 0
    const cpuBefore = await sampleCpu()
    const machineBefore = machineTicks()

    const started = performance.now()
    const orders: string[] = []
    if (CONCURRENCY !== undefined) orders.push(...(await placeOrders(base, ORDERS, CONCURRENCY)))
    else
      for (let i = 0; i < ORDERS; i++) {
        const due = started + (i * 1000) / RATE
        const wait = due - performance.now()
        if (wait > 0) await sleep(wait)
        orders.push(await postOrder(base))
      }
    const postedS = (performance.now() - started) / 1000
    let pending = orders.at(-1)
    let cpuAfter = cpuBefore
    let machineAfter = machineBefore
    let elapsedS = 0
    while (pending !== undefined) {
      const order = pending
      await waitFor('every order to be finished', () => settled(order), {
        timeoutMs: 120_000,
        intervalMs: 20,
      })
      elapsedS = (performance.now() - started) / 1000
      cpuAfter = await sampleCpu()
      machineAfter = machineTicks()
      pending = await firstUnfinished(orders)
    }
    const stats = (await redis.info('commandstats')).split('\n')
    const { messageCount: messages } = await channel.checkQueue(queue)
    await connection.close()

    const commands = new Map<string, number>()
    for (const line of stats) {
      const match = /^cmdstat_(\S+):calls=(\d+)/.exec(line.trim())
      if (!match) continue
      const calls = Number(match[2]) - (own.get(match[1]!) ?? 0)
      if (calls > 0) commands.set(match[1]!, calls)
    }
    const total = [...commands.values()].reduce((a, b) => a + b, 0)
    const machineBusy =
      (machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total || 1)
    // CPU ms per order: as measured, and less what the background would have used meanwhile.
    const load = cpuBetween(cpuBefore, cpuAfter)
    const cpu = Object.fromEntries(
      measured.map((name) => {
        const used = load.get(name)!
        const background = (idle.get(name)! / idleS) * elapsedS
        const perOrder = (s: number) => Number(((s * 1000) / ORDERS).toFixed(4))
        return [name, { measured: perOrder(used), net: perOrder(used - background) }]
      }),
    )
    const roleTotal = (key: 'measured' | 'net') =>
      sum(roles.map(([name]) => cpu[name]![key])).toFixed(3)
    const cpuRows: [string, string][] = [
      ['CPU ms per order (measured / net)', ''],
      ...measured.map((name): [string, string] => [
        `  ${name}${name === 'rabbitmq' ? ' (shared)' : name === 'this tool' ? ' (the load)' : ''}`,
        `${cpu[name]!.measured.toFixed(3)} / ${cpu[name]!.net.toFixed(3)}`,
      ]),
      ['  the three roles', `${roleTotal('measured')} / ${roleTotal('net')}`],
      ...measured.map((name): [string, string] => [
        `background CPU ms/s, ${name}`,
        ((idle.get(name)! * 1000) / idleS).toFixed(2),
      ]),
    ]
    const rows: [string, string][] = [
      ['orders', String(ORDERS)],
      ['partitions', String(PARTITIONS)],
      [
        CONCURRENCY === undefined
          ? `paced at ${RATE}/s, posted in s`
          : `${CONCURRENCY} at a time, posted in s`,
        postedS.toFixed(2),
      ],
      ['first POST to last finished, s', elapsedS.toFixed(2)],
      ['orders/s end to end', (ORDERS / elapsedS).toFixed(0)],
      ['machine busy (all cores, everyone)', `${(machineBusy * 100).toFixed(0)} %`],
      ['messages through RabbitMQ per order', (messages / ORDERS).toFixed(2)],
      ['Redis commands per order (all)', (total / ORDERS).toFixed(2)],
      ...[...commands.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([name, calls]): [string, string] => [`  ${name}`, (calls / ORDERS).toFixed(2)]),
      ...cpuRows,
      ...(sink
        ? [['OTLP bytes per order (so far)', ((sink.bytes() - bytesBefore) / ORDERS).toFixed(0)]]
        : []),
    ] as [string, string][]
    for (const [label, value] of rows) console.log(`${label.padEnd(40)} ${value.padStart(15)}`)
    console.log(
      JSON.stringify({
        bench: 'per-order',
        at: new Date().toISOString(),
        orders: ORDERS,
        rate: CONCURRENCY === undefined ? RATE : undefined,
        concurrency: CONCURRENCY,
        partitions: PARTITIONS,
        tracing: values.tracing,
        ordersPerS: ORDERS / elapsedS,
        machineBusy,
        cpuMsPerOrder: cpu,
        backgroundCpuMsPerS: Object.fromEntries(
          measured.map((name) => [name, (idle.get(name)! * 1000) / idleS]),
        ),
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
