import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { Redis } from 'ioredis'
import { keys, type Keys } from '../src/platform/keys'
import { forEachScan } from '../src/projections/generations'
import { runArchive } from '../src/tools/archive'
import { runEvents } from '../src/tools/events'
import { runHistory } from '../src/tools/history'
import { runReplay } from '../src/tools/replay'
import type { ToolIo } from '../src/tools/tool'
import {
  dropNamespace,
  driveOrders,
  isolatedBakery,
  LIFE,
  REDIS_URL,
  startPipeline,
  waitFor,
  type RoleProcess,
  type Vhost,
} from './support'
import { captureIo } from './support/replay'

const PARTITIONS = 4

/** Bytes of every key of the namespace whose name passes `select`, by MEMORY USAGE (exact). */
async function memoryOf(redis: Redis, k: Keys, select: (key: string) => boolean) {
  let bytes = 0
  let count = 0
  // Every key of the namespace starts with `{<namespace>` (the partitions' tags included).
  await forEachScan(redis, `{${k.namespace}*`, async (found) => {
    for (const key of found.filter(select)) {
      bytes += Number(await redis.memory('USAGE', key, 'SAMPLES', 0))
      count += 1
    }
  })
  return { bytes, count }
}

/**
 * `bakery archive` on a running Bakery with four partitions: archiving while orders are placed,
 * then reading the archive plus what Redis holds with `events`, `history` and `replay`.
 */
