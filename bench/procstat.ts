// Reads a process's CPU time and memory from /proc, for bench/run.ts.
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

let ticksPerSecond: number | undefined

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    } catch {
      ticksPerSecond = 100
    }
    if (!Number.isFinite(ticksPerSecond) || ticksPerSecond <= 0) ticksPerSecond = 100
  }
  return ticksPerSecond
}

export interface ProcSample {
  /** User + system CPU seconds since the process started. */
  readonly cpuS: number
  readonly rssMb: number
  /** The kernel's high-water mark of the resident set (VmHWM). */
  readonly peakRssMb: number
}

/** undefined when the process is gone. */
export function sampleProcess(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1])
    return { cpuS: ticks / clockTicks(), rssMb: kb('VmRSS') / 1024, peakRssMb: kb('VmHWM') / 1024 }
  } catch {
    return undefined
  }
}

/** Busy and total jiffies of the whole machine (every process, everyone's). */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const values = line.trim().split(/\s+/).slice(1).map(Number)
  const total = values.reduce((a, b) => a + b, 0)
  const idle = (values[3] ?? 0) + (values[4] ?? 0)
  return { busy: total - idle, total }
}

/** Tracks a set of processes: CPU seconds between marks, and the highest RSS seen. */
export class ProcessWatch {
  private readonly pids = new Map<string, number>()
  private readonly peak = new Map<string, number>()
  private readonly marks = new Map<string, Map<string, number>>()
  private readonly rssAt = new Map<string, Map<string, number>>()
  private machine = new Map<string, { busy: number; total: number }>()
  private timer: NodeJS.Timeout | undefined

  add(name: string, pid: number): void {
    this.pids.set(name, pid)
  }

  start(intervalMs = 250): void {
    this.timer = setInterval(() => this.sample(), intervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private sample(): Map<string, ProcSample> {
    const samples = new Map<string, ProcSample>()
    for (const [name, pid] of this.pids) {
      const s = sampleProcess(pid)
      if (!s) continue
      samples.set(name, s)
      this.peak.set(name, Math.max(this.peak.get(name) ?? 0, s.rssMb, s.peakRssMb))
    }
    return samples
  }

  mark(label: string): void {
    const samples = this.sample()
    this.marks.set(label, new Map([...samples].map(([n, s]) => [n, s.cpuS])))
    this.rssAt.set(label, new Map([...samples].map(([n, s]) => [n, s.rssMb])))
    this.machine.set(label, machineTicks())
  }

  /** CPU seconds each process used between two marks. */
  cpuBetween(from: string, to: string): Record<string, number> {
    const a = this.marks.get(from)
    const b = this.marks.get(to)
    const out: Record<string, number> = {}
    if (!a || !b) return out
    for (const [name, cpu] of b) {
      const before = a.get(name)
      if (before !== undefined) out[name] = cpu - before
    }
    return out
  }

  /** Share of the machine's CPU (all cores, all processes) that was busy between two marks. */
  machineBusyBetween(from: string, to: string): number {
    const a = this.machine.get(from)
    const b = this.machine.get(to)
    if (!a || !b || b.total === a.total) return 0
    return (b.busy - a.busy) / (b.total - a.total)
  }

  rss(label: string): Record<string, number> {
    return Object.fromEntries(this.rssAt.get(label) ?? [])
  }

  peakRss(): Record<string, number> {
    return Object.fromEntries(this.peak)
  }
}
