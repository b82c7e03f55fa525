// Summarizes a V8 .cpuprofile (node --cpu-prof, or `npm run bench -- --cpu-prof ROLE`): the
// functions with the most self time, and self time by package, so a hot path reads at a glance.
//   npx tsx bench/profile.ts FILE.cpuprofile [top=25]
import { readFileSync } from 'node:fs'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: readonly number[]
}

export interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly startTime: number
  readonly endTime: number
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

export interface ProfileSummary {
  /** For the busiest native functions (which say little by name): who called them. */
  readonly callers: readonly {
    readonly name: string
    readonly ms: number
    readonly via: readonly { readonly name: string; readonly ms: number }[]
  }[]
  readonly totalMs: number
  readonly idleMs: number
  readonly functions: readonly { readonly name: string; readonly ms: number }[]
  readonly packages: readonly { readonly name: string; readonly ms: number }[]
}

/** Where a script belongs: a package under node_modules, node's own, or the project's file. */
export function packageOf(url: string): string {
  if (url === '') return '(native / VM)'
  if (url.startsWith('node:')) return 'node core'
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (match?.[1]) return match[1]
  const own = /\/(dist|src|bench)\/(.*)$/.exec(url)
  return own ? `bakery ${own[2]}` : url
}

/** A function as a profile names it: its name, and its file (within its package) and line. */
export function frameName(f: CallFrame): string {
  const file = f.url.replace(/^.*node_modules\//, '').replace(/^.*\/(dist|src)\//, '$1/')
  return `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`
}

export function summarize(profile: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const selfUs = new Map<number, number>()
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  })
  const functions = new Map<string, number>()
  const packages = new Map<string, number>()
  let idle = 0
  let total = 0
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame
    if (!frame) continue
    total += us
    if (frame.functionName === '(idle)') {
      idle += us
      continue
    }
    const name = frameName(frame)
    functions.set(name, (functions.get(name) ?? 0) + us)
    const pkg = frame.functionName.startsWith('(') ? frame.functionName : packageOf(frame.url)
    packages.set(pkg, (packages.get(pkg) ?? 0) + us)
  }
  const sorted = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10 }))
  // The first caller up the stack that is JavaScript of a package or of Bakery, not node's own.
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const culprit = (id: number): string => {
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      const f = byId.get(p)?.callFrame
      if (f && f.url !== '' && !f.url.startsWith('node:')) return frameName(f)
    }
    return '(root)'
  }
  const natives = new Map<string, Map<string, number>>()
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame
    if (!frame || frame.url !== '' || frame.functionName.startsWith('(')) continue
    const via = natives.get(frame.functionName) ?? new Map<string, number>()
    const who = culprit(id)
    via.set(who, (via.get(who) ?? 0) + us)
    natives.set(frame.functionName, via)
  }
  const callers = [...natives]
    .map(([name, via]) => ({ name, us: [...via.values()].reduce((a, b) => a + b, 0), via }))
    .sort((a, b) => b.us - a.us)
    .slice(0, 3)
    .map(({ name, us, via }) => ({
      name,
      ms: Math.round(us / 100) / 10,
      via: sorted(via).slice(0, 6),
    }))
  return {
    callers,
    totalMs: Math.round(total / 1000),
    idleMs: Math.round(idle / 1000),
    functions: sorted(functions),
    packages: sorted(packages),
  }
}

export function formatSummary(s: ProfileSummary): string {
  const busy = s.totalMs - s.idleMs
  const pct = (ms: number) => `${((ms / Math.max(1, busy)) * 100).toFixed(1).padStart(5)}%`
  return [
    `profiled ${s.totalMs} ms, of which busy ${busy} ms (idle ${s.idleMs} ms)`,
    'self time by package (share of busy time):',
    ...s.packages.map((p) => `  ${pct(p.ms)}  ${String(p.ms).padStart(8)} ms  ${p.name}`),
    'top functions by self time:',
    ...s.functions.map((f) => `  ${pct(f.ms)}  ${String(f.ms).padStart(8)} ms  ${f.name}`),
    'busiest native functions, by their nearest JavaScript caller outside node core:',
    ...s.callers.flatMap((c) => [
      `  ${pct(c.ms)}  ${String(c.ms).padStart(8)} ms  ${c.name}`,
      ...c.via.map((v) => `      ${pct(v.ms)}  ${String(v.ms).padStart(8)} ms  ${v.name}`),
    ]),
  ].join('\n')
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2)
  if (!file) {
    console.error('usage: npx tsx bench/profile.ts FILE.cpuprofile [top=25]')
    process.exit(2)
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  console.log(formatSummary(summarize(profile, Number(top ?? 25))))
}