describe('bakery archive', { timeout: 240_000 }, () => {
  let vhost: Vhost
  let namespace: string
  let env: Record<string, string>
  let k: Keys
  let dir: string
  const redis = new Redis(REDIS_URL)
  const roles: RoleProcess[] = []
  let base: string

  const tool = async (
    run: (argv: readonly string[], io: ToolIo) => Promise<number>,
    ...argv: string[]
  ) => {
    const io = captureIo(namespace, { env: { BAKERY_PARTITIONS: String(PARTITIONS) } })
    const code = await run(argv, io)
    return { code, out: io.out(), err: io.err() }
  }
  const statuses = async (orders: readonly string[]) => {
    const pipeline = redis.pipeline()
    for (const order of orders) pipeline.hget(k.view(order), 'status')
    return ((await pipeline.exec()) ?? []).map(([, status]) => status as string | null)
  }

  before(async () => {
    ;({ vhost, namespace, env } = await isolatedBakery('archive', {
      BAKERY_PARTITIONS: String(PARTITIONS),
    }))
    k = keys(namespace, PARTITIONS)
    dir = await mkdtemp(join(tmpdir(), 'bakery-archive-'))
    base = await startPipeline(env, roles)
  })
  after(async () => {
    await Promise.all(roles.map((role) => role.stop()))
    await vhost.drop()
    await dropNamespace(namespace)
    redis.disconnect()
    await rm(dir, { recursive: true, force: true })
  })

  it('archives while orders flow, and loses or doubles nothing', async () => {
    const load = driveOrders(base, 4, 5)
    const runs: string[] = []
    try {
      for (let run = 0; run < 4; run++) {
        // Each run finds new orders in the log, some finished and some not.
        const placed = load.accepted.length
        await waitFor('more orders to be placed', () => load.accepted.length >= placed + 100, {
          timeoutMs: 30_000,
          intervalMs: 50,
        })
        const archived = await tool(
          runArchive,
          '--before',
          '0s',
          '--archive',
          dir,
          '--segment',
          '150',
        )
        assert.equal(archived.code, 0, archived.out + archived.err)
        runs.push(archived.out)
      }
    } finally {
      await load.stop()
    }
    assert.deepEqual(load.refused, [])
    const orders = load.accepted
    assert.ok(orders.length >= 200, `only ${orders.length} orders were placed`)
    await waitFor(
      'every order to finish',
      async () => (await statuses(orders)).every((status) => status === 'finished'),
      { timeoutMs: 60_000, intervalMs: 200 },
    )
    // Runs made while orders flowed archived something and dropped finished orders' streams.
    assert.ok(
      runs.some((line) => /dropped the streams of [1-9]/.test(line)),
      runs.join(''),
    )

    const final = await tool(runArchive, '--before', '0s', '--archive', dir)
    assert.equal(final.code, 0, final.out + final.err)
    assert.match(final.out, /wait for their view to catch up; 0 events stay in Redis/)

    // Every order's life is in the archive exactly once, and nothing else is.
    const events = await tool(runEvents, '--json', '--archive', dir)
    assert.equal(events.code, 0, events.err)
    const lines = events.out
      .trim()
      .split('\n')
      .map(
        (line) => JSON.parse(line) as { id: string; order: string; version: number; type: string },
      )
    // (Stream ids are unique within a partition only; an event is an order's version.)
    const distinct = new Set(lines.map((line) => `${line.order}:${line.version}`))
    assert.equal(distinct.size, lines.length, 'an event read twice')
    const lives = Map.groupBy(lines, (line) => line.order)
    assert.deepEqual([...lives.keys()].sort(), [...orders].sort())
    for (const [order, life] of lives)
      assert.deepEqual(
        life.map(({ version, type }) => `${version}:${type}`),
        LIFE.map((type, i) => `${i + 1}:${type}`),
        `order ${order}`,
      )

    // The segments are gzip NDJSON: each line an entry's id and its fields as Redis held them.
    const partitionDirs = await readdir(join(dir, namespace))
    assert.deepEqual(partitionDirs.sort(), ['p0', 'p1', 'p2', 'p3'])
    const segments = await readdir(join(dir, namespace, 'p0'))
    assert.ok(segments.length >= 2, `partition 0 has ${segments.length} segment(s)`)
    const [first] = gunzipSync(await readFile(join(dir, namespace, 'p0', segments.sort()[0]!)))
      .toString()
      .split('\n')
    const entry = JSON.parse(first!) as { id: string; fields: Record<string, string> }
    assert.match(entry.id, /^\d+-\d+$/)
    assert.deepEqual(Object.keys(entry.fields).sort(), [
      'event',
      'order',
      'recordedAt',
      'trace',
      'type',
      'version',
    ])

    // The read model equals the fold of archive plus Redis, before and after a replay from them.
    const verified = await tool(runReplay, '--verify', '--archive', dir)
    assert.equal(verified.code, 0, verified.out + verified.err)
    const total = `${(orders.length * 3).toLocaleString('en-US')} events \\(${orders.length.toLocaleString('en-US')} orders\\)`
    assert.match(verified.out, new RegExp(`against ${total} in [^:]+: 0 differences, 0 entries`))
    const refused = await tool(runReplay, '--verify')
    assert.equal(refused.code, 2)
    assert.match(refused.err, /is archived .*pass --archive <dir>/)
    const replayed = await tool(runReplay, '--archive', dir)
    assert.equal(replayed.code, 0, replayed.out + replayed.err)
    const again = await tool(runReplay, '--verify', '--archive', dir)
    assert.match(again.out, new RegExp(`against ${total} in [^:]+: 0 differences`))

    // GET serves an archived order from its view; history finds its events in the archive.
    const order = orders[0]!
    const response = await fetch(`${base}/orders/${order}`)
    assert.equal(response.status, 200)
    assert.equal(((await response.json()) as { status: string }).status, 'finished')
    const history = await tool(runHistory, order, '--json', '--archive', dir)
    assert.equal(history.code, 0, history.err)
    const shown = JSON.parse(history.out) as { entries: { version: number; type: string }[] }
    assert.deepEqual(
      shown.entries.map(({ type }) => type),
      [...LIFE],
    )
    const withoutArchive = await tool(runHistory, order)
    assert.equal(withoutArchive.code, 1)
    assert.match(withoutArchive.err, /is archived.*pass --archive <dir>/)

    // What Redis keeps of an archived order is its view: no stream, and the rest is constant.
    const streams = await memoryOf(redis, k, (key) => key.includes(':order:'))
    assert.equal(streams.count, 0, 'order streams left after archiving every finished order')
    const views = await memoryOf(redis, k, (key) => key.includes(':view:'))
    const all = await memoryOf(redis, k, () => true)
    assert.equal(views.count, orders.length)
    const rest = all.bytes - views.bytes
    // Per partition: its empty log and outbox, the segment list, a few counters and markers.
    assert.ok(
      rest < 4096 * PARTITIONS,
      `${rest} bytes besides the views (${all.count - views.count} keys)`,
    )
  })

  it('lets one run at a time archive a partition', async () => {
    const partition = k.partitions[0]!
    await redis.set(partition.archiveLock, 'another run', 'PX', 10_000)
    try {
      const busy = await tool(runArchive, '--before', '0s', '--archive', dir)
      assert.equal(busy.code, 1)
      assert.match(busy.err, /another bakery archive is archiving partition 0/)
    } finally {
      await redis.del(partition.archiveLock)
    }
  })

  it('names what is wrong with its arguments', async () => {
    const missing = await tool(runArchive, '--before', '1h')
    assert.equal(missing.code, 2)
    assert.match(missing.err, /--archive is required/)
    const bad = await tool(runArchive, '--before', 'yesterday', '--archive', dir)
    assert.equal(bad.code, 2)
    assert.match(bad.err, /--before takes a time/)
  })
})
