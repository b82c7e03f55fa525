import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import pino from 'pino'
import { BakingStarted, OrderPlaced, timestamp, type OrderKey } from '../src/messages'
import { orderEventStore, type StoredOrderEvent } from '../src/wiring'
import { keys } from '../src/platform/keys'
import { OrderFeed } from '../src/reception/order-feed'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { lifecycle } from './support/replay'
import { withScripts } from '../src/platform/scripts'

const namespace = uniqueNamespace('order-feed')
const commands = withScripts(new Redis(REDIS_URL))
const store = orderEventStore(commands, keys(namespace))
/** A started feed with a reader connection of its own. */
function startFeed(): OrderFeed {
  const feed = new OrderFeed({
    reader: withScripts(new Redis(REDIS_URL)),
    log: store.keys.partitions[0]!.events,
    store,
    logger: pino({ level: 'silent' }),
    blockMs: 200,
  })
  feed.start()
  return feed
}
const feed = startFeed()

after(async () => {
  await feed.stop()
  commands.disconnect()
  await dropNamespace(namespace)
})

const place = (orderKey: OrderKey) =>
  store.append(
    orderKey,
    0,
    [
      OrderPlaced.create({
        orderKey,
        customer: 'marge',
        pastry: 'éclair',
        orderTime: timestamp(new Date()),
      }),
    ],
    [],
  )
const start = (orderKey: OrderKey) =>
  store.append(
    orderKey,
    1,
    [BakingStarted.create({ orderKey, startedAt: timestamp(new Date()) })],
    [],
  )

/** A subscriber that keeps the versions it was handed, in the batches they came in. */
function watcher() {
  const batches: number[][] = []
  let ended = false
  return {
    batches,
    get ended() {
      return ended
    },
    subscriber: {
      deliver: (events: readonly StoredOrderEvent[]) => batches.push(events.map((e) => e.version)),
      end: () => (ended = true),
    },
  }
}

describe('the order feed', () => {
  it('catches a new watcher up on what came after its read, then follows the log, each version once', async () => {
    const order = randomOrderKey()
    await place(order)
    // The watcher read nothing yet (version 0): event 1 came "between its read and the subscribe".
    const w = watcher()
    const unsubscribe = feed.subscribe(order, 0, w.subscriber)
    await waitFor('the catch-up', () => w.batches.flat().length === 1)
    await start(order)
    await waitFor('the next event, through the log', () => w.batches.flat().length === 2)
    assert.deepEqual(w.batches.flat(), [1, 2])
    unsubscribe()
    // Once the feed hands the next event to a watcher that stayed, the one that left has none.
    const stayed = watcher()
    feed.subscribe(order, 2, stayed.subscriber)
    await store.append(order, 2, [lifecycle.baked(order)], [])
    await waitFor('the last event, through the log', () => stayed.batches.flat().includes(3))
    assert.deepEqual(w.batches.flat(), [1, 2], 'nothing after unsubscribing')
  })

  it("hands an order's events only to its own watchers", async () => {
    const [a, b] = [randomOrderKey(), randomOrderKey()]
    await Promise.all([place(a), place(b)])
    const [wa, wb] = [watcher(), watcher()]
    const stops = [feed.subscribe(a, 1, wa.subscriber), feed.subscribe(b, 1, wb.subscriber)]
    await start(a)
    await waitFor('a to start', () => wa.batches.flat().includes(2))
    assert.deepEqual(wb.batches, [], 'b saw nothing')
    for (const stop of stops) stop()
  })

  it('ends every watcher when it stops', async () => {
    const order = randomOrderKey()
    await place(order)
    const other = startFeed()
    const w = watcher()
    other.subscribe(order, 1, w.subscriber)
    await other.stop()
    assert.ok(w.ended)
  })
})
