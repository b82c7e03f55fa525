// `npm run bench`: how fast Bakery is against the limit of this machine. Starts the roles as real
// processes against the local Redis and RabbitMQ (a fresh namespace and vhost each), drives
// POST /orders at saturation with autocannon in a process of its own, and measures the orders
// accepted during the run; then the same for bench/baseline/ (the same hops on bare amqplib,
// ioredis and koa), seconds apart, and prints Bakery's figures as ratios to the baseline's.
// See docs/performance.md. `npm run bench -- --help` lists the options.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import ts from 'typescript'
import { percentile, type LoadPlan, type LoadResult } from './load-worker'
import { startOtlpSink, tracingEnv, type SinkStats } from './otlp-sink'
import { ProcessWatch, sampleProcess } from './procstat'
import { formatSummary, summarize, type CpuProfile } from './profile'
import { createVhost, dropNamespace, freePort, REDIS_URL, ROOT, startRole } from '../harness'
import { roleNodeOptions } from '../src/platform/heap'
import { keys } from '../src/platform/keys'

const USAGE = `Usage: npm run bench -- [options]

  --duration S         seconds of POST load at saturation (default 10)
  --connections N      autocannon connections (default 32)
  --bakers N[,N...]    baker processes; a list runs Bakery once per count (default 1)
  --prefetch N         PREFETCH of Bakery's consumers and the baseline's (default: Bakery's own)
  --bake-time-scale X  BAKE_TIME_SCALE (default 0: instant bakes)
  --tracing on|off|both  Bakery with tracing exported to a local OTLP sink, without, or both
                       (default both)
  --queue-type T       classic or quorum: QUEUE_TYPE of Bakery's queues, and the baseline's
                       queues of the same type (default classic)
  --no-baseline        skip the baseline run
  --scaling            BAKE_TIME_SCALE=1, bakers 1,2,4, tracing off, no baseline
  --cpu-prof ROLES     write V8 CPU profiles of these Bakery roles (reception,baker,projector
                       or all) into bench/profiles/, and print their top functions
  --no-build           use dist/ as it is (default: npm run build first)
  --out FILE           write the figures (the last JSON line) to FILE
  --compare FILE       show the change against an earlier --out FILE
`

