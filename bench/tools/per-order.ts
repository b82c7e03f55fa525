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
// --cluster runs the store on a six-node Redis Cluster of its own instead (harness/
// redis-cluster.ts: three masters, a replica each; the roles get REDIS_CLUSTER_NODES, and P is 24
// unless --partitions says otherwise): the Redis commands are those of the three masters, the
// Redis CPU is given summed over the masters, summed over the replicas (what feeding them costs)
// and node by node. --wait-replicas N sets REDIS_WAIT_REPLICAS for the roles (auto unless given:
// 1 on a cluster), so that 1 and 0 compare the WAIT after each append with none. --replicas 0
// makes the cluster three masters alone (and the WAIT 0): what the masters spend feeding their
// replicas is the difference with --wait-replicas 0.
// POST latency is each POST's round trip as this tool sees it (paced, or C at a time).
// The three roles run from dist/ (npm run build first), with instant bakes, and tracing off or
// (--tracing) exported over OTLP/HTTP protobuf to a sink here that counts the bytes.
//   npx tsx bench/tools/per-order.ts [--orders 200] [--rate 50 | --concurrency 32]
//     [--partitions 1] [--idle 5] [--tracing] [--trace-redis]
//     [--cluster [--replicas 1|0] [--wait-replicas N]]
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import amqp from 'amqplib'
import { Cluster, Redis } from 'ioredis'
import { keys, type Keys } from '../../src/platform/keys'
import type { RedisClient } from '../../src/platform/redis'
import { startOtlpSink, tracingEnv } from '../otlp-sink'
import { machineTicks, sampleProcess } from '../procstat'
import {
  createVhost,
  freePort,
  isolatedEnv,
  receptionUrl,
  postOrder,
  startRedisCluster,
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
    partitions: { type: 'string' },
    concurrency: { type: 'string' },
    idle: { type: 'string', default: '5' },
    cluster: { type: 'boolean', default: false },
    replicas: { type: 'string', default: '1' },
    'wait-replicas': { type: 'string' },
  },
})
const ORDERS = Number(values.orders)
const RATE = Number(values.rate)
const CLUSTER = values.cluster
const PARTITIONS = Number(values.partitions ?? (CLUSTER ? 24 : 1))
const REPLICAS = values.replicas === '0' ? 0 : 1
// Without replicas a WAIT for one would fail every append.
const WAIT_REPLICAS = values['wait-replicas'] ?? (CLUSTER && REPLICAS === 0 ? '0' : undefined)
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

/** A node whose CPU is measured, over a connection of its own. */
interface StoreNode {
  readonly redis: Redis
  readonly role: 'redis' | 'master' | 'replica'
  readonly label: string
}

/** The Redis the roles use: one redis-server, or a Redis Cluster, of this tool's own. */
interface Store {
  /** What this tool reads the orders' progress through. */
  readonly client: RedisClient
  /** How the roles reach it. */
  readonly env: Record<string, string>
  readonly nodes: readonly StoreNode[]
  /** Partitions by master (its label); empty on one Redis. */
  readonly partitionsPerMaster: (k: Keys) => Promise<Map<string, number>>
  readonly close: () => Promise<void>
}

async function startOwnRedis(): Promise<Store> {
  const dir = mkdtempSync(join(tmpdir(), 'bakery-per-order-'))
  const port = await freePort()
  const server = spawn('redis-server', ['--port', String(port), '--dir', dir, '--save', ''], {
    stdio: 'ignore',
  })
  const redisUrl = `redis://127.0.0.1:${port}`
  const redis = new Redis(redisUrl, { lazyConnect: true })
  const close = async () => {
    redis.disconnect()
    server.kill('SIGTERM')
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitFor('redis-server', async () => (await redis.connect().then(() => true)) || false)
  } catch (error) {
    await close()
    throw error
  }
  return {
    client: redis,
    env: { REDIS_URL: redisUrl },
    nodes: [{ redis, role: 'redis', label: 'redis' }],
    partitionsPerMaster: async () => new Map(),
    close,
  }
}

