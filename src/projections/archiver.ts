import { randomBytes } from 'node:crypto'
import type { ChainableCommander } from 'ioredis'
import { OrderBaked } from '../messages'
import type { PartitionKeys } from '../platform/keys'
import { compareStreamIds, fieldRecord } from '../platform/redis'
import type { ScriptedRedis } from '../platform/scripts'
import { writeSegment, type Archive, type RawEntry, type WrittenSegment } from './archive'

export interface ArchiveOptions {
  /** Entries recorded before this time (ms since the epoch, by their stream ids) are archived. */
  readonly before: number
  /** Entries per segment file at most. */
  readonly segmentEntries: number
  /** Entries per XRANGE, and order streams per pipelined drop. */
  readonly batchSize: number
  /** How long the partition's archive lock outlives a run that stopped renewing it. */
  readonly lockTtlMs?: number
}

export interface PartitionArchived {
  readonly index: number
  /** Entries moved from the partition's global log into segments by this run. */
  readonly entries: number
  readonly segments: number
  /** Streams of finished orders dropped (their views stay as their snapshots). */
  readonly dropped: number
  /** Finished orders whose stream waits for its view to fold its last event. */
  readonly pending: number
  /** The id of the last archived entry of the partition, if any. */
  readonly upTo: string | undefined
  /**
   * True when entries older than the cutoff stay because the bakers' sweeper has not indexed them
   * yet: the log is never trimmed past what the sweeper has seen.
   */
  readonly heldBySweeper: boolean
}

export class ArchiveInProgress extends Error {
  override readonly name = 'ArchiveInProgress'
}

/** The run lost its partition's lock, or another run committed meanwhile: nothing was trimmed. */
export class ArchiveInterrupted extends Error {
  override readonly name = 'ArchiveInterrupted'
}

const LOCK_TTL_MS = 60_000

/** The stream id right after `id`: XTRIM MINID keeps it and everything later. */
const nextId = (id: string) => {
  const [ms, seq] = id.split('-') as [string, string]
  return `${ms}-${BigInt(seq) + 1n}`
}

/**
 * Moves the entries of a partition's global log recorded before `options.before` into segment
 * files of `archive`, then drops the streams of the orders that finished among them. For each
 * segment:
 * 1. read the next run of the log (after the last archived entry, up to the cutoff, and never
 *    past what the bakers' sweeper has indexed) and write it to a segment file, synced;
 * 2. commit it: list the segment, move the archived-up-to marker and trim the log up to it, in
 *    one script, only while this run holds the partition's lock and nobody committed meanwhile;
 * 3. drop the stream of each order whose OrderBaked the segment holds, if that is the stream's
 *    last event and the live view has folded it; else the order waits in `archivePending` for
 *    the next run. Its view stays: GET serves it, and replay refolds it from the archive.
 * Entries are never lost (a segment is committed only once written) nor read twice (readers take
 * the committed segments, then the log after the marker); an interrupted run leaves at most a
 * file that is not listed, which no reader reads.
 */
