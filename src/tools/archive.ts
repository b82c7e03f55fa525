import { indexUnfinished } from '../baker/sweeper'
import { archivePartition, type PartitionArchived } from '../projections/archiver'
import {
  archiveOption,
  formatCount,
  parseTime,
  parseToolOptions,
  positiveInt,
  processIo,
  runTool,
  UsageError,
  type ToolIo,
} from './tool'

const USAGE = `Usage: bakery archive --before WHEN --archive DIR [--segment N] [--batch N]

Moves the events recorded before WHEN out of Redis, into gzip-compressed NDJSON segment files
under DIR/<namespace>/p<partition>/, then trims them from the global log and drops the streams of
the orders that finished among them; their views stay, and GET /orders/:key serves them as
before. \`bakery history\`, \`events\` and \`replay\` read the archive with --archive DIR.
docs/archive.md describes the files.

Safe to run while orders are placed, and again after an interruption: each segment is written
and synced before Redis lets go of its events, in one step that lists the segment and trims the
log. One run at a time archives a partition.

Options:
  --before WHEN   archive what was recorded before WHEN: a time (2024-05-01T00:00:00Z) or a
                  duration ago (90s, 15m, 2h, 7d)
  --archive DIR   where the segment files go
  --segment N     events per segment file at most (default 100000)
  --batch N       events per round trip to Redis (default 2000)
  -h, --help      show this help

Exit codes: 0 done; 1 a failure (what was committed before it stays archived); 2 bad arguments.

Examples:
  bakery archive --before 24h --archive /archive
  bakery archive --before 2024-05-01T00:00:00Z --archive ./archive
`

/**
 * `bakery archive`: archives every partition's log up to a time. Resolves to the exit code.
 */
export async function runArchive(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  return runTool('archive', USAGE, argv, io, async ({ redis, keys, config }) => {
    const values = parseToolOptions(argv, {
      before: { type: 'string' },
      archive: { type: 'string' },
      segment: { type: 'string' },
      batch: { type: 'string' },
    })
    if (values.before === undefined) throw new UsageError('--before is required')
    if (values.archive === undefined) throw new UsageError('--archive is required')
    const before = parseTime(values.before, Date.now())
    if (before === undefined)
      throw new UsageError(
        `--before takes a time (ISO 8601) or a duration ago (90s, 15m, 2h, 7d), not ${JSON.stringify(values.before)}`,
      )
    const options = {
      before,
      segmentEntries: positiveInt('segment', values.segment, 100_000),
      batchSize: positiveInt('batch', values.batch, 2000),
    }
    const archive = archiveOption(values.archive, config)!

    const results: PartitionArchived[] = []
    for (const partition of keys.partitions) {
      // The archive never trims past the sweeper's index: it brings the index up to date first,
      // as a baker would, so that no placed order escapes the sweeper.
      await indexUnfinished(redis, partition, Infinity)
      results.push(await archivePartition(redis, partition, archive, options))
    }

    const sum = (pick: (result: PartitionArchived) => number) =>
      results.reduce((total, result) => total + pick(result), 0)
    const live = await Promise.all(keys.partitions.map((p) => redis.xlen(p.events)))
    io.stdout.write(
      `Archived ${formatCount(sum((r) => r.entries))} events of namespace ${config.BAKERY_NAMESPACE} ` +
        `recorded before ${new Date(before).toISOString()} into ${formatCount(sum((r) => r.segments))} ` +
        `segment(s) under ${archive.dir}; dropped the streams of ${formatCount(sum((r) => r.dropped))} ` +
        `finished orders (their views stay); ${formatCount(sum((r) => r.pending))} wait for their ` +
        `view to catch up; ${formatCount(live.reduce((a, b) => a + b, 0))} events stay in Redis.\n`,
    )
    const held = results.filter((result) => result.heldBySweeper)
    if (held.length > 0)
      io.stderr.write(
        `bakery archive: ${held.length} partition(s) kept events older than the cutoff that the ` +
          `bakers' sweeper has not indexed yet; they go in a later run.\n`,
      )
    return 0
  })
}
