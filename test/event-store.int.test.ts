import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { OrderBaked, OrderPlaced, PlaceOrder, type OrderKey, type Timestamp } from '../src/messages'
import { orderEventStore } from '../src/wiring'
import { StoreUnavailable, VersionConflict } from '../src/platform/errors'
import { asStoreUnavailable } from '../src/platform/redis'
import { keys } from '../src/platform/keys'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { withScripts } from '../src/platform/scripts'

const namespace = uniqueNamespace('store')
const redis = withScripts(new Redis(REDIS_URL))
const store = orderEventStore(redis, keys(namespace))
const placed = (orderKey: OrderKey) =>
  OrderPlaced.create({
    orderKey,
    customer: 'homer',
    pastry: 'donut',
    orderTime: '2026-11-27T10:00:00.000Z' as Timestamp,
  })
const baked = (orderKey: OrderKey, at: string) =>
  OrderBaked.create({
    orderKey,
    bakedAt: at as Timestamp,
    bakeMs: 42 as OrderBaked['bakeMs'],
    mistake: false,
  })
const view = { customer: 'homer', pastry: 'donut', orderTime: '2026-11-27T10:00:00.000Z' }

describe('event store', () => {
  after(async () => {
    await dropNamespace(namespace)
    redis.disconnect()
  })

  it('appends to the order stream, the global log, the outbox and the view in one step', async () => {
    const orderKey = randomOrderKey()
    const outboxBefore = await redis.xlen(keys(namespace).partitions[0]!.outbox)
    const version = await store.append(
      orderKey,
      0,
      [placed(orderKey)],
      [{ kind: 'command', message: PlaceOrder.create(placed(orderKey)) }],
      { view: { ...view, status: 'pending' } },
    )
    assert.equal(version, 1)
    assert.deepEqual(await redis.hgetall(keys(namespace).view(orderKey)), {
      ...view,
      status: 'pending',
      version: '1',
    })
    const [entry] = await store.read(orderKey)
    assert.deepEqual(entry?.event, placed(orderKey))
    assert.equal(entry?.version, 1)
    const global = await redis.xrange(keys(namespace).partitions[0]!.events, '-', '+')
    assert.ok(global.some(([, fields]) => fields.includes(orderKey)))
    assert.equal(await redis.xlen(keys(namespace).partitions[0]!.outbox), outboxBefore + 1)
  })

  it('lets exactly one of two concurrent appends at the same version win', async () => {
    const orderKey = randomOrderKey()
    await store.append(orderKey, 0, [placed(orderKey)], [])
    const outboxBefore = await redis.xlen(keys(namespace).partitions[0]!.outbox)
    const results = await Promise.allSettled([
      store.append(
        orderKey,
        1,
        [baked(orderKey, '2026-11-27T10:00:01.000Z')],
        [{ kind: 'event', message: baked(orderKey, '2026-11-27T10:00:01.000Z') }],
        { view: { ...view, status: 'finished' } },
      ),
      store.append(
        orderKey,
        1,
        [baked(orderKey, '2026-11-27T10:00:02.000Z')],
        [{ kind: 'event', message: baked(orderKey, '2026-11-27T10:00:02.000Z') }],
        { view: { ...view, status: 'finished' } },
      ),
    ])
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r) => r.status === 'rejected')
    assert.equal(won.length, 1)
    assert.equal(lost.length, 1)
    assert.ok((lost[0] as PromiseRejectedResult).reason instanceof VersionConflict)
    assert.equal(
      (await store.read(orderKey)).length,
      2,
      'the loser wrote nothing to the order stream',
    )
    assert.equal(
      await redis.xlen(keys(namespace).partitions[0]!.outbox),
      outboxBefore + 1,
      'nor to the outbox',
    )
    assert.equal(
      await redis.hget(keys(namespace).view(orderKey), 'version'),
      '2',
      'the view was written once, at the winner’s version',
    )
  })

  it('never moves a stored view backwards', async () => {
    const orderKey = randomOrderKey()
    // A view already ahead of the stream (as a replay may leave it): the append leaves it alone.
    await redis.hset(keys(namespace).view(orderKey), { ...view, status: 'finished', version: '3' })
    await store.append(orderKey, 0, [placed(orderKey)], [], {
      view: { ...view, status: 'pending' },
    })
    assert.equal(await redis.hget(keys(namespace).view(orderKey), 'status'), 'finished')
  })

  it('refuses to create an order stream that exists', async () => {
    const orderKey = randomOrderKey()
    await store.append(orderKey, 0, [placed(orderKey)], [])
    await assert.rejects(store.append(orderKey, 0, [placed(orderKey)], []), VersionConflict)
  })
})

describe('a connection that closes with a write in flight', () => {
  it('is a StoreUnavailable (503, a retry), not a failure of the write itself', async () => {
    const client = new Redis(REDIS_URL)
    const killer = new Redis(REDIS_URL)
    const key = `${uniqueNamespace('cut')}:written`
    try {
      const id = await client.client('ID')
      // A write answered, then a WAIT the server holds: the connection is cut before its reply,
      // as when a master dies between an append and its WAIT.
      const replies = client.pipeline().set(key, '1').blpop(`${key}:wait`, 5).exec()
      await waitFor('the WAIT to be held', async () =>
        String(await killer.call('CLIENT', 'LIST', 'ID', String(id))).includes('cmd=blpop'),
      )
      await killer.call('CLIENT', 'KILL', 'ID', String(id))
      const [, [error] = []] = (await replies) ?? []
      assert.ok(error instanceof Error, 'the pipeline reports the cut')
      assert.match(error.message, /aborted|closed/i)
      assert.ok(
        asStoreUnavailable(error) instanceof StoreUnavailable,
        `${error.name}: ${error.message}`,
      )
    } finally {
      await killer.del(key)
      client.disconnect()
      killer.disconnect()
    }
  })
})
