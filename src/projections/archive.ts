import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, open, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createGunzip, createGzip } from 'node:zlib'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { PartitionKeys } from '../platform/keys'
import { fieldRecord, type RedisClient } from '../platform/redis'

/*
 * The archive: the start of each partition's global log, moved out of Redis by `bakery archive`
 * into gzip-compressed NDJSON segment files (docs/archive.md has the format). A segment holds a
 * contiguous run of the log; Redis lists the segments of each partition that were committed, in
 * log order, and only those are read: a file an interrupted run left behind never counts.
 */

/** A raw entry of a global log: its stream id and its fields as Redis holds them. */
export type RawEntry = [id: string, fields: string[]]

/** Where one namespace's archive lives: `<dir>/<namespace>/p<partition>/<segment>`. */
export class Archive {
  constructor(
    readonly dir: string,
    readonly namespace: string,
  ) {}

  partitionDir(partition: PartitionKeys): string {
    return join(this.dir, this.namespace, `p${partition.index}`)
  }

  segmentPath(partition: PartitionKeys, segment: string): string {
    return join(this.partitionDir(partition), segment)
  }
}

/** A segment's file name: the ids of its first and last entries, and how many it holds. */
export const segmentName = (first: string, last: string, entries: number) =>
  `${first}_${last}_${entries}.ndjson.gz`

/** What a segment's name says: the ids of its first and last entries, and how many it holds. */
export function segmentRange(segment: string): { first: string; last: string; entries: number } {
  const match = /^(\d+-\d+)_(\d+-\d+)_(\d+)\.ndjson\.gz$/.exec(segment)
  if (!match) throw new Error(`${JSON.stringify(segment)} is not the name of an archive segment`)
  return { first: match[1]!, last: match[2]!, entries: Number(match[3]) }
}

/** How many entries the committed segments of `partitions` hold. */
export async function archivedEntries(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
): Promise<number> {
  const lists = await Promise.all(partitions.map((p) => redis.lrange(p.archiveSegments, 0, -1)))
  return lists.flat().reduce((sum, segment) => sum + segmentRange(segment).entries, 0)
}

/** One line of a segment. */
export const segmentLine = ([id, fields]: RawEntry) =>
  `${JSON.stringify({ id, fields: fieldRecord(fields) })}\n`

export interface WrittenSegment {
  readonly name: string
  readonly entries: number
  readonly last: string
}

/**
 * Writes `entries` (a run of the log, oldest first) to a segment in `directory`, durably: to a
 * temporary file, synced, then renamed to its name and the directory synced. Resolves to the
 * segment, or undefined when there was nothing to write.
 */
export async function writeSegment(
  directory: string,
  entries: AsyncIterable<readonly RawEntry[]>,
): Promise<WrittenSegment | undefined> {
  await mkdir(directory, { recursive: true })
  const temporary = join(directory, `.writing-${process.pid}-${Date.now()}.tmp`)
  let first: string | undefined
  let last = ''
  let count = 0
  async function* lines() {
    for await (const batch of entries) {
      if (batch.length === 0) continue
      first ??= batch[0]![0]
      last = batch.at(-1)![0]
      count += batch.length
      yield batch.map(segmentLine).join('')
    }
  }
  try {
    // `flush`: the file is synced before it is closed.
    const file = createWriteStream(temporary, { flush: true })
    await pipeline(Readable.from(lines()), createGzip(), file)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  if (first === undefined) {
    await rm(temporary, { force: true })
    return undefined
  }
  const name = segmentName(first, last, count)
  await rename(temporary, join(directory, name))
  const dir = await open(directory, 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
  return { name, entries: count, last }
}

/** A segment's entries in batches of up to `batchSize`, oldest first. */
export async function* readSegment(path: string, batchSize: number): AsyncGenerator<RawEntry[]> {
  const gunzip = createGunzip()
  const file = createReadStream(path).on('error', (error) => gunzip.destroy(error))
  const lines = createInterface({ input: file.pipe(gunzip), crlfDelay: Infinity })
  let batch: RawEntry[] = []
  try {
    for await (const line of lines) {
      if (line === '') continue
      const { id, fields } = JSON.parse(line) as { id: string; fields: Record<string, string> }
      batch.push([id, Object.entries(fields).flat()])
      if (batch.length >= batchSize) {
        yield batch
        batch = []
      }
    }
    if (batch.length > 0) yield batch
  } finally {
    // A reader that stops early closes the file.
    lines.close()
    file.destroy()
  }
}