interface Options {
  readonly durationS: number
  readonly connections: number
  readonly bakers: readonly number[]
  readonly prefetch: number | undefined
  readonly bakeTimeScale: number
  readonly tracing: 'on' | 'off' | 'both'
  readonly queueType: 'classic' | 'quorum'
  readonly baseline: boolean
  readonly cpuProf: readonly string[]
  readonly build: boolean
  readonly out: string | undefined
  readonly compare: string | undefined
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10' },
      connections: { type: 'string', default: '32' },
      bakers: { type: 'string', default: '1' },
      prefetch: { type: 'string' },
      'bake-time-scale': { type: 'string', default: '0' },
      tracing: { type: 'string', default: 'both' },
      'queue-type': { type: 'string', default: 'classic' },
      'no-baseline': { type: 'boolean', default: false },
      scaling: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'no-build': { type: 'boolean', default: false },
      out: { type: 'string' },
      compare: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const positive = (name: string, text: string): number => {
    const n = Number(text)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`)
    return n
  }
  const tracing = values.tracing
  if (tracing !== 'on' && tracing !== 'off' && tracing !== 'both')
    throw new Error('--tracing must be on, off or both')
  const queueType = values['queue-type']
  if (queueType !== 'classic' && queueType !== 'quorum')
    throw new Error('--queue-type must be classic or quorum')
  const scaling = values.scaling
  return {
    durationS: positive('duration', values.duration),
    connections: Math.round(positive('connections', values.connections)),
    bakers: scaling
      ? [1, 2, 4]
      : values.bakers.split(',').map((b) => Math.round(positive('bakers', b))),
    prefetch: values.prefetch === undefined ? undefined : positive('prefetch', values.prefetch),
    bakeTimeScale: scaling ? 1 : Number(values['bake-time-scale']),
    tracing: scaling ? 'off' : tracing,
    queueType,
    baseline: !scaling && !values['no-baseline'],
    cpuProf:
      values['cpu-prof'] === 'all'
        ? ['reception', 'baker', 'projector']
        : (values['cpu-prof']?.split(',') ?? []),
    build: !values['no-build'],
    out: values.out,
    compare: values.compare,
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup: whatever was started is stopped, whatever was created is dropped, even on Ctrl-C.

const cleanups: (() => Promise<void>)[] = []
function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn)
}
async function cleanUp(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()
    await fn?.().catch((error: unknown) => console.error('bench: cleanup failed:', error))
  }
}

async function newVhost(label: string): Promise<string> {
  const vhost = await createVhost(`bench-${label}`)
  onCleanup(vhost.drop)
  return vhost.url
}

function newNamespace(label: string): string {
  const namespace = `bench-${label}-${randomBytes(4).toString('hex')}`
  onCleanup(() => dropNamespace(namespace, REDIS_URL))
  return namespace
}

// ---------------------------------------------------------------------------------------------
// Processes

interface Proc {
  readonly name: string
  readonly child: ChildProcess
  readonly tail: () => string
}

async function startProcess(
  name: string,
  args: readonly string[],
  env: Record<string, string>,
  ready: RegExp,
): Promise<Proc> {
  // The baseline too runs with the heap Bakery's roles run with: the same GC for both.
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: roleNodeOptions(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  onCleanup(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 12_000)
    await exited
    clearTimeout(timer)
  })
  // Keeps the last lines only: a role's log over a long run is not the bench's business.
  let lines: string[] = []
  let seenReady = false
  const onData = (chunk: Buffer) => {
    const text = chunk.toString()
    if (!seenReady && ready.test(text)) seenReady = true
    lines.push(text)
    if (lines.length > 40) lines = lines.slice(-20)
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const tail = () => lines.join('').split('\n').slice(-15).join('\n')
  const deadline = Date.now() + 30_000
  while (!seenReady) {
    if (child.exitCode !== null) throw new Error(`${name} exited early:\n${tail()}`)
    if (Date.now() > deadline) throw new Error(`${name} did not get ready:\n${tail()}`)
    await sleep(50)
  }
  return { name, child, tail }
}

// ---------------------------------------------------------------------------------------------
// Systems under test

interface System {
  readonly label: string
  readonly url: string
  readonly processes: readonly Proc[]
  /** Redis key of the read-model record of an order, which has a `status` field. */
  readonly readModelKey: (orderKey: string) => string
  /** For each order, when it was accepted and when it was baked (ms since the epoch). */
  readonly times: (orderKeys: readonly string[]) => Promise<Map<string, OrderTimes>>
  readonly sink?: () => SinkStats
}

interface OrderTimes {
  readonly acceptedAt: number
  readonly bakedAt: number
}

interface BakeryOptions {
  readonly bakers: number
  readonly tracing: boolean
  readonly queueType: 'classic' | 'quorum'
  readonly prefetch: number | undefined
  readonly bakeTimeScale: number
  readonly cpuProf: readonly string[]
}

async function startBakery(label: string, o: BakeryOptions): Promise<System> {
  const namespace = newNamespace(label)
  const amqpUrl = await newVhost(label)
  const port = await freePort()
  const sink = o.tracing ? await startOtlpSink() : undefined
  if (sink) onCleanup(sink.close)
  const env: Record<string, string> = {
    BAKERY_NAMESPACE: namespace,
    AMQP_URL: amqpUrl,
    REDIS_URL,
    PORT: String(port),
    HEALTH_PORT: '0',
    NODE_OPTIONS: roleNodeOptions(),
    BAKE_TIME_SCALE: String(o.bakeTimeScale),
    QUEUE_TYPE: o.queueType,
    LOG_LEVEL: 'info',
    ...(o.prefetch ? { PREFETCH: String(o.prefetch) } : {}),
    ...(sink ? tracingEnv(sink) : { OTEL_SDK_DISABLED: 'true' }),
  }
  const profDir = join(ROOT, 'bench', 'profiles')
  const start = async (role: string, name = role): Promise<Proc> => {
    const process_ = await startRole(role, env, {
      name,
      // --cpu-prof is not allowed in NODE_OPTIONS: it goes on the command line.
      nodeArgs: o.cpuProf.includes(role)
        ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${label}-${name}.cpuprofile`]
        : [],
      outputLimit: 64 * 1024,
      timeoutMs: 30_000,
    })
    onCleanup(async () => void (await process_.stop()))
    const tail = () => process_.output().split('\n').slice(-15).join('\n')
    return { name, child: process_.child, tail }
  }
  const processes: Proc[] = [await start('projector')]
  for (let i = 0; i < o.bakers; i++)
    processes.push(await start('baker', o.bakers === 1 ? 'baker' : `baker${i + 1}`))
  processes.push(await start('reception'))
  const k = keys(namespace)
  return {
    label,
    url: `http://127.0.0.1:${port}`,
    processes,
    readModelKey: (orderKey) => k.view(orderKey),
    times: (orderKeys) => bakeryTimes(namespace, orderKeys),
    ...(sink ? { sink: sink.stats } : {}),
  }
}

