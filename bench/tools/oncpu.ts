// Where each role's CPU time goes, sampled on the CPU. V8's own profiles (`--cpu-prof`) tick on
// wall-clock time: on two cores shared by five busy processes, the time a role spends waiting for
// a core is charged to whatever it was doing when it lost it, often a socket write that woke the
// broker. `perf record -e cpu-clock` samples a thread only while it runs, the collector's helper
// threads included.
//
// The three roles run at a steady --rate of orders with `--perf-basic-prof`, so that perf can name
// JavaScript functions. After a warm-up, perf samples every role for --seconds. A sample counts
// for, in this order: the garbage collector, if a collector frame is on its stack; the promise
// hooks behind AsyncLocalStorage; V8's compilers; the package of the nearest JavaScript frame
// (the VM's builtins, native code and system calls count for the JavaScript that called them);
// the event loop; native code or the kernel. Folded stacks, for a flame graph (speedscope,
// flamegraph.pl), go to bench/profiles/oncpu-<role>.folded.
// With --tracing every order is traced and its spans exported over OTLP/HTTP to a sink.
//   npx tsx bench/tools/oncpu.ts [--rate 150] [--seconds 20] [--warm-up 15] [--tracing]
// Needs perf (Debian: linux-perf) and a kernel that lets this user profile its own processes.
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { paced } from '../load-worker'
import { sampleProcess } from '../procstat'
import { packageOf } from '../profile'
import { withRoles } from './steady'
import { roleNodeOptions } from '../../src/platform/heap'
import { ROOT } from '../../harness'

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '150' },
    seconds: { type: 'string', default: '20' },
    'warm-up': { type: 'string', default: '15' },
    top: { type: 'string', default: '12' },
    tracing: { type: 'boolean', default: false },
  },
})
const PROFILES = join(ROOT, 'bench', 'profiles')
const SAMPLES_PER_S = 499

/** The collector's work, by the phase its frames name; the first match wins. */
const COLLECTOR = [
  ['garbage collector: scavenge', /v8::internal::\w*Scaveng/],
  ['garbage collector: marking', /v8::internal::\w*Mark/],
  ['garbage collector: sweeping', /v8::internal::\w*Sweep/],
  ['garbage collector: other', /v8::internal::(Heap::|\w*Evacuat|\w*Compact)/],
] as const
/** V8 optimizing a function (TurboFan, Maglev, Sparkplug): warm-up, mostly. */
const COMPILER = /v8::internal::(compiler::|maglev::|baseline::|\w*Compil)/
/** Node's AsyncLocalStorage runs these for every promise once any store is in use. */
const PROMISE_HOOKS =
  /JS:\S*(promiseInitHook|promiseBeforeHook|promiseAfterHook|promiseResolveHook)\b/

interface Frame {
  readonly symbol: string
  readonly kernel: boolean
}

/** `perf script` output: one block per sample, its frames leaf first. */
function parseSamples(script: string): Frame[][] {
  const samples: Frame[][] = []
  for (const block of script.split(/\n\s*\n/)) {
    const frames: Frame[] = []
    for (const line of block.split('\n').slice(1)) {
      // "\t    7f12ab34 JS:*fn node:internal/x:1:2 (/tmp/perf-1.map)"
      const match = /^\s+[0-9a-f]+\s+(.*)\s+\((.*)\)$/.exec(line)
      if (match) frames.push({ symbol: match[1]!, kernel: match[2]!.includes('kernel') })
    }
    if (frames.length > 0) samples.push(frames)
  }
  return samples
}

/** A JavaScript frame's file: perf names it `JS:<tier><name> <file>:<line>:<column>+<offset>`. */
function jsFile(symbol: string): string | undefined {
  if (!symbol.startsWith('JS:')) return undefined
  const location = symbol.slice(symbol.lastIndexOf(' ') + 1)
  return location.replace(/\+0x[0-9a-f]+$/, '').replace(/(:\d+)+$/, '')
}

function categoryOf(frames: readonly Frame[]): string {
  const symbols = frames.map((frame) => frame.symbol)
  for (const [name, pattern] of COLLECTOR)
    if (symbols.some((symbol) => pattern.test(symbol))) return name
  if (symbols.some((symbol) => PROMISE_HOOKS.test(symbol)))
    return 'promise hooks (AsyncLocalStorage)'
  if (symbols.some((symbol) => COMPILER.test(symbol))) return 'V8 compiling'
  for (const symbol of symbols) {
    const file = jsFile(symbol)
    if (file !== undefined) return packageOf(file)
  }
  if (symbols.some((symbol) => symbol.startsWith('uv_run')))
    return 'the event loop: reading sockets, parsing HTTP'
  return frames[0]!.kernel ? 'kernel, outside JavaScript' : 'native, outside JavaScript'
}

/** Root-first `a;b;c count` lines, the input of most flame-graph tools. */
function folded(samples: readonly Frame[][]): string {
  const counts = new Map<string, number>()
  for (const frames of samples) {
    const stack = frames
      .map((frame) => frame.symbol.replace(/\+0x[0-9a-f]+$/, '').replaceAll(';', ':'))
      .reverse()
      .join(';')
    counts.set(stack, (counts.get(stack) ?? 0) + 1)
  }
  return [...counts].map(([stack, count]) => `${stack} ${count}`).join('\n') + '\n'
}

