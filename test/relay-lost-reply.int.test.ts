import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp from 'amqplib'
import pino from 'pino'
import { Redis } from 'ioredis'
import { PlaceOrder, type Timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { keys } from '../src/platform/keys'
import { startService, type Service } from '../src/platform/service'
import { bakery, queues } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { TcpProxy } from './support/tcp-proxy'

/**
 * A relay's read of new outbox entries is answered, and the answer is lost with its connection.
 * Redis has handed the entries to this relay (they are in its pending list); ioredis sends the
 * read again once reconnected, and that read only sees what came after. The relay must go back
 * to its own pending entries then, not wait for a takeover meant for dead relays.
 */
describe('a relay whose read of the outbox lost its reply', () => {
  const namespace = uniqueNamespace('relay-lost-reply')
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let proxy: TcpProxy
  let redis: Redis
  let relay: Service | undefined

  before(async () => {
    vhost = await createVhost('relay-lost-reply')
    proxy = await TcpProxy.start(Number(new URL(REDIS_URL).port || 6379))
    redis = new Redis(REDIS_URL)
    relay = await startService({
      domain: bakery,
      // Long enough that a takeover of its own entries cannot be what delivers them here.
      config: loadConfig({
        AMQP_URL: vhost.url,
        REDIS_URL: proxy.url,
        BAKERY_NAMESPACE: namespace,
        RELAY_CLAIM_AFTER_MS: '600000',
      }),
      logger: pino({ level: 'silent' }),
      relay: true,
    })
    assert.ok(await relay.transport.waitUntilReady(10_000))
  })

  after(async () => {
    await relay?.stop()
    await proxy?.close()
    redis?.disconnect()
    await dropNamespace(namespace)
    await vhost?.drop()
  })

  it('publishes the entries that reply carried, at once', async () => {
    const cut = proxy.cutReplyTo('xreadgroup')
    // The armed read has gone out and is blocked in Redis: the entry reaches it, and its reply is
    // the one cut.
    await waitFor('the next outbox read to be sent', () => !proxy.armed)
    const order = randomOrderKey()
    const command = PlaceOrder.create({
      orderKey: order,
      customer: 'homer',
      pastry: 'la bombe',
      orderTime: new Date().toISOString() as Timestamp,
    })
    const k = keys(namespace)
    await redis.xadd(
      k.partitions[0]!.outbox,
      '*',
      ...['order', order, 'kind', 'command', 'message', JSON.stringify(command), 'trace', '{}'],
    )
    await cut
    const connection = await amqp.connect(vhost.url)
    try {
      const channel = await connection.createChannel()
      await waitFor(
        'the PlaceOrder on the baker queue',
        async () => (await channel.checkQueue(queues.baker)).messageCount === 1,
        { timeoutMs: 10_000 },
      )
    } finally {
      await connection.close()
    }
    await waitFor(
      'the outbox to be empty',
      async () => (await redis.xlen(k.partitions[0]!.outbox)) === 0,
    )
  })
})
