// What one finished order costs in Redis memory: its stream, its share of the global log, its
// read-model view, and what else stays per order (`MEMORY USAGE` of each key, SAMPLES 0, i.e.
// exactly); then what it costs once `bakery archive` moved its events out: every key of the
// namespace in Redis, and the segment files on disk. The three roles run from dist/ (npm run build
// first) in a namespace and vhost of their own, with instant bakes; the namespace is dropped at
// the end. The Redis is TEST_REDIS_URL's (default the local one): its `stream-node-max-bytes`
// decides what a small stream costs (docs/scaling.md).
//   npx tsx bench/tools/bytes-per-order.ts [--orders 2000] [--partitions 1]
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { keys } from '../../src/platform/keys'
import { forEachScan } from '../../src/projections/generations'
import { runArchive } from '../../src/tools/archive'
import {
  countFinished,
  dropNamespace,
  isolatedBakery,
  placeOrders,
  REDIS_URL,
  startPipeline,
  waitFor,
  type RoleProcess,
} from '../../harness'

const { values } = parseArgs({
  options: {
    orders: { type: 'string', default: '2000' },
    partitions: { type: 'string', default: '1' },
  },
})
const orders = Number(values.orders)
const partitions = Number(values.partitions)

async function main(): Promise<void> {
  const redis = new Redis(REDIS_URL)
  const { vhost, namespace, env } = await isolatedBakery('bytes', {
    BAKERY_PARTITIONS: String(partitions),
  })
  const roles: RoleProcess[] = []
  try {
    const base = await startPipeline(env, roles)
    const k = keys(namespace, partitions)
    const placed = await placeOrders(base, orders, 16)
    await waitFor(
      'every order to finish',
      async () => {
        return (await countFinished(redis, k, placed)) === placed.length
      },
      { timeoutMs: 300_000, intervalMs: 500 },
    )
    await Promise.all(roles.map((role) => role.stop()))
    const usage = async (key: string) =>
      Number((await redis.memory('USAGE', key, 'SAMPLES', 0)) ?? 0)
    const sum = async (list: readonly string[]) => {
      let total = 0
      for (const key of list) total += await usage(key)
      return total
    }
    const streams = await sum(placed.map((order) => k.orderStream(order)))
    const views = await sum(placed.map((order) => k.view(order)))
    const logs = await sum(k.partitions.map((p) => p.events))
    const outboxes = await sum(k.partitions.map((p) => p.outbox))
    const unfinished = await sum(k.partitions.map((p) => p.unfinished))
    const per = (bytes: number) => `${(bytes / placed.length).toFixed(0)} B`
    console.log(
      `${placed.length} finished orders, ${partitions} partition(s), Redis ${await version(redis)}`,
    )
    console.log(`order stream        ${per(streams)}`)
    console.log(`global log share    ${per(logs)}`)
    console.log(`read-model view     ${per(views)}`)
    console.log(`outbox share        ${per(outboxes)} (acknowledged entries are deleted)`)
    console.log(`unfinished index    ${per(unfinished)}`)
    console.log(`total               ${per(streams + logs + views + outboxes + unfinished)}`)

    const dir = await mkdtemp(join(tmpdir(), 'bakery-bytes-'))
    try {
      const io = {
        stdout: { write: () => true },
        stderr: process.stderr,
        env: { ...process.env, ...env },
      }
      if ((await runArchive(['--before', '0s', '--archive', dir], io)) !== 0)
        throw new Error('bakery archive failed')
      let inRedis = 0
      await forEachScan(redis, `{${namespace}*`, async (found) => {
        for (const key of found) inRedis += await usage(key)
      })
      console.log(
        `archived: in Redis ${per(inRedis)} (every key of the namespace), on disk ${per(await bytesUnder(dir))} (gzip NDJSON)`,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  } finally {
    await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
    redis.disconnect()
  }
}

async function bytesUnder(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }))
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  return total
}

async function version(redis: Redis): Promise<string> {
  return /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?'
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
