import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp from 'amqplib'
import pino from 'pino'
import { bake } from '../src/baker/baker'
import { evolve, initialState } from '../src/baker/order'
import { PlaceOrder, type OrderEvent } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { handlerFor, startService, type Service } from '../src/platform/service'
import { bakery, queues } from '../src/wiring'
import { ViewStore } from '../src/projections/view-store'
import { placeOrder, randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'

/**
 * A publish the broker cannot route (its queue or binding deleted behind Bakery's back) is
 * confirmed and dropped unless it is mandatory. The outbox entry must stay until the message
 * really reaches a queue. A deleted queue also cancels its consumer, which must declare the
 * topology again and consume the new queue, or nothing would be baked from then on.
 */
describe('a publish the broker cannot route', () => {
  const namespace = uniqueNamespace('unroutable')
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let baker: Service<OrderEvent>

  before(async () => {
    vhost = await createVhost('unroutable')
    baker = await startService({
      domain: bakery,
      config: loadConfig({ AMQP_URL: vhost.url, REDIS_URL, BAKERY_NAMESPACE: namespace }),
      logger: pino({ level: 'silent' }),
      relay: true,
      consume: {
        queue: queues.baker,
        handlers: ({ store }) => [
          handlerFor(PlaceOrder, async (command) => {
            const deps = { store, bakeTimeScale: 0, now: () => new Date(), random: () => 0.5 }
            await bake(deps, command)
          }),
        ],
      },
    })
    assert.ok(await baker.transport.waitUntilReady(10_000))
  })

  after(async () => {
    await baker?.stop()
    await dropNamespace(namespace)
    await vhost.drop()
  })

  /** Does something to the broker's topology behind the service's back, on a channel of its own. */
  const behindItsBack = async (change: (channel: amqp.Channel) => Promise<unknown>) => {
    const connection = await amqp.connect(vhost.url)
    try {
      await change(await connection.createChannel())
    } finally {
      await connection.close()
    }
  }

  /** Places an order through the outbox and waits for it to be baked and the outbox to empty. */
  const placeAndBake = async () => {
    const deps = {
      store: baker.store,
      views: new ViewStore(baker.redis, baker.keys),
      now: () => new Date(),
      newOrderKey: randomOrderKey,
    }
    const orderKey = await placeOrder(deps, { customer: 'homer', pastry: 'la bombe' })
    const status = async () =>
      (await baker.store.read(orderKey)).map((e) => e.event).reduce(evolve, initialState).status
    await waitFor('the order to be finished', async () => (await status()) === 'finished', {
      timeoutMs: 10_000,
    })
    await waitFor(
      'the outbox to be empty',
      async () => (await baker.redis.xlen(baker.keys.partitions[0]!.outbox)) === 0,
    )
  }

  it('keeps the order in the outbox until the topology is declared again, then bakes it', async () => {
    await behindItsBack((channel) => channel.unbindQueue(queues.baker, PlaceOrder.$name, ''))
    await placeAndBake()
  })

  it('a consumer whose queue is deleted declares it again and consumes it: the next order is baked', async () => {
    await behindItsBack((channel) => channel.deleteQueue(queues.baker))
    await placeAndBake()
    await behindItsBack(async (channel) => {
      const { consumerCount } = await channel.checkQueue(queues.baker)
      assert.equal(consumerCount, 1, 'the baker consumes the declared queue again')
    })
  })
})
