import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp from 'amqplib'
import pino from 'pino'
import { Redis } from 'ioredis'
import {
  BakingStarted,
  OrderBaked,
  PlaceOrder,
  type OrderEvent,
  type OrderKey,
  type Timestamp,
} from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { handlerFor, startService, type Service } from '../src/platform/service'
import { bakery, queues, topology } from '../src/wiring'
import { FailureHeaders } from '../src/platform/transport'
import { projectOrder } from '../src/projections/projector'
import { ViewStore } from '../src/projections/view-store'
import { placeOrder, randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { QUEUE_TYPES, type QueueType } from './support'
import { withScripts } from '../src/platform/scripts'

const logger = pino({ level: 'silent' })
const order = (orderKey: OrderKey) => ({
  orderKey,
  customer: 'homer',
  pastry: 'donut',
  orderTime: '2026-11-27T10:00:00.000Z' as Timestamp,
})
const baked = (orderKey: OrderKey) =>
  OrderBaked.create({
    orderKey,
    bakedAt: '2026-11-27T10:00:01.000Z' as Timestamp,
    bakeMs: 42 as OrderBaked['bakeMs'],
    mistake: false,
  })

const theBus = (queueType: QueueType) => () => {
  let vhost: Awaited<ReturnType<typeof createVhost>>
  const namespace = uniqueNamespace('bus')
  const services: Service<OrderEvent>[] = []
  const config = () =>
    loadConfig({
      AMQP_URL: vhost.url,
      REDIS_URL,
      BAKERY_NAMESPACE: namespace,
      QUEUE_TYPE: queueType,
      RETRY_MAX_ATTEMPTS: '3',
      RETRY_INITIAL_DELAY_MS: '20',
    })
  const start = async (
    options: Omit<Parameters<typeof startService>[0], 'config' | 'logger' | 'domain'>,
  ) => {
    const service = await startService({ config: config(), logger, domain: bakery, ...options })
    services.push(service)
    assert.ok(await service.transport.waitUntilReady(10_000), 'connected to RabbitMQ')
    return service
  }

  /** A service that handles PlaceOrder from the baker's queue with `handle`. */
  const startBaker = (handle: (command: PlaceOrder) => Promise<void>, relay = false) =>
    start({
      relay,
      consume: { queue: queues.baker, handlers: () => [handlerFor(PlaceOrder, handle)] },
    })

  before(async () => {
    vhost = await createVhost('bus')
  })
  // Consumers of one test must not compete for the next test's messages.
  afterEach(async () => {
    for (const service of services.splice(0)) await service.stop()
  })
  after(async () => {
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('keeps a command sent before any baker ran, and delivers it once one starts', async () => {
    const sender = await start({ relay: false })
    const orderKey = randomOrderKey()
    await sender.bus.send(PlaceOrder.create(order(orderKey)))
    const received: PlaceOrder[] = []
    await startBaker(async (c) => void received.push(c))
    await waitFor('the early command', () => received.some((c) => c.orderKey === orderKey))
  })

  it('dead-letters a message it cannot decode, with the reason, and handles the next one', async () => {
    const handled: string[] = []
    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createConfirmChannel()
    await start({
      relay: false,
      consume: {
        queue: queues.projector,
        handlers: () => [handlerFor(OrderBaked, async (e) => void handled.push(e.orderKey))],
      },
    })
    const poisonKey = randomOrderKey()
    const validKey = randomOrderKey()
    channel.publish(
      OrderBaked.$name,
      '',
      Buffer.from(JSON.stringify({ $name: OrderBaked.$name, $version: 1, orderKey: poisonKey })),
      { messageId: 'poison-1' },
    )
    channel.publish(OrderBaked.$name, '', Buffer.from(JSON.stringify(baked(validKey))))
    await channel.waitForConfirms()
    await waitFor('the valid message', () => handled.includes(validKey))
    const dead = await waitFor('the dead letter', async () => {
      const message = await channel.get(topology.deadLetterQueue, { noAck: true })
      return message && message.properties.messageId === 'poison-1' ? message : undefined
    })
    assert.match(
      String(dead.properties.headers?.[FailureHeaders.reason]),
      /not a valid bakery\/order-baked.*bakedAt/,
    )
    assert.equal(dead.properties.headers?.[FailureHeaders.queue], queues.projector)
    assert.ok(!handled.includes(poisonKey))
    await connection.close()
  })

  it('dead-letters a message its queue takes but no handler was registered for', async () => {
    // bus-core would log and drop it; the transport's dispatch says so in a dead letter.
    const connection = await amqp.connect(vhost.url)
    try {
      const channel = await connection.createConfirmChannel()
      await start({ relay: false, consume: { queue: queues.projector, handlers: () => [] } })
      const orderKey = randomOrderKey()
      channel.publish(OrderBaked.$name, '', Buffer.from(JSON.stringify(baked(orderKey))), {
        messageId: 'unhandled-1',
      })
      await channel.waitForConfirms()
      const dead = await waitFor('the dead letter', async () => {
        const message = await channel.get(topology.deadLetterQueue, { noAck: true })
        return message && message.properties.messageId === 'unhandled-1' ? message : undefined
      })
      assert.match(
        String(dead.properties.headers?.[FailureHeaders.reason]),
        /PoisonMessage: no handler for bakery\/order-baked/,
      )
    } finally {
      await connection.close()
    }
  })

  it('retries a handler that fails, then succeeds', async () => {
    let calls = 0
    const done: string[] = []
    const sender = await start({ relay: false })
    await startBaker(async (c) => {
      calls += 1
      if (calls < 3) throw new Error('the oven is cold')
      done.push(c.orderKey)
    })
    const orderKey = randomOrderKey()
    await sender.bus.send(PlaceOrder.create(order(orderKey)))
    await waitFor('the third attempt', () => done.includes(orderKey))
    assert.equal(calls, 3)
  })

  it('acknowledges deliveries that finish out of order, never one still in hand', async () => {
    // Handlers finish out of order; acks go out in batches (a `multiple` ack for a settled run
    // from the oldest delivery, single acks behind one still in hand). The broker's own counts say
    // which deliveries it considers done.
    const gates = new Map<string, () => void>()
    const everyGate: (() => void)[] = []
    let handled = 0
    const sender = await start({ relay: false })
    await startBaker(async (c) => {
      await new Promise<void>((resolve) => {
        gates.set(c.orderKey, resolve)
        everyGate.push(resolve)
      })
      handled += 1
    })
    try {
      const orderKeys = Array.from({ length: 10 }, () => randomOrderKey())
      for (const orderKey of orderKeys) await sender.bus.send(PlaceOrder.create(order(orderKey)))
      await waitFor('every command in hand', () => orderKeys.every((key) => gates.has(key)))
      const counts = () => vhost.queue(queues.baker)
      // A quorum queue's counts are published on its tick (seconds), a classic one's at once.
      await waitFor('the broker to count ten in hand', async () => {
        const { ready, unacknowledged } = await counts()
        return ready === 0 && unacknowledged === 10
      })

      // Everything but the fifth: a run of four before it, five settled behind it.
      const held = orderKeys[4]!
      for (const key of orderKeys) if (key !== held) gates.get(key)!()
      await waitFor('all but the held one acknowledged', async () => {
        const { unacknowledged } = await counts()
        assert.notEqual(unacknowledged, 0, 'an ack covered the delivery still in hand')
        return unacknowledged === 1
      })
      assert.deepEqual(await counts(), { ready: 0, unacknowledged: 1 })

      gates.get(held)!()
      await waitFor('the held one acknowledged', async () => (await counts()).unacknowledged === 0)
      assert.equal(handled, 10, 'no delivery was handed out twice')
    } finally {
      // However the test ends, no handler is left waiting (the consumer could not stop).
      everyGate.forEach((open) => open())
    }
  })

  it('relays again after the outbox and its consumer group were deleted', async () => {
    const received: string[] = []
    const service = await startBaker(async (c) => void received.push(c.orderKey), true)
    const redis = withScripts(new Redis(REDIS_URL))
    try {
      const deps = {
        store: service.store,
        views: new ViewStore(redis, service.keys),
        now: () => new Date(),
        newOrderKey: randomOrderKey,
      }
      const first = await placeOrder(deps, { customer: 'homer', pastry: 'donut' })
      await waitFor('the first command', () => received.includes(first))
      await redis.del(service.keys.partitions[0]!.outbox)
      const second = await placeOrder(deps, { customer: 'marge', pastry: 'eclair' })
      await waitFor('the command placed after the outbox was deleted', () =>
        received.includes(second),
      )
    } finally {
      redis.disconnect()
    }
  })

  it('leaves the read model unchanged when an event is delivered again', async () => {
    const redis = withScripts(new Redis(REDIS_URL))
    const service = await start({ relay: false })
    const views = new ViewStore(redis, service.keys)
    const deps = {
      store: service.store,
      views,
      now: () => new Date('2026-11-27T10:00:00.000Z'),
      newOrderKey: randomOrderKey,
    }
    const orderKey = await placeOrder(deps, { customer: 'homer', pastry: 'donut' })
    const startedAt = '2026-11-27T10:00:00.500Z' as Timestamp
    await service.store.append(orderKey, 1, [BakingStarted.create({ orderKey, startedAt })], [])
    await service.store.append(orderKey, 2, [baked(orderKey)], [])
    await projectOrder(deps, baked(orderKey))
    const first = await redis.hgetall(service.keys.view(orderKey))
    await projectOrder(deps, baked(orderKey))
    assert.deepEqual(await redis.hgetall(service.keys.view(orderKey)), first)
    assert.equal(first.status, 'finished')
    assert.equal(first.version, '3')
    redis.disconnect()
  })
}

for (const type of QUEUE_TYPES) describe(`the bus over RabbitMQ, ${type} queues`, theBus(type))