/** OrderPlaced's orderTime and OrderBaked's recordedAt, read from the global event stream. */
async function bakeryTimes(
  namespace: string,
  orderKeys: readonly string[],
): Promise<Map<string, OrderTimes>> {
  const wanted = new Set(orderKeys)
  const placed = new Map<string, number>()
  const baked = new Map<string, number>()
  const redis = new Redis(REDIS_URL)
  try {
    for (const { events } of keys(namespace).partitions) {
      let from = '-'
      for (;;) {
        const entries = await redis.xrange(events, from, '+', 'COUNT', 10_000)
        for (const [, fields] of entries) {
          const record: Record<string, string> = {}
          for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!
          const order = record.order ?? ''
          if (!wanted.has(order)) continue
          if (record.type === 'bakery/order-placed') {
            const event = JSON.parse(record.event ?? '{}') as { orderTime?: string }
            placed.set(order, Date.parse(event.orderTime ?? ''))
          } else if (record.type === 'bakery/order-baked') {
            baked.set(order, Date.parse(record.recordedAt ?? ''))
          }
        }
        const last = entries[entries.length - 1]
        if (!last || entries.length < 10_000) break
        from = `(${last[0]}`
      }
    }
  } finally {
    redis.disconnect()
  }
  const times = new Map<string, OrderTimes>()
  for (const [order, acceptedAt] of placed) {
    const bakedAt = baked.get(order)
    if (bakedAt !== undefined) times.set(order, { acceptedAt, bakedAt })
  }
  return times
}

/** The baseline is TypeScript; it runs as plain JavaScript like Bakery's dist/, not under tsx. */
function buildBaseline(): string {
  const source = readFileSync(join(ROOT, 'bench', 'baseline', 'main.ts'), 'utf8')
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
    },
  })
  const dir = mkdtempSync(join(tmpdir(), 'bakery-bench-'))
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'baseline.js')
  writeFileSync(file, outputText)
  return file
}

