import { OrderKey } from '../messages'
import { orderEventStore } from '../wiring'
import {
  readArchivedHistory,
  readHistory,
  stateAt,
  type OrderHistory,
  type Point,
} from '../projections/order-history'
import { ViewStore } from '../projections/view-store'
import { describeEvent } from './describe-event'
import {
  archiveOption,
  formatDuration,
  formatTable,
  parseTime,
  parseToolArgs,
  processIo,
  runTool,
  traceUrl,
  UsageError,
  type ToolIo,
} from './tool'

const USAGE = `Usage: bakery history <orderKey> [--at <version|time>] [--json] [--archive DIR]

Shows an order's events as its stream holds them, oldest first: version, event, when it was
recorded, the time since the previous event, and its trace as a link into Jaeger (JAEGER_UI_URL).

Options:
  --at <version|time>  time travel: the order as it was after that version (a number), or at that
                       time (2024-05-01T10:00:00Z, or a duration ago: 90s, 15m, 2h, 1d)
  --json               machine-readable output
  --archive DIR        where \`bakery archive\` put old events: an archived order (its stream
                       is gone) is looked for there
  -h, --help           show this help

Examples:
  bakery history 0b9f3c1e5a7d4f2e8c6b1a0d9e8f7a6b
  bakery history 0b9f3c1e5a7d4f2e8c6b1a0d9e8f7a6b --at 2
  bakery history 0b9f3c1e5a7d4f2e8c6b1a0d9e8f7a6b --at 2024-05-01T10:00:00.050Z --json
`

/** `--at`: a bare number is a version, anything else a time. */
export function parsePoint(text: string, now: number): Point {
  if (/^\d+$/.test(text)) return { kind: 'version', version: Number(text) }
  const ms = parseTime(text, now)
  if (ms === undefined)
    throw new UsageError(
      `--at takes a version (a number) or a time (ISO 8601, or 90s, 15m, 2h, 1d ago), not ${JSON.stringify(text)}`,
    )
  return { kind: 'time', ms }
}

/** The history as a table for a person. */
export function formatHistory(history: OrderHistory, jaegerUi: URL): string {
  const rows = history.entries.map((entry) => [
    String(entry.version),
    entry.type,
    entry.recordedAt,
    entry.sincePreviousMs === null ? '-' : `+${formatDuration(entry.sincePreviousMs)}`,
    describeEvent(entry.event),
    entry.traceId ? traceUrl(jaegerUi, entry.traceId) : '-',
  ])
  const count = history.entries.length
  return (
    `Order ${history.orderKey}: ${count} event${count === 1 ? '' : 's'}\n\n` +
    formatTable(
      ['VERSION', 'EVENT', 'RECORDED AT', 'SINCE PREVIOUS', 'WHAT HAPPENED', 'TRACE'],
      rows,
    )
  )
}

/** The history as JSON, each event with its trace link. */
export function historyJson(history: OrderHistory, jaegerUi: URL) {
  return {
    ...history,
    entries: history.entries.map((entry) => ({
      ...entry,
      traceUrl: entry.traceId ? traceUrl(jaegerUi, entry.traceId) : null,
    })),
  }
}

/** The order at a point in the past, for a person. */
export function formatPastState(history: OrderHistory, point: Point): string {
  const { last, view } = stateAt(history, point)
  const at =
    point.kind === 'version' ? `version ${point.version}` : new Date(point.ms).toISOString()
  if (!last || !view) return `Order ${history.orderKey} did not exist yet at ${at}.\n`
  const latest = history.entries[history.entries.length - 1]
  return (
    `Order ${history.orderKey} at ${at}: version ${last.version} of ${latest?.version ?? last.version}, ` +
    `after ${last.type} recorded ${last.recordedAt}\n\n` +
    formatTable(
      ['FIELD', 'VALUE'],
      Object.entries(view).map(([field, value]) => [field, value]),
    )
  )
}

/**
 * `bakery history <orderKey>`: prints the order's events, or with `--at` its state at a point in
 * the past. Resolves to the exit code: 0 shown, 1 no such order, 2 bad arguments.
 */
export async function runHistory(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  return runTool('history', USAGE, argv, io, async ({ config, redis, keys }) => {
    const { values, positionals } = parseToolArgs(argv, {
      json: { type: 'boolean', default: false },
      at: { type: 'string' },
      archive: { type: 'string' },
    })
    if (positionals.length !== 1) throw new UsageError('give exactly one order key')
    const key = OrderKey.decode(positionals[0])
    if (key._tag === 'Left')
      throw new UsageError(
        `${JSON.stringify(positionals[0])} is not an order key (32 lowercase hex digits)`,
      )
    const point = values.at === undefined ? undefined : parsePoint(values.at, Date.now())

    const archive = archiveOption(values.archive, config)
    let history = await readHistory(orderEventStore(redis, keys), key.right)
    if (history.entries.length === 0 && history.skipped.length === 0) {
      const partition = keys.of(key.right)
      if (archive) history = await readArchivedHistory(redis, partition, archive, key.right)
      else if ((await new ViewStore(redis, keys).raw(key.right)).version !== undefined) {
        io.stderr.write(
          `order ${key.right} is archived: its events are in the archive, not in Redis; pass --archive <dir>\n`,
        )
        return 1
      }
    }
    for (const skipped of history.skipped)
      io.stderr.write(`skipped ${skipped.streamId}: ${skipped.reason}\n`)
    if (history.entries.length === 0) {
      io.stderr.write(
        history.skipped.length > 0
          ? `order ${key.right} has no usable events (${history.skipped.length} skipped)\n`
          : `there is no order ${key.right} in namespace ${config.BAKERY_NAMESPACE}\n`,
      )
      return 1
    }

    if (point && values.json) {
      const { last, view } = stateAt(history, point)
      const at =
        point.kind === 'version'
          ? { version: point.version }
          : { time: new Date(point.ms).toISOString() }
      io.stdout.write(
        JSON.stringify({
          orderKey: history.orderKey,
          at,
          version: last?.version ?? 0,
          recordedAt: last?.recordedAt ?? null,
          view: view ?? null,
        }) + '\n',
      )
    } else if (point) {
      io.stdout.write(formatPastState(history, point))
    } else if (values.json) {
      io.stdout.write(JSON.stringify(historyJson(history, config.JAEGER_UI_URL)) + '\n')
    } else {
      io.stdout.write(formatHistory(history, config.JAEGER_UI_URL))
    }
    if (history.skipped.length > 0)
      io.stderr.write(`${history.skipped.length} entries skipped (see above)\n`)
    return 0
  })
}
