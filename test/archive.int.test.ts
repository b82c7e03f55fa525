import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PartitionKeys } from '../src/platform/keys'
import { Archive, segmentName, segmentRange } from '../src/projections/archive'
import { archivePartition, commitSegment } from '../src/projections/archiver'
import { lastLogId, readLog } from '../src/projections/log-entries'
import { foldOrderStream } from '../src/projections/rebuild'
import { MalformedEntry } from '../src/platform/errors'
import { lifecycle, namespaceFactory, record, seedOrders, type Bakery } from './support/replay'

const FUTURE = () => Date.now() + 60_000

/** The sweeper's cursor at the end of the log, as a baker leaves it: archiving may go that far. */
async function swept(b: Bakery, partition: PartitionKeys) {
  const last = await lastLogId(b.redis, partition)
  if (last) await b.redis.set(partition.sweepCursor, last)
}

/** Every event of the partition's log, archive first, as `order:version`. */
async function everything(b: Bakery, partition: PartitionKeys, archive: Archive, batchSize = 100) {
  const read: string[] = []
  for await (const { entries } of readLog(b.redis, partition, { archive, batchSize }))
    for (const entry of entries) {
      if (entry instanceof MalformedEntry) assert.fail(entry.message)
      read.push(`${entry.order}:${entry.version}`)
    }
  return read
}