async function startBaseline(
  prefetch: number | undefined,
  queueType: 'classic' | 'quorum',
): Promise<System> {
  const namespace = newNamespace('baseline')
  const amqpUrl = await newVhost('baseline')
  const port = await freePort()
  const script = buildBaseline()
  const env = {
    BAKERY_NAMESPACE: namespace,
    AMQP_URL: amqpUrl,
    REDIS_URL,
    PORT: String(port),
    PREFETCH: String(prefetch ?? 32),
    QUEUE_TYPE: queueType,
    NODE_PATH: join(ROOT, 'node_modules'),
  }
  const processes = [
    await startProcess('writer', [script, 'writer'], env, /connected/),
    await startProcess('worker', [script, 'worker'], env, /connected/),
    await startProcess('reception', [script, 'reception'], env, /listening/),
  ]
  const orderKey = (key: string) => `{${namespace}}:order:${key}`
  return {
    label: 'baseline',
    url: `http://127.0.0.1:${port}`,
    processes,
    readModelKey: orderKey,
    times: async (orderKeys) => {
      const redis = new Redis(REDIS_URL)
      const times = new Map<string, OrderTimes>()
      try {
        for (let i = 0; i < orderKeys.length; i += 1000) {
          const batch = orderKeys.slice(i, i + 1000)
          const pipeline = redis.pipeline()
          for (const key of batch) pipeline.hmget(orderKey(key), 'orderTime', 'bakedAt')
          const replies = (await pipeline.exec()) ?? []
          replies.forEach(([, value], j) => {
            const [orderTime, bakedAt] = (value ?? []) as (string | null)[]
            if (orderTime && bakedAt)
              times.set(batch[j]!, {
                acceptedAt: Date.parse(orderTime),
                bakedAt: Date.parse(bakedAt),
              })
          })
        }
      } finally {
        redis.disconnect()
      }
      return times
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Measuring one system

async function load(plan: LoadPlan & { keysOut?: string }): Promise<LoadResult> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench', 'load-worker.ts'), JSON.stringify(plan)],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  )
  onCleanup(async () => {
    if (child.exitCode === null) child.kill('SIGKILL')
    return Promise.resolve()
  })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  if (code !== 0) throw new Error(`the load generator failed (exit ${code})`)
  const line = out.trim().split('\n').pop() ?? ''
  return JSON.parse(line) as LoadResult
}

/**
 * Polls the read model until every order is finished; returns when the last one was seen. Orders
 * finish about in the order they were accepted, so it asks about the oldest unfinished ones, a
 * window at a time: a window that is all finished moves it on at once and doubles it, one that is
 * not shrinks it and waits 50 ms. Asking about every order of a backlog on each round would load
 * the Redis and the cores of the system it measures (20,000 HGETs per round for a Bakery backlog).
 */
async function waitFinished(
  system: System,
  orderKeys: readonly string[],
  timeoutMs: number,
): Promise<{ lastFinishedAt: number; unfinished: number }> {
  const redis = new Redis(REDIS_URL)
  let pending = [...orderKeys]
  let window = 100
  let unfinished = 0
  let lastFinishedAt = Date.now()
  const deadline = Date.now() + timeoutMs
  try {
    while (pending.length > 0 && Date.now() < deadline) {
      const asked = pending.slice(0, window)
      const still = await unfinishedOf(redis, system, asked)
      if (still.length < asked.length) lastFinishedAt = Date.now()
      pending = still.concat(pending.slice(asked.length))
      if (still.length === 0) {
        window = Math.min(window * 2, 5000)
      } else {
        window = 100
        await sleep(50)
      }
    }
    // Out of time: the orders never asked about may be finished all the same.
    for (let i = 0; i < pending.length; i += 5000)
      unfinished += (await unfinishedOf(redis, system, pending.slice(i, i + 5000))).length
  } finally {
    redis.disconnect()
  }
  return { lastFinishedAt, unfinished }
}

async function unfinishedOf(redis: Redis, system: System, keys: string[]): Promise<string[]> {
  const pipeline = redis.pipeline()
  for (const key of keys) pipeline.hget(system.readModelKey(key), 'status')
  const replies = (await pipeline.exec()) ?? []
  return keys.filter((_, j) => replies[j]?.[1] !== 'finished')
}

interface HalfRate {
  readonly rate: number
  readonly postP50Ms: number
  readonly postP99Ms: number
}

interface ProcessFigures {
  readonly peakRssMb: number
  readonly rssEndMb: number
  /** CPU seconds from the start of the load until the last order finished. */
  readonly cpuS: number
  readonly cpuMsPerOrder: number
}

interface Figures {
  readonly accepted: number
  readonly acceptedPerS: number
  readonly failedPosts: number
  readonly e2ePerS: number
  readonly unfinished: number
  readonly postP50Ms: number
  readonly postP99Ms: number
  readonly finishP50Ms: number
  readonly finishP99Ms: number
  /** POSTs, evenly paced, at half the accepted rate at saturation. */
  readonly halfRate: HalfRate
  /** The same at half the end-to-end rate. */
  readonly halfSustained: HalfRate
  readonly getPerS: number
  readonly getP99Ms: number
  readonly processes: Readonly<Record<string, ProcessFigures>>
  /** CPU ms per order of the system's own processes, and with Redis and RabbitMQ's. */
  readonly cpuMsPerOrder: number
  readonly cpuMsPerOrderWithServices: number
  readonly servicesCpuS: Readonly<Record<string, number>>
  /** Share of both cores busy (everyone's processes) while the load ran. */
  readonly machineBusy: number
  readonly spansExported?: { readonly requests: number; readonly bytes: number }
}

async function servicePids(): Promise<Record<string, number>> {
  const pids: Record<string, number> = {}
  const redis = new Redis(REDIS_URL)
  try {
    const info = await redis.info('server')
    const pid = Number(/process_id:(\d+)/.exec(info)?.[1])
    if (pid) pids.redis = pid
  } finally {
    redis.disconnect()
  }
  const beam = spawnSync('pgrep', ['-x', 'beam.smp'], { encoding: 'utf8' })
  const rabbit = Number(beam.stdout.trim().split('\n')[0])
  if (rabbit) pids.rabbitmq = rabbit
  return pids
}

async function measure(system: System, o: Options, say: (s: string) => void): Promise<Figures> {
  const watch = new ProcessWatch()
  for (const p of system.processes) if (p.child.pid) watch.add(p.name, p.child.pid)
  const services = await servicePids()
  for (const [name, pid] of Object.entries(services)) watch.add(`service:${name}`, pid)
  watch.add('bench', process.pid)
  watch.start()
  const dir = mkdtempSync(join(tmpdir(), 'bakery-bench-keys-'))
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }))
  const base = { url: system.url, connections: o.connections }

  say(`${system.label}: warming up`)
  await load({ ...base, durationS: 2, post: { customer: 'warmup' } })

  say(`${system.label}: POST /orders at saturation for ${o.durationS} s`)
  const keysFile = join(dir, 'keys')
  watch.mark('load')
  const sat = await load({
    ...base,
    durationS: o.durationS,
    post: { customer: 'bench' },
    keysOut: keysFile,
  })
  watch.mark('loaded')
  const keys = readFileSync(keysFile, 'utf8').split('\n').filter(Boolean)
  say(`${system.label}: ${keys.length} accepted; waiting for them to finish`)
  const { lastFinishedAt, unfinished } = await waitFinished(
    system,
    keys,
    Number(process.env.BENCH_DRAIN_MS ?? 90_000),
  )
  watch.mark('drained')
  if (unfinished > 0)
    for (const p of system.processes) say(`${unfinished} unfinished; ${p.name} said:\n${p.tail()}`)
  const times = [...(await system.times(keys)).values()]
  const firstAccept = Math.min(...times.map((t) => t.acceptedAt), lastFinishedAt)
  const finishLatencies = Float64Array.from(times.map((t) => t.bakedAt - t.acceptedAt)).sort()
  const finished = keys.length - unfinished

  const elapsedS = (lastFinishedAt - firstAccept) / 1000
  const e2ePerS = elapsedS > 0 ? finished / elapsedS : 0

  // POST latency under half the load: half of what the front door accepted at saturation, and
  // half of what the whole system sustained end to end (a reception that accepts faster than the
  // pipeline drains is not saturated by the first rate, the system is). Paced evenly, each after
  // the last one's orders finished.
  const halfS = Math.max(5, Math.round(o.durationS / 2))
  const postAt = async (rate: number, label: string): Promise<HalfRate> => {
    say(`${system.label}: POST /orders at half ${label} (${rate}/s) for ${halfS} s`)
    const halfKeys = join(dir, `keys-${rate}`)
    const half = await load({
      ...base,
      durationS: halfS,
      post: { customer: 'half' },
      overallRate: rate,
      keysOut: halfKeys,
    })
    await waitFinished(system, readFileSync(halfKeys, 'utf8').split('\n').filter(Boolean), 60_000)
    return { rate, postP50Ms: round(half.p50Ms, 2), postP99Ms: round(half.p99Ms, 2) }
  }
  const halfRate = await postAt(Math.max(1, Math.floor(sat.ok / sat.durationS / 2)), 'that rate')
  const halfSustained = await postAt(Math.max(1, Math.floor(e2ePerS / 2)), 'the end-to-end rate')

  say(`${system.label}: GET /orders/:key on the finished orders for ${halfS} s`)
  const get = await load({ ...base, durationS: halfS, getKeysFile: keysFile })
  watch.mark('end')
  watch.stop()

  const cpu = watch.cpuBetween('load', 'drained')
  const rssEnd = watch.rss('end')
  const peak = watch.peakRss()
  const processes: Record<string, ProcessFigures> = {}
  for (const p of system.processes)
    processes[p.name] = {
      peakRssMb: round(peak[p.name] ?? 0),
      rssEndMb: round(rssEnd[p.name] ?? 0),
      cpuS: round(cpu[p.name] ?? 0, 2),
      cpuMsPerOrder: round(((cpu[p.name] ?? 0) * 1000) / Math.max(1, finished), 3),
    }
  const own = system.processes.reduce((sum, p) => sum + (cpu[p.name] ?? 0), 0)
  const servicesCpuS: Record<string, number> = {}
  for (const name of Object.keys(services))
    servicesCpuS[name] = round(cpu[`service:${name}`] ?? 0, 2)
  const servicesTotal = Object.values(servicesCpuS).reduce((a, b) => a + b, 0)
  return {
    accepted: keys.length,
    acceptedPerS: round(sat.ok / sat.durationS),
    failedPosts: sat.non2xx + sat.errors + sat.timeouts,
    e2ePerS: round(e2ePerS),
    unfinished,
    postP50Ms: round(sat.p50Ms, 2),
    postP99Ms: round(sat.p99Ms, 2),
    finishP50Ms: round(percentile(finishLatencies, 0.5)),
    finishP99Ms: round(percentile(finishLatencies, 0.99)),
    halfRate,
    halfSustained,
    getPerS: round(get.ok / get.durationS),
    getP99Ms: round(get.p99Ms, 2),
    processes,
    cpuMsPerOrder: round((own * 1000) / Math.max(1, finished), 3),
    cpuMsPerOrderWithServices: round(((own + servicesTotal) * 1000) / Math.max(1, finished), 3),
    servicesCpuS,
    machineBusy: round(watch.machineBusyBetween('load', 'loaded'), 2),
    ...(system.sink ? { spansExported: system.sink() } : {}),
  }
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