/** Starts perf on one process; the function it returns stops it and waits for its file. */
function record(pid: number, out: string): () => Promise<void> {
  const perf = spawn(
    'perf',
    ['record', '-e', 'cpu-clock', '-F', String(SAMPLES_PER_S), '-g', '-p', String(pid), '-o', out],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let errors = ''
  perf.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()))
  // Listened for at once: a perf that fails at start has closed before it is stopped.
  const closed = new Promise<[number | null, string | null]>((resolve) =>
    perf.on('close', (...end) => resolve(end)),
  )
  return async () => {
    // perf writes its file and ends on SIGINT, as on Ctrl-C.
    perf.kill('SIGINT')
    const [code, signal] = await closed
    if (code !== 0 && signal !== 'SIGINT')
      throw new Error(`perf record -p ${pid} failed (${code ?? signal}): ${errors.trim()}`)
  }
}

interface RoleSummary {
  readonly cpuMsPerOrder: number
  readonly shares: Record<string, number>
}

/** Prints one role's shares of CPU and writes its folded stacks. */
function report(role: string, samples: readonly Frame[][], cpuMsPerOrder: number): RoleSummary {
  writeFileSync(join(PROFILES, `oncpu-${role}.folded`), folded(samples))
  const counts = new Map<string, number>()
  for (const frames of samples) {
    const category = categoryOf(frames)
    counts.set(category, (counts.get(category) ?? 0) + 1)
  }
  const kernel = samples.filter((frames) => frames[0]!.kernel).length
  console.log(
    `\n${role}: ${cpuMsPerOrder.toFixed(3)} CPU ms per order; ${samples.length} samples, ` +
      `${((100 * kernel) / samples.length).toFixed(1)} % of them in the kernel`,
  )
  const shares = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([category, count]) => [category, (100 * count) / samples.length] as const)
  for (const [category, share] of shares.slice(0, Number(values.top)))
    console.log(`${share.toFixed(1).padStart(6)} %  ${category}`)
  return {
    cpuMsPerOrder: Number(cpuMsPerOrder.toFixed(3)),
    shares: Object.fromEntries(shares.map(([c, share]) => [c, Number(share.toFixed(1))])),
  }
}

async function main(): Promise<void> {
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' })
  } catch {
    throw new Error('perf is not installed (Debian: apt-get install linux-perf)')
  }
  const seconds = Number(values.seconds)
  const warmUpS = Number(values['warm-up'])
  const rate = Number(values.rate)
  const work = mkdtempSync(join(tmpdir(), 'bakery-oncpu-'))
  const pids = new Set<string>()
  const nodeOptions = `${roleNodeOptions()} --perf-basic-prof`
  try {
    await withRoles(
      'oncpu',
      nodeOptions,
      async ({ url, processes }) => {
        for (const [, role] of processes) pids.add(String(role.child.pid))
        const load = paced({
          url,
          connections: 16,
          durationS: warmUpS + seconds + 1,
          post: { customer: 'oncpu' },
          overallRate: rate,
        })
        await sleep(warmUpS * 1000)
        const cpuS = () => processes.map(([, role]) => sampleProcess(role.child.pid!)?.cpuS ?? NaN)
        const before = cpuS()
        const stops = processes.map(([name, role]) =>
          record(role.child.pid!, join(work, `${name}.data`)),
        )
        await sleep(seconds * 1000)
        await Promise.all(stops.map((stop) => stop()))
        const used = cpuS().map((after, i) => after - before[i]!)
        const result = await load
        console.log(
          `oncpu: ${rate} orders/s (${result.requests} posted, ${result.non2xx + result.errors} ` +
            `not accepted), perf sampled ${seconds} s after ${warmUpS} s of warm-up`,
        )
        mkdirSync(PROFILES, { recursive: true })
        const summary: Record<string, RoleSummary> = {}
        for (const [i, [name]] of processes.entries()) {
          const script = execFileSync('perf', ['script', '-i', join(work, `${name}.data`)], {
            encoding: 'utf8',
            maxBuffer: 1 << 30,
            stdio: ['ignore', 'pipe', 'ignore'],
          })
          summary[name] = report(name, parseSamples(script), (1000 * used[i]!) / (rate * seconds))
        }
        console.log(`\nfolded stacks: ${join(PROFILES, 'oncpu-<role>.folded')}`)
        const at = new Date().toISOString()
        console.log(
          JSON.stringify({ bench: 'oncpu', at, rate, seconds, tracing: values.tracing, summary }),
        )
      },
      { tracing: values.tracing },
    )
  } finally {
    // What --perf-basic-prof leaves behind: perf's symbol maps, and V8's log in the working
    // directory.
    for (const pid of pids) rmSync(`/tmp/perf-${pid}.map`, { force: true })
    for (const file of readdirSync(ROOT))
      if (/^isolate-.*-v8\.log$/.test(file) && pids.has(file.split('-')[2]!))
        rmSync(join(ROOT, file), { force: true })
    rmSync(work, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 1
})