describe('the archive', () => {
  const namespaces = namespaceFactory()
  let dir: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bakery-archive-int-'))
  })
  after(async () => {
    await namespaces.cleanUp()
    await rm(dir, { recursive: true, force: true })
  })
  const options = { before: 0, segmentEntries: 10, batchSize: 4 }
  /** A namespace of its own, its one partition, and an archive for it. */
  const fresh = (label: string) => {
    const { b } = namespaces.fresh(label)
    return { b, partition: b.keys.partitions[0]!, archive: new Archive(dir, b.keys.namespace) }
  }
  /** Archives everything the partition's sweeper has seen. */
  const archiveAll = (b: Bakery, partition: PartitionKeys, archive: Archive) =>
    archivePartition(b.redis, partition, archive, { ...options, before: FUTURE() })

  it('commits a segment only for the lock holder, from the marker it started at', async () => {
    const { b, partition, archive } = fresh('archive-commit')
    const orders = await seedOrders(b, 2)
    await b.redis.set(partition.archiveLock, 'mine')
    const [first, , , , , last] = (await b.redis.xrange(partition.events, '-', '+')).map(
      ([id]) => id,
    )
    const name = segmentName(first!, last!, 6)
    const finished = new Map(orders.map((order) => [order, 3]))
    const commit = (token: string, after: string | undefined) =>
      commitSegment(b.redis, partition, token, after, { name, last: last! }, finished)
    assert.equal(await commit('theirs', undefined), 'lost')
    assert.equal(await commit('mine', '0-1'), 'moved')
    assert.equal(await b.redis.xlen(partition.events), 6, 'nothing trimmed')
    assert.equal(await b.redis.llen(partition.archiveSegments), 0, 'nothing listed')
    assert.equal(await commit('mine', undefined), 'committed')
    assert.equal(await b.redis.xlen(partition.events), 0)
    assert.equal(await b.redis.get(partition.archivedUpTo), last)
    assert.deepEqual(segmentRange(name), { first, last, entries: 6 })

    // The run stops here, before it drops anything: the next one drops what the commit recorded.
    assert.equal(await b.redis.hlen(partition.archivePending), 2)
    await b.redis.del(partition.archiveLock)
    const next = await archiveAll(b, partition, archive)
    assert.deepEqual([next.entries, next.dropped], [0, 2])
    for (const order of orders) assert.equal(await b.redis.exists(partition.orderStream(order)), 0)
  })

  it('keeps a finished order whose view lags, and drops it once the view has caught up', async () => {
    const { b, partition, archive } = fresh('archive-pending')
    const [done] = await seedOrders(b, 1)
    const [lagging] = await seedOrders(b, 1, 2)
    // OrderBaked is in the log, but the projector has not folded it yet.
    await record(b, lifecycle.baked(lagging!), false)
    await swept(b, partition)

    const first = await archiveAll(b, partition, archive)
    assert.deepEqual(
      {
        entries: first.entries,
        segments: first.segments,
        dropped: first.dropped,
        pending: first.pending,
      },
      { entries: 6, segments: 1, dropped: 1, pending: 1 },
    )
    assert.equal(await b.redis.exists(partition.orderStream(done!)), 0)
    assert.equal(
      await b.redis.xlen(partition.orderStream(lagging!)),
      3,
      'kept until its view has it',
    )
    assert.equal(await b.redis.hget(partition.archivePending, lagging!), '3')

    // The projector folds it.
    await b.views.save(lagging!, (await foldOrderStream(b.store, lagging!))!)
    const second = await archiveAll(b, partition, archive)
    assert.equal(second.entries, 0)
    assert.equal(second.dropped, 1)
    assert.equal(await b.redis.exists(partition.orderStream(lagging!)), 0)
    assert.equal(await b.redis.hlen(partition.archivePending), 0)
    assert.equal((await b.views.get(lagging!))?.view.status, 'finished', 'the view stays')
    assert.equal((await everything(b, partition, archive)).length, 6)
  })

  it('never reads a segment file that was not committed', async () => {
    const { b, partition, archive } = fresh('archive-orphan')
    await seedOrders(b, 5)
    await swept(b, partition)
    await archiveAll(b, partition, archive)
    const [committed] = await readdir(archive.partitionDir(partition))
    // What an interrupted run leaves: a whole segment, written, never listed.
    const { first, last, entries } = segmentRange(committed!)
    await copyFile(
      archive.segmentPath(partition, committed!),
      archive.segmentPath(partition, segmentName(first, last.replace(/-\d+$/, '-9'), entries)),
    )
    const read = await everything(b, partition, archive)
    assert.equal(read.length, 15)
    assert.equal(new Set(read).size, 15)
  })

  it('reads each event once while a run archives what it is reading', async () => {
    const { b, partition, archive } = fresh('archive-concurrent')
    await seedOrders(b, 10)
    await swept(b, partition)
    // The run commits at the worst moment: after the reader looked at the segment list, just
    // before it reads the log's next batch from Redis.
    let reads = 0
    const racing = new Proxy(b.redis, {
      get(target, property, receiver) {
        if (property !== 'xrange') return Reflect.get(target, property, receiver) as unknown
        return async (...args: Parameters<typeof target.xrange>) => {
          if (++reads === 2) {
            assert.equal((await archiveAll(b, partition, archive)).entries, 30)
          }
          return target.xrange(...args)
        }
      },
    })
    const read: string[] = []
    for await (const { entries } of readLog(racing, partition, { archive, batchSize: 4 }))
      for (const entry of entries)
        if (!(entry instanceof MalformedEntry)) read.push(`${entry.order}:${entry.version}`)
    assert.ok(reads >= 2)
    assert.equal(await b.redis.xlen(partition.events), 0, 'all of it was archived meanwhile')
    assert.equal(read.length, 30)
    assert.equal(new Set(read).size, 30)
  })

  it('trims no further than the sweeper has indexed', async () => {
    const { b, partition, archive } = fresh('archive-sweeper')
    await seedOrders(b, 2)
    const [third] = (await b.redis.xrange(partition.events, '-', '+')).slice(2).map(([id]) => id)
    await b.redis.set(partition.sweepCursor, third!)
    const result = await archiveAll(b, partition, archive)
    assert.equal(result.entries, 3)
    assert.equal(result.heldBySweeper, true)
    assert.equal(await b.redis.xlen(partition.events), 3)
    assert.equal((await everything(b, partition, archive)).length, 6)
  })
})