// ---------------------------------------------------------------------------------------------
// Reporting

interface Report {
  readonly bench: 'bakery'
  readonly at: string
  readonly conditions: Record<string, string | number | boolean>
  readonly runs: Record<string, Figures>
  readonly ratios: Record<string, Record<string, number>>
  readonly tracingCost?: number
  readonly targets: Record<string, { readonly value: number; readonly met: boolean }>
}

const RATIO_FIELDS = [
  'acceptedPerS',
  'e2ePerS',
  'postP50Ms',
  'postP99Ms',
  'finishP50Ms',
  'finishP99Ms',
  'getPerS',
  'getP99Ms',
  'cpuMsPerOrder',
  'cpuMsPerOrderWithServices',
] as const

function ratiosTo(run: Figures, baseline: Figures): Record<string, number> {
  const out: Record<string, number> = {}
  for (const field of RATIO_FIELDS) {
    const b = baseline[field]
    if (b > 0) out[field] = round(run[field] / b, 2)
  }
  for (const half of ['halfRate', 'halfSustained'] as const)
    out[`${half}.postP99Ms`] = round(
      run[half].postP99Ms / Math.max(0.01, baseline[half].postP99Ms),
      2,
    )
  return out
}

function table(report: Report): string {
  const names = Object.keys(report.runs)
  const rows: [string, (f: Figures) => number | undefined][] = [
    ['accepted orders', (f) => f.accepted],
    ['accepted orders/s', (f) => f.acceptedPerS],
    ['end-to-end orders/s', (f) => f.e2ePerS],
    ['unfinished orders', (f) => f.unfinished],
    ['POST p50 ms (saturated)', (f) => f.postP50Ms],
    ['POST p99 ms (saturated)', (f) => f.postP99Ms],
    ['half rate /s', (f) => f.halfRate.rate],
    ['POST p50 ms at half rate', (f) => f.halfRate.postP50Ms],
    ['POST p99 ms at half rate', (f) => f.halfRate.postP99Ms],
    ['half end-to-end rate /s', (f) => f.halfSustained.rate],
    ['POST p50 ms at half e2e rate', (f) => f.halfSustained.postP50Ms],
    ['POST p99 ms at half e2e rate', (f) => f.halfSustained.postP99Ms],
    ['order-to-baked p50 ms', (f) => f.finishP50Ms],
    ['order-to-baked p99 ms', (f) => f.finishP99Ms],
    ['GET req/s', (f) => f.getPerS],
    ['GET p99 ms', (f) => f.getP99Ms],
    ['CPU ms/order (own)', (f) => f.cpuMsPerOrder],
    ['CPU ms/order (+redis+rabbit)', (f) => f.cpuMsPerOrderWithServices],
    ['machine busy (load)', (f) => f.machineBusy],
  ]
  const processNames = [...new Set(names.flatMap((n) => Object.keys(report.runs[n]!.processes)))]
  for (const p of processNames) {
    rows.push([`${p} peak RSS MB`, (f) => f.processes[p]?.peakRssMb])
    rows.push([`${p} CPU s`, (f) => f.processes[p]?.cpuS])
  }
  for (const s of ['redis', 'rabbitmq']) rows.push([`${s} server CPU s`, (f) => f.servicesCpuS[s]])
  const header = [
    '',
    ...names.flatMap((n) => (n === 'baseline' || !report.runs.baseline ? [n] : [n, 'ratio'])),
  ]
  const lines = [header]
  for (const [label, get] of rows) {
    const line = [label]
    const b = report.runs.baseline ? get(report.runs.baseline) : undefined
    for (const n of names) {
      const v = get(report.runs[n]!)
      line.push(v === undefined ? '' : String(v))
      if (n !== 'baseline' && report.runs.baseline)
        line.push(v !== undefined && b ? `${(v / b).toFixed(2)}x` : '')
    }
    lines.push(line)
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? '').length)))
  return lines
    .map((l) =>
      l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '),
    )
    .join('\n')
}

