import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { OrderKey } from '../src/messages'
import { foldView } from '../src/projections/order-view'
import { runEvents } from '../src/tools/events'
import { runReplay } from '../src/tools/replay'
import { projectOrder } from '../src/projections/projector'
import { findOrder, placeOrder, randomOrderKey } from '../src/reception/orders'
import { REDIS_URL, ROOT } from './support'
import {
  captureIo,
  lifecycle,
  namespaceFactory,
  record,
  seedOrders,
  type Bakery,
} from './support/replay'

const { fresh, open, cleanUp } = namespaceFactory()
after(cleanUp)

/** Every read-model key of the namespace. */
async function viewKeys(b: Bakery): Promise<string[]> {
  return (await b.redis.keys(`${b.keys.partitions[0]!.viewPrefix}*`)).sort()
}

describe('bakery replay', () => {
  it('rebuilds exactly the read model the projector built, and drops the old keys', async () => {
    const { namespace, b } = fresh('replay-equal')
    const orders = [
      ...(await seedOrders(b, 8, 1)),
      ...(await seedOrders(b, 8, 2)),
      ...(await seedOrders(b, 8, 3)),
    ]
    const before = await Promise.all(orders.map((order) => b.views.get(order)))
    const oldKeys = await viewKeys(b)
    assert.equal(oldKeys.length, 24)

    const io = captureIo(namespace)
    assert.equal(await runReplay([], io), 0, io.err())
    assert.match(io.out(), /Replayed 48 events \(24 orders\) .* into read-model generation 1 /)

    const after_ = await Promise.all(orders.map((order) => b.views.get(order)))
    assert.deepEqual(after_, before)
    for (const [i, order] of orders.entries())
      assert.deepEqual(after_[i], foldView(await b.store.read(order)))
    const newKeys = await viewKeys(b)
    assert.equal(newKeys.length, 24)
    assert.ok(
      newKeys.every((key) => key.startsWith(`${b.keys.partitions[0]!.viewPrefix}1:`)),
      newKeys[0],
    )

    const verify = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], verify), 0, verify.out() + verify.err())
    assert.match(verify.out(), /0 differences, 0 entries skipped/)
  })

  it('--verify accepts an order in the oven, whose view waits for OrderBaked, and nothing more', async () => {
    const { namespace, b } = fresh('replay-oven')
    const deps = { ...b, now: () => new Date(), newOrderKey: randomOrderKey }
    // As the reception places it (its view written with it) and the baker takes it.
    const order = await placeOrder(deps, { customer: 'homer', pastry: 'la bombe' })
    await b.store.append(order, 1, [lifecycle.started(order)], [])
    assert.equal((await b.views.get(order))?.view.status, 'pending', 'the view waits')
    assert.equal((await findOrder(deps, order))?.status, 'baking', 'GET folds what it misses')
    const verify = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], verify), 0, verify.out() + verify.err())
    assert.match(verify.out(), /0 differences/)

    // OrderBaked in the log but never projected: the read model really is behind.
    await b.store.append(order, 2, [lifecycle.baked(order)], [])
    const behind = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], behind), 1, behind.out())
    assert.match(
      behind.out(),
      new RegExp(`${order}: .*status is "pending", the log says "finished"`),
    )
    await projectOrder(b, lifecycle.baked(order))
    const again = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], again), 0, again.out())
  })

  it('--verify names a corrupted and a missing view; replay repairs both', async () => {
    const { namespace, b } = fresh('replay-corrupt')
    const [corrupted, lost, fine] = await seedOrders(b, 3)
    await b.redis.hset(b.keys.view(corrupted!), 'status', 'pending')
    await b.redis.del(b.keys.view(lost!))

    const verify = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], verify), 1)
    const lines = verify.out().trimEnd().split('\n')
    assert.ok(
      lines.includes(`${corrupted}: status is "pending", the log says "finished"`),
      verify.out(),
    )
    assert.ok(lines.includes(`${lost}: in the log but missing from the read model`), verify.out())
    assert.ok(!verify.out().includes(fine!))
    assert.match(verify.out(), /2 differences/)

    assert.equal(await runReplay([], captureIo(namespace)), 0)
    assert.equal((await b.views.get(corrupted!))?.view.status, 'finished')
    assert.equal((await b.views.get(lost!))?.view.status, 'finished')
    const again = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], again), 0, again.out())
  })

  it('reports a malformed entry and an unknown event type by id, skips them, and says how many', async () => {
    const { namespace, b } = fresh('replay-malformed')
    const [order] = await seedOrders(b, 1)
    const unknown = await b.redis.xadd(
      b.keys.partitions[0]!.events,
      '*',
      ...['order', order!, 'version', '4', 'type', 'bakery/order-eaten', 'event', '{}'],
      ...['recordedAt', new Date().toISOString(), 'trace', '{}'],
    )
    const malformed = await b.redis.xadd(
      b.keys.partitions[0]!.events,
      '*',
      'order',
      order!,
      'version',
      'x',
    )

    const replay = captureIo(namespace)
    assert.equal(await runReplay([], replay), 0)
    assert.match(replay.err(), new RegExp(`${unknown}.*unknown event type "bakery/order-eaten"`))
    assert.match(replay.err(), new RegExp(`stream entry ${malformed} is malformed`))
    assert.match(replay.out(), /2 entries skipped/)
    assert.equal((await b.views.get(order!))?.view.status, 'finished')

    const verify = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], verify), 1, 'skipped entries fail --verify')
    assert.match(verify.out(), /0 differences, 2 entries skipped/)

    const events = captureIo(namespace)
    assert.equal(await runEvents(['--json'], events), 0)
    assert.equal(events.out().trimEnd().split('\n').length, 3)
    assert.match(events.err(), new RegExp(`${unknown}[\\s\\S]*${malformed}`))
    assert.match(events.err(), /3 events shown, 2 malformed entries skipped/)
  })

  it('never lets a read regress or 404 while it swaps the read model under live traffic', async () => {
    const { namespace, b } = fresh('replay-live')
    const reader = open(namespace)
    await seedOrders(b, 150, 2)
    const deps = { ...reader, now: () => new Date(), newOrderKey: randomOrderKey }
    const rank = { pending: 1, baking: 2, finished: 3 } as const

    // Orders whose placement has been acknowledged, and the furthest status a read has shown.
    const known = new Map<OrderKey, number>()
    for (const order of await b.redis.keys(`${b.keys.orderStream('')}*`))
      known.set(order.slice(b.keys.orderStream('').length) as OrderKey, 0)
    const problems: string[] = []
    let running = true

    let n = 0
    const writer = (async () => {
      while (running) {
        const order = randomOrderKey()
        // Every third event is left to the read path's stream fold, as with a lagging projector.
        await record(b, lifecycle.placed(order), n % 3 !== 0)
        known.set(order, 0)
        const older = [...known.keys()][n % known.size]!
        const version = await b.store.version(older)
        if (version === 1) await record(b, lifecycle.started(older), n % 3 !== 1)
        else if (version === 2) await record(b, lifecycle.baked(older), n % 3 !== 2)
        n += 1
      }
      return n
    })()

    let reads = 0
    const readerLoop = (async () => {
      while (running) {
        for (const [order, best] of [...known]) {
          const view = await findOrder(deps, order)
          reads += 1
          if (!view) problems.push(`${order}: 404 after its 202`)
          else if (rank[view.status] < best) problems.push(`${order}: went back to ${view.status}`)
          else known.set(order, Math.max(best, rank[view.status]))
          if (!running) break
        }
      }
    })()

    // Several swaps, each overlapping with some writes.
    for (let i = 0; i < 5 || n < 100; i++) {
      const io = captureIo(namespace, { env: {} })
      assert.equal(await runReplay(['--batch', '50'], io), 0, io.err())
    }
    running = false
    const written = await writer
    await readerLoop

    assert.deepEqual(problems, [])
    assert.ok(written >= 100 && reads > 500, `only ${written} writes and ${reads} reads overlapped`)
    // Once the traffic stopped, a verify finds the model equal to the log, lagging views aside.
    for (const order of known.keys()) {
      const folded = foldView(await b.store.read(order))
      if (folded) await b.views.save(order, folded)
    }
    const verify = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], verify), 0, verify.out())
  })

  it('runs as a real process: plain progress lines when piped, exit code 1 on a difference', async () => {
    const { namespace, b } = fresh('replay-process')
    const [order] = await seedOrders(b, 4)
    const bakeryBin = join(ROOT, 'bin', 'bakery.js')
    const env = { ...process.env, REDIS_URL, BAKERY_NAMESPACE: namespace }
    const run = promisify(execFile)

    const replay = await run(process.execPath, [bakeryBin, 'replay'], { env })
    assert.match(replay.stdout, /^Replayed 12 events \(4 orders\)/)
    assert.match(replay.stderr, /^replay: 12 events in \d+ ms$/m)
    assert.ok(!replay.stderr.includes('\r'), 'no terminal control characters in a pipe')

    await b.redis.hset(b.keys.view(order!, 1), 'customer', 'bart')
    const verify = await run(process.execPath, [bakeryBin, 'replay', '--verify'], { env }).then(
      () => assert.fail('--verify should exit 1'),
      (error: { code: number; stdout: string }) => error,
    )
    assert.equal(verify.code, 1)
    assert.match(
      verify.stdout,
      new RegExp(`^${order}: customer is "bart", the log says "homer"$`, 'm'),
    )
  })
})
