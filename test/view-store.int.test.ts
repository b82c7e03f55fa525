import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { foldView } from '../src/projections/order-view'
import { projectOrder } from '../src/projections/projector'
import { findOrder, randomOrderKey } from '../src/reception/orders'
import { dropNamespace, uniqueNamespace } from './support'
import { bakery, lifecycle, record } from './support/replay'

const namespace = uniqueNamespace('view-store')
const b = bakery(namespace)
const deps = { ...b, now: () => new Date(), newOrderKey: randomOrderKey }
const versions = (events: readonly { version: number }[]) => events.map((e) => e.version)

after(async () => {
  b.close()
  await dropNamespace(namespace)
})

describe('a view and the events of the log after it', () => {
  it('is nothing for an order that does not exist', async () => {
    assert.deepEqual(await b.views.withTail(randomOrderKey()), { stored: undefined, behind: [] })
  })

  it('is the whole history while there is no view, and only what the view misses after', async () => {
    const order = randomOrderKey()
    await record(b, lifecycle.placed(order), false)
    await record(b, lifecycle.started(order), false)
    let read = await b.views.withTail(order)
    assert.equal(read.stored, undefined)
    assert.deepEqual(versions(read.behind), [1, 2])
    assert.deepEqual(
      read.behind.map((e) => e.event),
      (await b.store.read(order)).map((e) => e.event),
    )

    await projectOrder(b, lifecycle.placed(order))
    await record(b, lifecycle.baked(order), false)
    read = await b.views.withTail(order)
    assert.equal(read.stored?.version, 2, 'one projection folded both events')
    assert.equal(read.stored?.view.status, 'baking')
    assert.deepEqual(versions(read.behind), [3])

    await projectOrder(b, lifecycle.baked(order))
    read = await b.views.withTail(order)
    assert.deepEqual(read.stored, foldView(await b.store.read(order)))
    assert.deepEqual(read.behind, [])
  })

  it('is the whole history when the stored hash is not a view, so a GET answers the log', async () => {
    const order = randomOrderKey()
    await record(b, lifecycle.placed(order))
    await record(b, lifecycle.started(order))
    await b.redis.hset(b.keys.view(order), 'status', 'burnt')

    const read = await b.views.withTail(order)
    assert.equal(read.stored, undefined)
    assert.deepEqual(versions(read.behind), [1, 2])
    assert.deepEqual(await findOrder(deps, order), foldView(await b.store.read(order))?.view)
  })

  it('lets a GET read its own write before the projector ran', async () => {
    const order = randomOrderKey()
    await record(b, lifecycle.placed(order, 'marge', 'pie'), false)
    const found = await findOrder(deps, order)
    assert.equal(found?.status, 'pending')
    assert.equal(found?.customer, 'marge')
    assert.equal(await b.redis.exists(b.keys.view(order)), 0, 'the GET wrote nothing')
  })
})
