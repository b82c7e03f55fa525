import { OrderKey, orderEvents } from '../messages'
import { MalformedEntry } from '../platform/errors'
import { compareStreamIds } from '../platform/redis'
import {
  archivedUpTo,
  followLog,
  lastLogId,
  matchesFilter,
  readMergedLog,
  traceIdOf,
  type LogEntry,
  type LogEvent,
  type LogFilter,
} from '../projections/log-entries'
import { describeEvent } from './describe-event'
import {
  archiveOption,
  interruptSignal,
  parseTime,
  parseToolOptions,
  positiveInt,
  processIo,
  runTool,
  UsageError,
  type ToolIo,
} from './tool'

const USAGE = `Usage: bakery events [--from WHEN] [--to WHEN] [--order KEY] [--type EVENT] [--limit N]
                     [--json] [--follow] [--archive DIR]

Prints a slice of the global event log, oldest first: a table, or JSON lines with --json.

Options:
  --from WHEN     first entry: a stream id (1714557600000-0), a time (2024-05-01T10:00:00Z) or a
                  duration ago (90s, 15m, 2h, 1d); default the start of the log
  --to WHEN       last entry, likewise (inclusive); default the end of the log
  --order KEY     only this order's events
  --type EVENT    only events of this type: order-placed, baking-started, order-baked (the
                  bakery/ prefix is optional)
  --limit N       print at most N events
  --json          one JSON object per line
  --follow        after the slice, keep printing new events as they are appended, until Ctrl-C
  --archive DIR   read the events \`bakery archive\` moved out of Redis too (else only what
                  Redis holds)
  -h, --help      show this help

Times are matched against the entries' stream ids, i.e. when Redis appended them.

Examples:
  bakery events --from 15m
  bakery events --order 0b9f3c1e5a7d4f2e8c6b1a0d9e8f7a6b
  bakery events --type order-baked --from 2024-05-01T10:00:00Z --to 2024-05-01T11:00:00Z --json
  bakery events --follow --type order-placed
`

const BATCH = 1000

/** `--from` / `--to` as a stream id bound; a time stands for its whole millisecond. */
export function parseBound(name: string, text: string, now: number): string {
  if (/^\d+(-\d+)?$/.test(text)) return text
  const ms = parseTime(text, now)
  if (ms === undefined)
    throw new UsageError(
      `--${name} takes a stream id, a time (ISO 8601) or a duration ago (90s, 15m, 2h, 1d), not ${JSON.stringify(text)}`,
    )
  return String(Math.max(0, Math.floor(ms)))
}

const TYPES: readonly string[] = orderEvents.map((message) => message.$name)

export function parseType(text: string): string {
  const name = text.includes('/') ? text : `bakery/${text}`
  if (!TYPES.includes(name))
    throw new UsageError(`--type must be one of ${TYPES.join(', ')}, not ${JSON.stringify(text)}`)
  return name
}

/** One global-log event as a JSON line. */
export function eventJson(entry: LogEvent) {
  return {
    id: entry.streamId,
    order: entry.order,
    version: entry.version,
    type: entry.event.$name,
    recordedAt: entry.recordedAt,
    traceId: traceIdOf(entry.trace) ?? null,
    event: entry.event,
  }
}

const COLUMNS = [
  ['ID', 16],
  ['RECORDED AT', 24],
  ['ORDER', 32],
  ['V', 2],
  ['EVENT', 21],
  ['WHAT HAPPENED', 0],
] as const

/** The table's columns are fixed, so rows can be printed as they arrive. */
export const eventsHeader = (): string => row(COLUMNS.map(([title]) => title))

export function eventRow(entry: LogEvent): string {
  return row([
    entry.streamId,
    entry.recordedAt,
    entry.order,
    String(entry.version),
    entry.event.$name,
    describeEvent(entry.event),
  ])
}

function row(cells: readonly string[]): string {
  return (
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(COLUMNS[i]?.[1] ?? 0)))
      .join('  ')
      .trimEnd() + '\n'
  )
}

/**
 * `bakery events`: prints a slice of the global log, and with `--follow` tails it until
 * interrupted. Resolves to the exit code: 0 done, 2 bad arguments.
 */
export async function runEvents(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  return runTool('events', USAGE, argv, io, async ({ redis, keys, config }) => {
    const values = parseToolOptions(argv, {
      from: { type: 'string' },
      to: { type: 'string' },
      order: { type: 'string' },
      type: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
      follow: { type: 'boolean', default: false },
      archive: { type: 'string' },
    })
    if (values.follow && values.to !== undefined)
      throw new UsageError('--follow prints new events as they come: it has no --to')
    if (values.order !== undefined && !OrderKey.is(values.order))
      throw new UsageError(`--order takes an order key (32 lowercase hex digits)`)
    const now = Date.now()
    const start = values.from === undefined ? '-' : parseBound('from', values.from, now)
    const end = values.to === undefined ? '+' : parseBound('to', values.to, now)
    const filter: LogFilter = {
      order: values.order,
      type: values.type === undefined ? undefined : parseType(values.type),
    }
    const limit = positiveInt('limit', values.limit, Number.POSITIVE_INFINITY)

    let shown = 0
    let skipped = 0
    const print = (entry: LogEntry): boolean => {
      if (entry instanceof MalformedEntry) {
        skipped += 1
        io.stderr.write(`skipped ${entry.message}\n`)
        return true
      }
      if (!matchesFilter(entry, filter)) return true
      if (shown === 0 && !values.json) io.stdout.write(eventsHeader())
      io.stdout.write(values.json ? `${JSON.stringify(eventJson(entry))}\n` : eventRow(entry))
      shown += 1
      return shown < limit
    }

    // An order's events are all in its partition: the others need not be read.
    const partitions = filter.order === undefined ? keys.partitions : [keys.of(filter.order)]
    // Where following starts in each partition if the slice reads nothing there: its end now.
    const after = await Promise.all(
      partitions.map(async (partition) => (await lastLogId(redis, partition)) ?? '0-0'),
    )
    const archive = archiveOption(values.archive, config)
    if (!archive && (await archivedUpTo(redis, partitions)).some((mark) => mark !== null))
      io.stderr.write(
        'the start of the log is archived: only what Redis holds is shown (pass --archive <dir> for the rest)\n',
      )
    let more = true
    const range = { start, end, batchSize: BATCH, archive }
    for await (const { from, entry } of readMergedLog(redis, partitions, range)) {
      if (compareStreamIds(entry.streamId, after[from]!) > 0) after[from] = entry.streamId
      if (!(more = print(entry))) break
    }

    if (values.follow && more) {
      const { signal, release } = interruptSignal(io)
      try {
        const follow = { after, start, batchSize: BATCH, signal }
        for await (const entry of followLog(redis, partitions, follow)) if (!print(entry)) break
      } finally {
        release()
      }
    }
    io.stderr.write(
      `${shown} event${shown === 1 ? '' : 's'} shown${skipped > 0 ? `, ${skipped} malformed entries skipped` : ''}\n`,
    )
    return 0
  })
}