async function startOwnCluster(): Promise<Store> {
  const cluster = await startRedisCluster(3, { replicas: REPLICAS })
  const connections: Redis[] = []
  let client: Cluster | undefined
  const close = async () => {
    client?.disconnect()
    for (const redis of connections) redis.disconnect()
    await cluster.close()
  }
  try {
    const masters = new Set((await cluster.masters()).map(({ port }) => port))
    const nodes = await Promise.all(
      cluster.nodes.map(async ({ port }): Promise<StoreNode> => {
        const redis = new Redis({ host: '127.0.0.1', port })
        connections.push(redis)
        if (masters.has(port)) return { redis, role: 'master', label: `master :${port}` }
        const of = /^master_port:(\d+)/m.exec(await redis.info('replication'))?.[1]
        return { redis, role: 'replica', label: `replica :${port} of :${of}` }
      }),
    )
    client = new Cluster(cluster.nodes.map(({ port }) => ({ host: '127.0.0.1', port })))
    const any = nodes[0]!.redis
    return {
      client,
      env: { REDIS_CLUSTER_NODES: cluster.seeds },
      nodes,
      partitionsPerMaster: async (k) => {
        const ranges = (await any.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
        const counts = new Map<string, number>()
        for (const partition of k.partitions) {
          const slot = Number(await any.call('CLUSTER', 'KEYSLOT', partition.events))
          const [, , [, port] = []] = ranges.find(([from, to]) => from <= slot && slot <= to) ?? []
          const label = `master :${port}`
          counts.set(label, (counts.get(label) ?? 0) + 1)
        }
        return counts
      },
      close,
    }
  } catch (error) {
    await close()
    throw error
  }
}

async function main(): Promise<void> {
  const sink = values.tracing ? await startOtlpSink() : undefined
  const store = CLUSTER ? await startOwnCluster() : await startOwnRedis()
  const redis = store.client
  // The nodes whose commands are counted: the one Redis, or the masters (a replica runs the
  // masters' writes again, which are not Bakery's commands).
  const counted = store.nodes.filter(({ role }) => role !== 'replica')
  const vhost = await createVhost('per-order').catch(async (error: unknown) => {
    await store.close()
    throw error
  })
  const roles: [string, RoleProcess][] = []
  try {
    const namespace = uniqueNamespace('per-order')
    const k = keys(namespace, PARTITIONS)
    const env = {
      ...isolatedEnv(vhost.url, namespace, {
        BAKE_TIME_SCALE: '0',
        BAKERY_PARTITIONS: String(PARTITIONS),
      }),
      ...store.env,
      ...(WAIT_REPLICAS !== undefined && { REDIS_WAIT_REPLICAS: WAIT_REPLICAS }),
      ...(sink && {
        ...tracingEnv(sink),
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
    /** The first of `orders` whose view is not finished yet (one pipeline per partition). */
    const firstUnfinished = async (orders: readonly string[]) => {
      count('hget', orders.length)
      const unfinished = new Set<string>()
      const byPartition = Map.groupBy(orders, (order) => k.of(order).index)
      for (const group of byPartition.values()) {
        const pipeline = redis.pipeline()
        for (const order of group) pipeline.hget(k.view(order), 'status')
        const replies = (await pipeline.exec()) ?? []
        group.forEach((order, i) => replies[i]?.[1] !== 'finished' && unfinished.add(order))
      }
      return orders.find((order) => unfinished.has(order))
    }

    const rabbit = beamPid()
    // Redis's CPU: the one server's, or the masters' and the replicas' summed, then node by node.
    const partitionsPerMaster = await store.partitionsPerMaster(k)
    const redisSeries: { name: string; nodes: StoreNode[]; thread: 'all' | 'main' }[] = CLUSTER
      ? [
          ...(['master', 'replica'] as const).flatMap((role) => {
            const nodes = store.nodes.filter((node) => node.role === role)
            const name = `redis ${role}s (${nodes.length})`
            if (nodes.length === 0) return []
            return [
              { name, nodes, thread: 'all' as const },
              { name: `${name} main thread`, nodes, thread: 'main' as const },
            ]
          }),
          ...store.nodes.map((node) => ({
            name: `  ${node.label}${node.role === 'master' ? `, ${partitionsPerMaster.get(node.label) ?? 0} partitions` : ''}`,
            nodes: [node],
            thread: 'all' as const,
          })),
        ]
      : [
          { name: 'redis', nodes: [...store.nodes], thread: 'all' },
          { name: 'redis main thread', nodes: [...store.nodes], thread: 'main' },
        ]
    const measured = [
      ...roles.map(([name]) => name),
      ...redisSeries.map(({ name }) => name),
      'rabbitmq',
      'this tool',
    ]
    const sampleCpu = async (): Promise<CpuSample> => {
      count('info', counted.length)
      const redisNow = new Map(
        await Promise.all(
          store.nodes.map(async (node) => [node, await redisCpu(node.redis)] as const),
        ),
      )
      const sample: CpuSample = new Map(
        roles.map(([name, role]) => [name, sampleProcess(role.child.pid!)?.cpuS ?? NaN]),
      )
      for (const { name, nodes, thread } of redisSeries)
        sample.set(name, sum(nodes.map((node) => redisNow.get(node)![thread])))
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
    for (const node of store.nodes) await node.redis.config('RESETSTAT')
    own.clear()
    const bytesBefore = sink?.stats().bytes ?? 0
    const cpuBefore = await sampleCpu()
    const machineBefore = machineTicks()

    // Each POST timed; C at a time as harness/orders.ts's placeOrders places them, or paced.
    const latencies: number[] = []
    const timed = async (body?: unknown) => {
      const from = performance.now()
      const order = await postOrder(base, body)
      latencies.push(performance.now() - from)
      return order
    }
    const started = performance.now()
    const orders: string[] = []
    if (CONCURRENCY !== undefined) {
      const label = randomBytes(3).toString('hex')
      let next = 0
      const worker = async () => {
        while (next < ORDERS) {
          const i = next++
          orders.push(
            await timed({ customer: `customer ${label} ${i}`, pastry: `pastry ${i % 23}` }),
          )
        }
      }
      await Promise.all(Array.from({ length: CONCURRENCY }, worker))
    } else
      for (let i = 0; i < ORDERS; i++) {
        const due = started + (i * 1000) / RATE
        const wait = due - performance.now()
        if (wait > 0) await sleep(wait)
        orders.push(await timed())
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
    const stats = (
      await Promise.all(counted.map(({ redis: node }) => node.info('commandstats')))
    ).flatMap((info) => info.split('\n'))
    const { messageCount: messages } = await channel.checkQueue(queue)
    await connection.close()

    const commands = new Map<string, number>()
    for (const line of stats) {
      const match = /^cmdstat_(\S+):calls=(\d+)/.exec(line.trim())
      if (match) commands.set(match[1]!, (commands.get(match[1]!) ?? 0) + Number(match[2]))
    }
    for (const [name, calls] of commands) {
      const net = calls - (own.get(name) ?? 0)
      if (net > 0) commands.set(name, net)
      else commands.delete(name)
    }
    latencies.sort((a, b) => a - b)
    const percentile = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN
    const latency = {
      mean: sum(latencies) / latencies.length,
      p50: percentile(50),
      p90: percentile(90),
      p99: percentile(99),
      max: latencies.at(-1) ?? NaN,
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
        `background CPU ms/s, ${name.trim()}`,
        ((idle.get(name)! * 1000) / idleS).toFixed(2),
      ]),
    ]
    const rows: [string, string][] = [
      ['orders', String(ORDERS)],
      ['partitions', String(PARTITIONS)],
      ...(CLUSTER
        ? [
            ['Redis Cluster, masters + replicas', `3 + ${3 * REPLICAS}`],
            ['REDIS_WAIT_REPLICAS', WAIT_REPLICAS ?? 'auto (1)'],
          ]
        : WAIT_REPLICAS !== undefined
          ? [['REDIS_WAIT_REPLICAS', WAIT_REPLICAS]]
          : []),
      [
        CONCURRENCY === undefined
          ? `paced at ${RATE}/s, posted in s`
          : `${CONCURRENCY} at a time, posted in s`,
        postedS.toFixed(2),
      ],
      ['first POST to last finished, s', elapsedS.toFixed(2)],
      ['orders/s end to end', (ORDERS / elapsedS).toFixed(0)],
      ['POST latency ms, mean / p50', `${latency.mean.toFixed(1)} / ${latency.p50.toFixed(1)}`],
      [
        'POST latency ms, p90 / p99 / max',
        [latency.p90, latency.p99, latency.max].map((ms) => ms.toFixed(1)).join(' / '),
      ],
      ['machine busy (all cores, everyone)', `${(machineBusy * 100).toFixed(0)} %`],
      ['messages through RabbitMQ per order', (messages / ORDERS).toFixed(2)],
      ['Redis commands per order (all)', (total / ORDERS).toFixed(2)],
      ...[...commands.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([name, calls]): [string, string] => [`  ${name}`, (calls / ORDERS).toFixed(2)]),
      ...cpuRows,
      ...(sink
        ? [
            [
              'OTLP bytes per order (so far)',
              ((sink.stats().bytes - bytesBefore) / ORDERS).toFixed(0),
            ],
          ]
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
        cluster: CLUSTER,
        replicas: CLUSTER ? 3 * REPLICAS : undefined,
        waitReplicas: WAIT_REPLICAS,
        partitionsPerMaster: CLUSTER ? Object.fromEntries(partitionsPerMaster) : undefined,
        tracing: values.tracing,
        ordersPerS: ORDERS / elapsedS,
        postLatencyMs: latency,
        machineBusy,
        cpuMsPerOrder: Object.fromEntries(measured.map((name) => [name.trim(), cpu[name]])),
        backgroundCpuMsPerS: Object.fromEntries(
          measured.map((name) => [name.trim(), (idle.get(name)! * 1000) / idleS]),
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
    await store.close()
    await vhost.drop()
    await sink?.close()
  }
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0)

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