export async function archivePartition(
  redis: ScriptedRedis,
  partition: PartitionKeys,
  archive: Archive,
  options: ArchiveOptions,
): Promise<PartitionArchived> {
  const ttl = options.lockTtlMs ?? LOCK_TTL_MS
  const token = randomBytes(9).toString('base64url')
  if ((await redis.set(partition.archiveLock, token, 'PX', ttl, 'NX')) !== 'OK')
    throw new ArchiveInProgress(
      `another bakery archive is archiving partition ${partition.index} (it holds ${partition.archiveLock})`,
    )
  try {
    const cutoff = `${Math.max(0, Math.floor(options.before))}-0`
    const swept = await redis.get(partition.sweepCursor)
    const end =
      swept === null ? undefined : compareStreamIds(swept, cutoff) < 0 ? swept : `(${cutoff}`
    let after = (await redis.get(partition.archivedUpTo)) ?? undefined
    let entries = 0
    let segments = 0
    while (end !== undefined) {
      if ((await redis.bakeryRenewLock(partition.archiveLock, token, ttl)) !== 1)
        throw new ArchiveInterrupted(
          `the archive of partition ${partition.index} lost its lock; nothing more was trimmed`,
        )
      const finished = new Map<string, number>()
      const run = logRun(redis, partition, after, end, options, finished)
      const written = await writeSegment(archive.partitionDir(partition), run)
      if (!written) break
      const committed = await commitSegment(redis, partition, token, after, written, finished)
      if (committed !== 'committed')
        throw new ArchiveInterrupted(
          committed === 'lost'
            ? `the archive of partition ${partition.index} lost its lock before its commit; ${written.name} was not committed`
            : `another run archived partition ${partition.index} meanwhile; ${written.name} was not committed`,
        )
      after = written.last
      entries += written.entries
      segments += 1
      if (written.entries < options.segmentEntries) break
    }

    // Whatever is left before the cutoff waits for the sweeper.
    const held = await redis.xrange(partition.events, '-', `(${cutoff}`, 'COUNT', 1)

    // The orders finished in what was archived, and those an earlier run left waiting.
    const outcomes = await dropStreams(redis, partition, options.batchSize)
    return {
      index: partition.index,
      entries,
      segments,
      dropped: outcomes.filter((outcome) => outcome === 'dropped').length,
      pending: outcomes.filter((outcome) => outcome === 'pending').length,
      upTo: after,
      heldBySweeper: held.length > 0,
    }
  } finally {
    await redis.bakeryRenewLock(partition.archiveLock, token, 0).catch(() => undefined)
  }
}

/**
 * Commits a written segment (see COMMIT_SEGMENT): lists it, moves the partition's archived-up-to
 * marker from `after` to its last entry, trims the log up to there, and records the orders it
 * finished; only while `token` holds the partition's lock and the marker is still at `after`.
 */
export function commitSegment(
  redis: ScriptedRedis,
  partition: PartitionKeys,
  token: string,
  after: string | undefined,
  segment: Pick<WrittenSegment, 'name' | 'last'>,
  finished: ReadonlyMap<string, number>,
) {
  return redis.bakeryCommitSegment(
    partition.events,
    partition.archivedUpTo,
    partition.archiveSegments,
    partition.archiveLock,
    partition.archivePending,
    token,
    after ?? '',
    segment.name,
    segment.last,
    nextId(segment.last),
    ...[...finished].flat(),
  )
}

/**
 * The next run of the log to archive, in batches: after `after`, up to `end`, at most
 * `segmentEntries`. Notes in `finished` the version of each OrderBaked it passes.
 */
async function* logRun(
  redis: ScriptedRedis,
  partition: PartitionKeys,
  after: string | undefined,
  end: string,
  { segmentEntries, batchSize }: ArchiveOptions,
  finished: Map<string, number>,
): AsyncGenerator<RawEntry[]> {
  let from = after === undefined ? '-' : `(${after}`
  for (let left = segmentEntries; left > 0; ) {
    const raw = await redis.xrange(partition.events, from, end, 'COUNT', Math.min(batchSize, left))
    if (raw.length === 0) return
    for (const [, fields] of raw) {
      const { order, type, version } = fieldRecord(fields)
      if (type === OrderBaked.$name && order !== undefined) finished.set(order, Number(version))
    }
    yield raw
    left -= raw.length
    from = `(${raw[raw.length - 1]![0]}`
  }
}

/** Drops the streams the partition's pending orders allow; what became of each. */
async function dropStreams(redis: ScriptedRedis, partition: PartitionKeys, batchSize: number) {
  const outcomes: string[] = []
  let cursor = '0'
  do {
    const [next, flat] = await redis.hscan(partition.archivePending, cursor, 'COUNT', batchSize)
    cursor = next
    const pipeline: ChainableCommander = redis.pipeline()
    for (let i = 0; i + 1 < flat.length; i += 2)
      pipeline.bakeryDropOrderStream(
        partition.orderStream(flat[i]!),
        partition.viewGeneration,
        partition.archivePending,
        partition.viewPrefix,
        flat[i]!,
        Number(flat[i + 1]),
      )
    for (const [error, outcome] of (await pipeline.exec()) ?? []) {
      if (error) throw error
      outcomes.push(String(outcome))
    }
  } while (cursor !== '0')
  return outcomes
}
