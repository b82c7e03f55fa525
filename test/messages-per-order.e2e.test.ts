import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp, { type ChannelModel } from 'amqplib'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import { topology } from '../src/wiring'
import {
  createVhost,
  dropNamespace,
  isolatedEnv,
  postOrder,
  REDIS_URL,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
  receptionUrl,
} from './support'

const ORDERS = 25

/**
 * What crosses RabbitMQ for an order: PlaceOrder and OrderBaked, nothing else. A queue of the
 * test's own, bound to every exchange in Bakery's vhost, receives a copy of each message the
 * roles publish.
 */
describe('messages on the bus per order', () => {
  const namespace = uniqueNamespace('per-order')
  const redis = new Redis(REDIS_URL)
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let connection: ChannelModel
  let base = ''

  before(async () => {
    vhost = await createVhost('per-order')
    const env = isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0' })
    roles.push(
      ...(await Promise.all([
        startRole('reception', env),
        startRole('baker', env),
        startRole('projector', env),
      ])),
    )
    base = receptionUrl(roles[0]!)
    connection = await amqp.connect(vhost.url)
  })

  after(async () => {
    await connection?.close().catch(() => undefined)
    const codes = await Promise.all(roles.map((role) => role.stop()))
    redis.disconnect()
    await dropNamespace(namespace)
    await vhost.drop()
    assert.deepEqual(codes, [0, 0, 0])
  })

  it(`${ORDERS} orders put 2 × ${ORDERS} messages on the bus: PlaceOrder and OrderBaked`, async () => {
    // Every exchange the roles declared (all but the broker's own), each bound to the count queue.
    const exchanges = await vhost.exchanges()
    assert.deepEqual(
      exchanges.sort(),
      topology.queues.flatMap((q) => q.messages.map((m) => m.$name)).sort(),
      'one exchange per bus message',
    )
    assert.deepEqual(exchanges, ['bakery/order-baked', 'bakery/place-order'])
    const channel = await connection.createChannel()
    const { queue } = await channel.assertQueue('', { exclusive: true })
    for (const exchange of exchanges) await channel.bindQueue(queue, exchange, '')

    const orders = await Promise.all(
      Array.from({ length: ORDERS }, (_, i) =>
        postOrder(base, { customer: `c${i}`, pastry: 'pie' }),
      ),
    )
    await waitFor('every order to be finished', async () => {
      const statuses = await Promise.all(
        orders.map(async (key) => {
          const response = await fetch(`${base}/orders/${key}`)
          return ((await response.json()) as { status: string }).status
        }),
      )
      return statuses.every((status) => status === 'finished')
    })
    // An outbox entry is deleted once the broker confirmed its publish, and a confirm means the
    // message was routed: with the outbox empty, every message of these orders is in the queue.
    await waitFor(
      'the outbox to be empty',
      async () => (await redis.xlen(keys(namespace).partitions[0]!.outbox)) === 0,
    )

    const counted = new Map<string, number>()
    for (;;) {
      const message = await channel.get(queue, { noAck: true })
      if (!message) break
      const name = message.fields.exchange
      counted.set(name, (counted.get(name) ?? 0) + 1)
    }
    assert.deepEqual(Object.fromEntries(counted), {
      'bakery/place-order': ORDERS,
      'bakery/order-baked': ORDERS,
    })
  })
})