function flatten(
  value: unknown,
  prefix = '',
  out: Record<string, number> = {},
): Record<string, number> {
  if (typeof value === 'number') out[prefix] = value
  else if (typeof value === 'object' && value !== null)
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out)
  return out
}

function compare(previous: Report, current: Report): string {
  const before = flatten({
    runs: previous.runs,
    ratios: previous.ratios,
    tracingCost: previous.tracingCost,
  })
  const after = flatten({
    runs: current.runs,
    ratios: current.ratios,
    tracingCost: current.tracingCost,
  })
  const lines = [`change against the run of ${previous.at}:`]
  for (const [key, now] of Object.entries(after)) {
    const was = before[key]
    if (was === undefined) continue
    const change =
      was === 0 ? '' : `${now >= was ? '+' : ''}${(((now - was) / was) * 100).toFixed(1)}%`
    lines.push(
      `  ${key.padEnd(52)} ${String(was).padStart(10)} -> ${String(now).padStart(10)}  ${change}`,
    )
  }
  return lines.join('\n')
}

/** The targets of issue 15, each judged against the baseline of the same run where it can be. */
function targets(report: Omit<Report, 'targets'>): Report['targets'] {
  const out: Record<string, { value: number; met: boolean }> = {}
  const bakery = report.runs.bakery
  const ratios = report.ratios.bakery
  if (ratios?.e2ePerS !== undefined)
    out.e2eVsBaseline = { value: ratios.e2ePerS, met: ratios.e2ePerS >= 0.5 }
  if (ratios?.getPerS !== undefined)
    out.getVsBaseline = { value: ratios.getPerS, met: ratios.getPerS >= 0.8 }
  const p99 = ratios?.['halfSustained.postP99Ms']
  if (p99 !== undefined) out.postP99AtHalfSustainedVsBaseline = { value: p99, met: p99 <= 1.5 }
  if (bakery) {
    const peak = Math.max(...Object.values(bakery.processes).map((p) => p.rssEndMb))
    out.rssEndMb = { value: peak, met: peak < 150 }
  }
  if (report.tracingCost !== undefined)
    out.tracingCost = { value: report.tracingCost, met: report.tracingCost <= 0.2 }
  return out
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const say = (s: string) => process.stderr.write(`bench: ${s}\n`)
  if (o.build) {
    say('building dist/ (npm run build)')
    const built = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
    if (built.status !== 0) throw new Error('npm run build failed')
  } else if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
    throw new Error('dist/ is missing: run npm run build, or drop --no-build')
  }
  const profDir = join(ROOT, 'bench', 'profiles')
  if (o.cpuProf.length > 0) mkdirSync(profDir, { recursive: true })
  const started = Date.now()
  const runs: Record<string, Figures> = {}
  const measureOne = async (name: string, start: () => Promise<System>) => {
    const system = await start()
    try {
      runs[name] = await measure(system, o, say)
    } finally {
      // Stops this system's processes and drops its namespace and vhost before the next one runs.
      await cleanUp()
    }
    for (const p of system.processes)
      if (p.child.pid && sampleProcess(p.child.pid)) say(`${p.name} still running`)
  }
  const bakeryOptions = (bakers: number, tracing: boolean): BakeryOptions => ({
    bakers,
    tracing,
    queueType: o.queueType,
    prefetch: o.prefetch,
    bakeTimeScale: o.bakeTimeScale,
    cpuProf: o.cpuProf,
  })
  if (o.baseline) await measureOne('baseline', () => startBaseline(o.prefetch, o.queueType))
  for (const bakers of o.bakers) {
    const suffix = o.bakers.length > 1 ? `-${bakers}bakers` : ''
    if (o.tracing !== 'on')
      await measureOne(`bakery${suffix}`, () => startBakery('bakery', bakeryOptions(bakers, false)))
    if (o.tracing !== 'off')
      await measureOne(`bakeryTraced${suffix}`, () =>
        startBakery('traced', bakeryOptions(bakers, true)),
      )
  }
  const baseline = runs.baseline
  const ratios: Record<string, Record<string, number>> = {}
  if (baseline)
    for (const [name, figures] of Object.entries(runs))
      if (name !== 'baseline') ratios[name] = ratiosTo(figures, baseline)
  const traced = runs.bakeryTraced
  const plain = runs.bakery
  const partial: Omit<Report, 'targets'> = {
    bench: 'bakery',
    at: new Date().toISOString(),
    conditions: {
      durationS: o.durationS,
      connections: o.connections,
      bakers: o.bakers.join(','),
      prefetch: o.prefetch ?? 'default',
      queueType: o.queueType,
      bakeTimeScale: o.bakeTimeScale,
      cpus: cpus().length,
      node: process.version,
      loadavg1m: round(loadavg()[0] ?? 0, 2),
    },
    runs,
    ratios,
    ...(traced && plain && plain.e2ePerS > 0
      ? { tracingCost: round(1 - traced.e2ePerS / plain.e2ePerS, 2) }
      : {}),
  }
  const report: Report = { ...partial, targets: targets(partial) }
  console.log(table(report))
  if (report.tracingCost !== undefined)
    console.log(
      `tracing on costs ${(report.tracingCost * 100).toFixed(0)}% of end-to-end throughput`,
    )
  for (const [name, t] of Object.entries(report.targets))
    console.log(`target ${name}: ${t.value} ${t.met ? 'met' : 'NOT met'}`)
  if (o.compare) console.log(compare(JSON.parse(readFileSync(o.compare, 'utf8')) as Report, report))
  if (o.cpuProf.length > 0)
    for (const file of readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'))) {
      const path = join(profDir, file)
      if (statSync(path).mtimeMs < started) continue
      const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile
      console.log(`\n${path}\n${formatSummary(summarize(profile, 15))}`)
    }
  const line = JSON.stringify(report)
  if (o.out) writeFileSync(o.out, `${line}\n`)
  console.log(line)
}

const stop = () => {
  process.stderr.write('bench: interrupted; cleaning up\n')
  void cleanUp().finally(() => process.exit(130))
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)

main()
  .catch(async (error: unknown) => {
    console.error('bench:', error instanceof Error ? error.message : error)
    process.exitCode = 1
  })
  .finally(() => cleanUp())
