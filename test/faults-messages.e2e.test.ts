import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import amqp, { type ChannelModel, type ConfirmChannel, type GetMessage } from 'amqplib'
import { Redis } from 'ioredis'
import {
  BakingStarted,
  OrderBaked,
  OrderPlaced,
  PlaceOrder,
  timestamp,
  type OrderKey,
} from '../src/messages'
import { orderEventStore, type OrderEventStore } from '../src/wiring'
import { keys, type Keys } from '../src/platform/keys'
import { FailureHeaders } from '../src/platform/transport'
import { queues, topology } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import {
  dropNamespace,
  startRole,
  waitFor,
  type RoleProcess,
  isolatedBakery,
  REDIS_URL,
} from './support'
import { QUEUE_TYPES, type QueueType } from './support'
import { withScripts } from '../src/platform/scripts'

const RETRY = { RETRY_MAX_ATTEMPTS: '4', RETRY_INITIAL_DELAY_MS: '100', RETRY_MAX_DELAY_MS: '400' }

/**
 * What the real baker and projector do with messages that cannot be handled: poison is
 * dead-lettered at once with its reason and does not hold up what comes behind it; a transient
 * failure is retried with backoff, then dead-lettered; data that can never work is not retried.
 */
const unhandled = (queueType: QueueType) => () => {
  const redis = withScripts(new Redis(REDIS_URL))
  let bakery: Awaited<ReturnType<typeof isolatedBakery>>
  let k: Keys
  let store: OrderEventStore
  let connection: ChannelModel
  let channel: ConfirmChannel
  const roles: RoleProcess[] = []
  /** Dead letters seen so far, by message id. */
  const dead = new Map<string, GetMessage>()

  before(async () => {
    bakery = await isolatedBakery(`poison-${queueType}`, { ...RETRY, QUEUE_TYPE: queueType })
    k = keys(bakery.namespace)
    store = orderEventStore(redis, k)
    roles.push(
      ...(await Promise.all([startRole('baker', bakery.env), startRole('projector', bakery.env)])),
    )
    connection = await amqp.connect(bakery.vhost.url)
    channel = await connection.createConfirmChannel()
  })

  after(async () => {
    await connection?.close().catch(() => undefined)
    await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(bakery.namespace)
    await bakery.vhost.drop()
    redis.disconnect()
  })

  /** Publishes as any @node-ts/bus service would: to the exchange named after the message. */
  const publish = async (
    exchange: string,
    content: Buffer | object,
    headers: Record<string, unknown> = { attributes: '{}', stickyAttributes: '{}' },
  ) => {
    const messageId = randomUUID()
    const body = Buffer.isBuffer(content) ? content : Buffer.from(JSON.stringify(content))
    channel.publish(exchange, '', body, { messageId, persistent: true, headers })
    await channel.waitForConfirms()
    return messageId
  }

  const deadLetter = (messageId: string, timeoutMs = 5000) =>
    waitFor(
      `dead letter ${messageId}`,
      async () => {
        for (;;) {
          const message = await channel.get(topology.deadLetterQueue, { noAck: true })
          if (!message) break
          dead.set(String(message.properties.messageId), message)
        }
        return dead.get(messageId)
      },
      { timeoutMs, intervalMs: 20 },
    )

  /** An order that exists only in the event store: the bus has not heard of it. */
  const placedOrder = async (): Promise<OrderPlaced> => {
    const event = OrderPlaced.create({
      orderKey: randomOrderKey(),
      customer: 'homer',
      pastry: 'donut',
      orderTime: timestamp(new Date()),
    })
    await store.append(event.orderKey, 0, [event], [])
    return event
  }

  /** An order baked in the event store, its OrderBaked not yet delivered to the projector. */
  const bakedOrder = async (): Promise<OrderBaked> => {
    const { orderKey } = await placedOrder()
    const now = timestamp(new Date())
    await store.append(orderKey, 1, [BakingStarted.create({ orderKey, startedAt: now })], [])
    const event = baked(orderKey)
    await store.append(orderKey, 2, [event], [])
    return event
  }

  const baked = (orderKey: OrderKey) =>
    OrderBaked.create({
      orderKey,
      bakedAt: timestamp(new Date()),
      bakeMs: 42 as OrderBaked['bakeMs'],
      mistake: false,
    })

  const orderKey = randomOrderKey()
  const poisons = (name: string, whole: object) => [
    { kind: 'not JSON', content: Buffer.from('{"$name": '), reason: /not JSON/ },
    {
      kind: 'not UTF-8',
      content: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
      reason: /not valid UTF-8/,
    },
    {
      kind: 'unknown $name',
      content: { $name: 'bakery/eat-order', $version: 1, orderKey },
      reason: /bakery\/eat-order is not a message that/,
    },
    {
      kind: 'wrong schema',
      content: { $name: name, $version: 1, orderKey: '../../etc/passwd' },
      reason: new RegExp(`not a valid ${name}`),
    },
    {
      kind: 'wrong $version',
      content: { $name: name, $version: 2, orderKey },
      reason: new RegExp(`not a valid ${name}`),
    },
    {
      kind: 'broken attributes header',
      content: whole,
      headers: { attributes: '{"traceparent": ', stickyAttributes: '{}' },
      reason: /attributes header is not JSON/,
    },
    {
      kind: 'attributes header of the wrong shape',
      content: whole,
      headers: { attributes: '{"nested": {"a": 1}}', stickyAttributes: '{}' },
      reason: /attributes header is not an object of strings/,
    },
  ]

  // A message that would be handled, but for its headers.
  const order = { orderKey, customer: 'homer', pastry: 'donut', orderTime: timestamp(new Date()) }
  const cases = [
    {
      queue: queues.baker,
      exchange: PlaceOrder.$name,
      whole: PlaceOrder.create(order),
      // Behind the poison, a real order: handled means the baker started (and finished) it.
      valid: async () => {
        const placed = await placedOrder()
        return {
          message: PlaceOrder.create({ ...placed }),
          handled: async () => (await store.version(placed.orderKey)) >= 2,
        }
      },
    },
    {
      queue: queues.projector,
      exchange: OrderBaked.$name,
      whole: baked(orderKey),
      valid: async () => {
        const event = await bakedOrder()
        return {
          message: event,
          handled: async () => (await redis.hget(k.view(event.orderKey), 'status')) === 'finished',
        }
      },
    },
  ]

  for (const { queue, exchange, whole, valid } of cases) {
    for (const poison of poisons(exchange, whole)) {
      it(`${queue}: ${poison.kind} is dead-lettered at once, the message behind it is handled within a second`, async () => {
        const next = await valid()
        const poisonId = await publish(exchange, poison.content, poison.headers)
        const sent = Date.now()
        await publish(exchange, next.message)
        await waitFor('the valid message to be handled', next.handled, {
          timeoutMs: 1000,
          intervalMs: 10,
        })
        const elapsed = Date.now() - sent
        const letter = await deadLetter(poisonId)
        const headers = letter.properties.headers ?? {}
        assert.match(String(headers[FailureHeaders.reason]), poison.reason)
        assert.equal(headers[FailureHeaders.queue], queue)
        assert.equal(headers[FailureHeaders.attempt], 1, 'never retried')
        assert.ok(!Number.isNaN(Date.parse(String(headers[FailureHeaders.failedAt]))))
        assert.ok(elapsed < 1000, `valid message handled ${elapsed} ms after the poison`)
      })
    }
  }

  it('invalid data (an order that does not exist) is dead-lettered at once by the baker and the projector', async () => {
    const ghost = randomOrderKey()
    const order = {
      orderKey: ghost,
      customer: 'nobody',
      pastry: 'air',
      orderTime: timestamp(new Date()),
    }
    const [command, event] = await Promise.all([
      publish(PlaceOrder.$name, PlaceOrder.create(order)),
      publish(OrderBaked.$name, baked(ghost)),
    ])
    const [baker, projector] = await Promise.all([deadLetter(command), deadLetter(event)])
    assert.match(
      String(baker.properties.headers?.[FailureHeaders.reason]),
      /PermanentFailure: there is no such order/,
    )
    assert.equal(baker.properties.headers?.[FailureHeaders.attempt], 1)
    assert.match(
      String(projector.properties.headers?.[FailureHeaders.reason]),
      /PermanentFailure: .* has no history/,
    )
    assert.equal(projector.properties.headers?.[FailureHeaders.attempt], 1)
    assert.equal(await store.version(ghost), 0, 'nothing was written for it')
  })

  /** A real, transient fault: the order's read-model key holds a string, so HSET fails WRONGTYPE. */
  const jamReadModel = async (orderKey: OrderKey) => redis.set(k.view(orderKey), 'jammed')
  const retriesOf = (role: RoleProcess, orderKey: string) =>
    role
      .output()
      .split('\n')
      .filter((line) => line.includes('will retry') && line.includes(orderKey))
      .map((line) => JSON.parse(line) as { attempt: number; retryInMs: number })

  it('a transient failure is retried with doubling delays, then dead-lettered with the error', async () => {
    const placed = await bakedOrder()
    await jamReadModel(placed.orderKey)
    const sent = Date.now()
    const id = await publish(OrderBaked.$name, placed)
    const letter = await deadLetter(id, 10_000)
    const took = Date.now() - sent
    const headers = letter.properties.headers ?? {}
    assert.match(String(headers[FailureHeaders.reason]), /^gave up after 4 attempts: .*WRONGTYPE/)
    assert.equal(headers[FailureHeaders.attempt], 4)
    assert.equal(headers[FailureHeaders.queue], queues.projector)
    const projector = roles[1]!
    const retries = await waitFor('the retries to be logged', () => {
      const found = retriesOf(projector, placed.orderKey)
      return found.length === 3 && found
    })
    assert.deepEqual(
      retries.map((r) => [r.attempt, r.retryInMs]),
      [
        [1, 100],
        [2, 200],
        [3, 400],
      ],
    )
    assert.ok(took >= 700, `the backoff was waited (${took} ms)`)
  })

  it('a transient failure that clears up is retried until it succeeds', async () => {
    const placed = await bakedOrder()
    await jamReadModel(placed.orderKey)
    await publish(OrderBaked.$name, placed)
    const projector = roles[1]!
    await waitFor('a first failure', () => retriesOf(projector, placed.orderKey).length >= 1, {
      intervalMs: 10,
    })
    await redis.del(k.view(placed.orderKey))
    await waitFor(
      'the read model to have the order',
      async () => (await redis.hget(k.view(placed.orderKey), 'status')) === 'finished',
    )
  })
}

for (const type of QUEUE_TYPES)
  describe(`messages that cannot be handled, ${type} queues`, unhandled(type))
