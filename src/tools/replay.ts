import { orderEventStore } from '../wiring'
import type { MalformedEntry } from '../platform/errors'
import { replayReadModel, type RebuildOptions } from '../projections/rebuild'
import { formatDifference, verifyReadModel } from '../projections/verify'
import {
  archiveOption,
  formatCount,
  formatDuration,
  parseToolOptions,
  positiveInt,
  processIo,
  runTool,
  UsageError,
  type Output,
  type ToolIo,
} from './tool'
import { ViewStore } from '../projections/view-store'
import { ArchiveRequired, requireArchive } from '../projections/log-entries'
import { archivedEntries } from '../projections/archive'

const USAGE = `Usage: bakery replay [--verify] [--batch N] [--archive DIR]

Rebuilds the read model (what GET /orders/:key serves) from the global event log into fresh keys,
then swaps it in atomically: while it runs, GET never answers 404 or an older state. Events
appended during the replay are folded in after the swap. Progress goes to stderr: a bar on a
terminal, a plain line a second otherwise.

Options:
  --verify      rebuild aside and compare with the live read model instead of replacing it; lists
                every difference by order key and exits 1 if there is any, or if an entry of the
                log had to be skipped
  --batch N     log entries read, and views written, per round trip to Redis (default 2000)
  --archive DIR where \`bakery archive\` put the start of the log: the replay reads it first.
                Required once anything was archived (without it the archived orders would go)
  -h, --help    show this help

Exit codes: 0 done; 1 differences or skipped entries (--verify), or a failure; 2 bad arguments.

Examples:
  bakery replay
  bakery replay --verify
  bakery replay --verify --archive /archive
  BAKERY_NAMESPACE=staging bakery replay --verify > differences.txt
`

export interface ProgressState {
  readonly done: number
  readonly total: number
  readonly elapsedMs: number
}

/** One progress report: a bar for a terminal, or a plain line for a log. */
export function formatProgress({ done, total, elapsedMs }: ProgressState, bar: boolean): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 1
  const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0
  const eta = rate > 0 ? formatDuration((Math.max(0, total - done) * 1000) / rate) : '?'
  const percent = `${Math.floor(fraction * 100)}%`
  const counts = `${formatCount(done)}/${formatCount(total)} events`
  const speed = `${formatCount(rate)} events/s`
  if (!bar) return `${counts} (${percent}), ${speed}, ETA ${eta}`
  const width = 24
  const filled = Math.round(fraction * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${percent.padStart(4)}  ${counts}  ${speed}  ETA ${eta}`
}

/** Reports progress on `out`, at most ten times a second on a terminal, once a second otherwise. */
export function progressReporter(out: Output, label: string, total: number) {
  const started = performance.now()
  const bar = out.isTTY === true
  let last = -Infinity
  const report = (done: number, final: boolean) => {
    const now = performance.now()
    if (!final && now - last < (bar ? 100 : 1000)) return
    last = now
    const elapsedMs = now - started
    const line = final
      ? `${label}: ${formatCount(done)} events in ${formatDuration(elapsedMs)}`
      : `${label}: ${formatProgress({ done, total, elapsedMs }, bar)}`
    out.write(bar ? `\r${line}\u001b[K${final ? '\n' : ''}` : `${line}\n`)
  }
  return {
    update: (done: number) => report(done, false),
    finish: (done: number) => report(done, true),
  }
}

/**
 * `bakery replay`: rebuilds the read model from the log and swaps it in, or with `--verify`
 * compares a rebuild with the live model. Resolves to the exit code.
 */
export async function runReplay(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  return runTool('replay', USAGE, argv, io, async ({ redis, keys, config }) => {
    const values = parseToolOptions(argv, {
      verify: { type: 'boolean', default: false },
      batch: { type: 'string' },
      archive: { type: 'string' },
    })
    const batchSize = positiveInt('batch', values.batch, 2000)
    const archive = archiveOption(values.archive, config)
    const label = values.verify ? 'verify' : 'replay'
    try {
      await requireArchive(redis, keys.partitions, archive, `bakery ${label}`)
    } catch (error) {
      if (error instanceof ArchiveRequired) throw new UsageError(error.message)
      throw error
    }
    const store = orderEventStore(redis, keys)
    const views = new ViewStore(redis, keys)
    const lengths = await Promise.all(keys.partitions.map((p) => redis.xlen(p.events)))
    const archived = archive ? await archivedEntries(redis, keys.partitions) : 0
    const total = lengths.reduce((sum, length) => sum + length, archived)
    // A report interrupts the progress bar's line rather than being appended to it.
    const clearLine = io.stderr.isTTY ? '\r\u001b[K' : ''
    const progress = progressReporter(io.stderr, label, total)
    let read = 0
    const options: RebuildOptions = {
      batchSize,
      cacheSize: Math.max(10_000, batchSize * 4),
      archive,
      onSkip: (entry: MalformedEntry) => io.stderr.write(`${clearLine}skipped ${entry.message}\n`),
      onProgress: (done) => {
        read = done
        progress.update(done)
      },
    }
    const started = performance.now()
    const namespace = `namespace ${config.BAKERY_NAMESPACE}`

    if (values.verify) {
      let first = true
      const result = await verifyReadModel(redis, keys, store, views, {
        ...options,
        onDifference: (difference) => {
          if (first) progress.finish(read)
          first = false
          io.stdout.write(`${formatDifference(difference)}\n`)
        },
      })
      if (first) progress.finish(result.entries)
      const took = performance.now() - started
      io.stdout.write(
        `Verified the read model of ${namespace} against ${formatCount(result.entries)} events ` +
          `(${plural(result.orders, 'order')}) in ${formatDuration(took)}: ` +
          `${plural(result.differences, 'difference')}, ${plural(result.skipped, 'entry', 'entries')} skipped.\n`,
      )
      return result.differences > 0 || result.skipped > 0 ? 1 : 0
    }

    const result = await replayReadModel(redis, keys, store, views, options)
    progress.finish(result.entries)
    const took = performance.now() - started
    io.stdout.write(
      `Replayed ${formatCount(result.entries)} events (${plural(result.orders, 'order')}) of ` +
        `${namespace} into read-model generation ${result.generation} in ${formatDuration(took)} ` +
        `(${formatCount((result.entries * 1000) / Math.max(took, 1))} events/s); ` +
        `${plural(result.caughtUp, 'event')} appended meanwhile folded in after the swap; ` +
        `${plural(result.skipped, 'entry', 'entries')} skipped.\n`,
    )
    return 0
  })
}

const plural = (n: number, one: string, many = `${one}s`) =>
  `${formatCount(n)} ${n === 1 ? one : many}`
