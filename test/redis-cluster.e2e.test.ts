import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster } from 'ioredis'
import { keys } from '../src/platform/keys'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runArchive } from '../src/tools/archive'
import { runEvents } from '../src/tools/events'
import { runReplay } from '../src/tools/replay'
import {
  countFinished,
  createVhost,
  driveOrders,
  orderKeysIn,
  orderProblems,
  placeOrders,
  startRedisCluster,
  startRole,
  uniqueNamespace,
  waitFor,
  type RedisCluster,
  type RoleProcess,
  type Vhost,
} from './support'
import { lastWarnings } from './support/faults'
import { captureIo } from './support/replay'

const PARTITIONS = 8

/**
 * Bakery on a Redis Cluster of the test's own (three masters, a replica each) with eight
 * partitions: the pipeline, the replay tools, and a master killed with SIGKILL under load.
 */
describe('a six-node Redis Cluster with eight partitions', { timeout: 180_000 }, () => {
  let cluster: RedisCluster
  let vhost: Vhost
  let client: Cluster
  const cleanups: (() => Promise<unknown>)[] = []

  before(async () => {
    cluster = await startRedisCluster(3)
    vhost = await createVhost('redis-cluster')
    client = new Cluster(cluster.nodes.map(({ port }) => ({ host: '127.0.0.1', port })))
  })
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })
  after(async () => {
    client.disconnect()
    await vhost.drop()
    await cluster.close()
  })

  const environment = (namespace: string, extra: Record<string, string> = {}) => ({
    AMQP_URL: vhost.url,
    REDIS_CLUSTER_NODES: cluster.seeds,
    BAKERY_PARTITIONS: String(PARTITIONS),
    BAKERY_NAMESPACE: namespace,
    PORT: '0',
    HEALTH_PORT: '0',
    OTEL_SDK_DISABLED: 'true',
    BAKE_TIME_SCALE: '0',
    ...extra,
  })
  const started = async (role: string, env: Record<string, string>) => {
    const process_ = await startRole(role, env)
    cleanups.push(() => process_.stop())
    return process_
  }
  const pipeline = async (env: Record<string, string>): Promise<RoleProcess[]> =>
    Promise.all(['reception', 'baker', 'projector'].map((role) => started(role, env)))
  const receptionOf = (roles: RoleProcess[]) => `http://127.0.0.1:${roles[0]!.port!}`

  it('runs the pipeline with its keys on every master, and replays and verifies', async () => {
    const namespace = uniqueNamespace('cluster')
    const env = environment(namespace)
    const k = keys(namespace, PARTITIONS)
    const roles = await pipeline(env)
    const orders = await placeOrders(receptionOf(roles), 300, 16)
    await waitFor(
      'every order to finish',
      async () => (await countFinished(client, k, orders)) === orders.length,
      { timeoutMs: 60_000, intervalMs: 200 },
    )
    assert.deepEqual(await orderProblems(client, k, orders), [])

    const used = new Set(orders.map((order) => k.of(order).index))
    assert.equal(used.size, PARTITIONS, 'orders land in every partition')
    const perMaster = await cluster.keysPerMaster()
    assert.equal(perMaster.size, 3)
    for (const [port, count] of perMaster) assert.ok(count > 0, `master ${port} holds no key`)

    const tool = async (run: typeof runReplay, ...argv: string[]) => {
      const io = captureIo(namespace, { env })
      const code = await run(argv, io)
      return { code, out: io.out(), err: io.err() }
    }
    const verified = await tool(runReplay, '--verify')
    assert.equal(verified.code, 0, verified.out + verified.err)
    assert.match(verified.out, /against 900 events \(300 orders\) in [^:]+: 0 differences/)
    const replayed = await tool(runReplay)
    assert.equal(replayed.code, 0, replayed.out + replayed.err)
    const again = await tool(runReplay, '--verify')
    assert.equal(again.code, 0, again.out + again.err)

    // The global logs of all partitions read as one, oldest first.
    const events = await tool(runEvents, '--json')
    assert.equal(events.code, 0, events.err)
    const lines = events.out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { id: string })
    assert.equal(lines.length, orders.length * 3)
    const ids = lines.map((line) => line.id)
    const sorted = [...ids].sort((a, b) => {
      const [am, as] = a.split('-').map(Number) as [number, number]
      const [bm, bs] = b.split('-').map(Number) as [number, number]
      return am - bm || as - bs
    })
    assert.deepEqual(ids, sorted, 'merged by time')

    // Archived on the cluster (each partition's scripts in its own slot), nothing is lost.
    const dir = await mkdtemp(join(tmpdir(), 'bakery-cluster-archive-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const archived = await tool(runArchive, '--before', '0s', '--archive', dir)
    assert.equal(archived.code, 0, archived.out + archived.err)
    assert.match(archived.out, /^Archived 900 events .* the streams of 300 finished orders/)
    const afterArchive = await tool(runReplay, '--verify', '--archive', dir)
    assert.match(afterArchive.out, /against 900 events \(300 orders\) in [^:]+: 0 differences/)
    assert.deepEqual(await orderKeysIn(client, k), [], 'finished orders keep no stream')
  })

  it('refuses another number of partitions on a store that has data', async () => {
    const namespace = uniqueNamespace('cluster-layout')
    const roles = await pipeline(environment(namespace))
    await placeOrders(receptionOf(roles), 1)
    const io = captureIo(namespace, { env: { ...environment(namespace), BAKERY_PARTITIONS: '4' } })
    assert.equal(await runReplay(['--verify'], io), 78)
    assert.match(io.err(), /BAKERY_PARTITIONS=4, but namespace \S+ was made with 8 partitions/)
  })

  it('loses no accepted order when a master is killed with SIGKILL under load', async () => {
    const namespace = uniqueNamespace('cluster-failover')
    const k = keys(namespace, PARTITIONS)
    const roles = await pipeline(environment(namespace, { STUCK_ORDER_AFTER_MS: '3000' }))
    const load = driveOrders(receptionOf(roles), 4, 20)
    // Stopped before the roles, and even if the test fails first: a load left running keeps the
    // test process alive.
    cleanups.push(load.stop)
    await waitFor('orders to flow', () => load.accepted.length >= 100, { timeoutMs: 30_000 })
    const [victim] = await cluster.masters()
    await victim!.kill()
    // Its replica takes over; with no replica of its own, writes to its slots are refused (503)
    // until the lost node comes back: too few replicas to keep them.
    await cluster.healthy({ replicated: false })
    const acceptedAtFailover = load.accepted.length
    await waitFor('orders to flow again', () => load.accepted.length >= acceptedAtFailover + 100, {
      timeoutMs: 30_000,
    })
    await load.stop()

    // Every order the store holds: each 202, and any whose write landed though its client got a
    // 503 (too few replicas in time) or gave up waiting. Each must finish exactly once. Read
    // through the cluster client, which follows the slots to their new master, until no order
    // comes in any more and all are finished.
    const storedOrders = async () => {
      const logs = await Promise.all(k.partitions.map((p) => client.xrange(p.events, '-', '+')))
      return [...new Set(logs.flat().map(([, fields]) => fields[fields.indexOf('order') + 1]!))]
    }
    let stored: string[] = []
    await waitFor(
      'every stored order to finish, and no other to come',
      async () => {
        const now = await storedOrders()
        const settled =
          now.length === stored.length && (await countFinished(client, k, now)) === now.length
        stored = now
        return settled
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\n${await whereStuck(namespace, roles, stored)}`)
    })
    for (const order of load.accepted) assert.ok(stored.includes(order), `${order} was lost`)
    assert.deepEqual(await orderProblems(client, k, stored), [])
    // What was refused during the failover was refused with a 503, never lost after a 202.
    const errors = () =>
      roles[0]!
        .output()
        .split('\n')
        .filter((line) => /"level":50/.test(line))
        .slice(0, 3)
        .join('\n')
    for (const { status } of load.refused)
      assert.ok(status === 503 || status === 0, `${status}: ${errors()}`)
    assert.equal((await cluster.masters()).length, 3, 'a replica took over')
  })

  /** What the stored orders that did not finish hold, and what the roles last warned of. */
  async function whereStuck(
    namespace: string,
    roles: readonly RoleProcess[],
    orders: readonly string[],
  ): Promise<string> {
    const k = keys(namespace, PARTITIONS)
    const lines: string[] = []
    for (const order of orders) {
      const events = await client.xrange(k.orderStream(order), '-', '+')
      const types = events.map(([, fields]) => fields[fields.indexOf('type') + 1])
      if (types.at(-1) === 'bakery/order-baked') continue
      const partition = k.of(order)
      const unfinished = await client.zscore(partition.unfinished, order)
      lines.push(
        `${order} (p${partition.index}): ${types.join(', ') || 'no stream'}; ` +
          `view ${JSON.stringify(await client.hgetall(k.view(order)))}; ` +
          `in the sweeper's index: ${unfinished !== null}`,
      )
      if (lines.length >= 10) break
    }
    for (const partition of k.partitions)
      lines.push(
        `p${partition.index}: outbox ${await client.xlen(partition.outbox)}, ` +
          `unfinished ${await client.zcard(partition.unfinished)}, ` +
          `sweep cursor ${await client.get(partition.sweepCursor)}`,
      )
    const warnings = lastWarnings(roles, 4)
    return ['unfinished:', ...lines, 'last warnings:', ...warnings].join('\n')
  }
})
