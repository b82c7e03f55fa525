// Times `bakery replay` and `bakery replay --verify` on a generated log of N events, in a fresh
// namespace that is deleted afterwards:
//   npx tsx bench/tools/replay.ts [events=100000] [batch=2000]
// The log is written by a child process, so the RSS measured here is the replay's own.
import type * as t from 'io-ts'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import {
  BakingStarted,
  OrderBaked,
  OrderPlaced,
  timestamp,
  NonNegativeInt,
  type OrderEvent,
  type OrderKey,
} from '../../src/messages'
import { orderEventStore } from '../../src/wiring'
import { keys } from '../../src/platform/keys'
import { runReplay } from '../../src/tools/replay'
import type { ToolIo } from '../../src/tools/tool'
import { withScripts } from '../../src/platform/scripts'
import { dropNamespace } from '../../harness'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const ORDERS_PER_CHUNK = 1000
const PASTRIES = ['croissant', 'baguette', 'eclair', 'brioche', 'macaron']

/** Writes `events` events through the real append script: 3 per order, placed, baking, baked. */
async function generate(namespace: string, events: number): Promise<void> {
  const redis = withScripts(new Redis(REDIS_URL))
  const store = orderEventStore(redis, keys(namespace))
  const at = () => timestamp(new Date())
  const steps: ((orderKey: OrderKey, i: number) => OrderEvent)[] = [
    (orderKey, i) =>
      OrderPlaced.create({
        orderKey,
        customer: `customer-${i}`,
        pastry: PASTRIES[i % PASTRIES.length]!,
        orderTime: at(),
      }),
    (orderKey) => BakingStarted.create({ orderKey, startedAt: at() }),
    (orderKey, i) =>
      OrderBaked.create({
        orderKey,
        bakedAt: at(),
        bakeMs: (i % 100) as t.TypeOf<typeof NonNegativeInt>,
        mistake: i % 10 === 0,
      }),
  ]
  let written = 0
  while (written < events) {
    const count = Math.min(ORDERS_PER_CHUNK, Math.ceil((events - written) / 3))
    const orders = Array.from({ length: count }, () => randomBytes(16).toString('hex') as OrderKey)
    // A chunk of orders at a time, step by step: like a busy bakery, an order's events sit close
    // together in the log but interleave with other orders'.
    for (const [version, step] of steps.entries()) {
      const todo = orders.slice(0, Math.max(0, events - written))
      // Concurrent calls on one connection go out pipelined.
      await Promise.all(todo.map((order, i) => store.append(order, version, [step(order, i)], [])))
      written += todo.length
    }
  }
  redis.disconnect()
}

/** Runs `work` and samples the RSS meanwhile. */
async function measure<T>(work: () => Promise<T>) {
  let peak = process.memoryUsage.rss()
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10)
  const started = performance.now()
  const result = await work()
  const ms = performance.now() - started
  clearInterval(sampler)
  peak = Math.max(peak, process.memoryUsage.rss())
  return { result, ms, peakRssMb: peak / 2 ** 20 }
}

function capturingIo(namespace: string): ToolIo & { text: () => string } {
  let text = ''
  return {
    stdout: { write: (s: string) => (text += s), isTTY: false },
    stderr: { write: (s: string) => (text += s), isTTY: false },
    env: { ...process.env, BAKERY_NAMESPACE: namespace, REDIS_URL },
    text: () => text,
  }
}

async function main(): Promise<void> {
  const events = Number(process.argv[2] ?? 100_000)
  const batch = process.argv[3] ?? '2000'
  const namespace = `bench-replay-${randomBytes(4).toString('hex')}`
  const redis = withScripts(new Redis(REDIS_URL))
  const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`
  try {
    const started = performance.now()
    execFileSync(
      process.execPath,
      [...process.execArgv, __filename, '--generate', namespace, String(events)],
      { stdio: 'inherit' },
    )
    const length = await redis.xlen(keys(namespace).partitions[0]!.events)
    console.log(
      `log: ${length} events in namespace ${namespace}, written in ` +
        `${((performance.now() - started) / 1000).toFixed(1)} s; batch ${batch}; ` +
        `RSS before replaying ${mb(process.memoryUsage.rss())}`,
    )
    const rate = (ms: number) => Math.round((length * 1000) / ms).toLocaleString('en-US')
    for (const [label, argv] of [
      ['replay (no read model yet)', ['--batch', batch]],
      ['replay (replacing a full read model)', ['--batch', batch]],
      ['replay --verify', ['--verify', '--batch', batch]],
    ] as const) {
      const io = capturingIo(namespace)
      const run = await measure(() => runReplay(argv, io))
      if (run.result !== 0) throw new Error(`${label} exited ${run.result}:\n${io.text()}`)
      console.log(
        `${label.padEnd(38)}${(run.ms / 1000).toFixed(2).padStart(6)} s` +
          `${rate(run.ms).padStart(9)} events/s   peak RSS ${run.peakRssMb.toFixed(0)} MB`,
      )
    }
  } finally {
    await dropNamespace(namespace)
    redis.disconnect()
  }
}

const run =
  process.argv[2] === '--generate' ? generate(process.argv[3]!, Number(process.argv[4])) : main()
run.catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
