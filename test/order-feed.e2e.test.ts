import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { BakingStarted, OrderPlaced, timestamp, type OrderKey } from '../src/messages'
import { orderEventStore, type OrderEventStore } from '../src/wiring'
import { keys } from '../src/platform/keys'
import { randomOrderKey } from '../src/reception/orders'
import { uniqueNamespace, waitFor, rssKb } from './support'
import { startLoneReception, type LoneReception } from './support/lone-reception'
import { OwnRedis } from './support/own-redis'
import { SseClient } from './support/sse'
import { withScripts } from '../src/platform/scripts'

const STREAMS = 5000

/** `INFO commandstats` as calls per command, e.g. `{ xread: 3 }`. */
async function commandCalls(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info('commandstats')
  const calls: Record<string, number> = {}
  for (const match of info.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm))
    calls[match[1]!] = Number(match[2])
  return calls
}

/** The clients blocked in a command right now, by command name. */
async function blockedClients(redis: Redis): Promise<string[]> {
  const list = (await redis.client('LIST')) as string
  return list
    .split('\n')
    .map((line) => new Map(line.split(' ').map((pair) => pair.split('=', 2) as [string, string])))
    .filter((client) => /b/.test(client.get('flags') ?? ''))
    .map((client) => String(client.get('cmd')))
}

/** Opens `count` update streams, `concurrency` at a time; each has had its first message. */
async function openStreams(
  base: string,
  orders: readonly string[],
  concurrency = 100,
): Promise<SseClient[]> {
  const clients: SseClient[] = []
  let next = 0
  const worker = async () => {
    while (next < orders.length) {
      const order = orders[next++]!
      const client = await SseClient.open(`${base}/orders/${order}/updates`)
      assert.equal(client.status, 200, client.text)
      clients.push(client)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  await waitFor('every stream to show its order', () =>
    clients.every((client) => client.messages.length === 1),
  )
  return clients
}

/**
 * Live updates follow the global log once per reception and fan out in memory: the number of
 * orders watched costs Redis nothing per order. Against a Redis of the test's own, so that its
 * command counts are the reception's alone.
 */
describe('update streams at scale', () => {
  const namespace = uniqueNamespace('feed')
  let redisServer: OwnRedis
  let redis: Redis
  let store: OrderEventStore
  let reception: LoneReception
  const orders: OrderKey[] = []

  before(async () => {
    redisServer = await OwnRedis.start(['--appendonly', 'no'])
    redis = new Redis(redisServer.url)
    store = orderEventStore(withScripts(redis), keys(namespace))
    reception = await startLoneReception(namespace, {
      REDIS_URL: redisServer.url,
      SSE_MAX_STREAMS_PER_CLIENT: String(STREAMS),
      MAX_REQUESTS_IN_FLIGHT: String(STREAMS),
    })
    // Pending orders, written as the reception would (no baker: they stay pending).
    const orderTime = timestamp(new Date())
    await Promise.all(
      Array.from({ length: STREAMS }, async (_, n) => {
        const orderKey = randomOrderKey()
        orders.push(orderKey)
        const order = { orderKey, customer: `customer ${n}`, pastry: 'la bombe', orderTime }
        await store.append(orderKey, 0, [OrderPlaced.create(order)], [])
      }),
    )
  })

  after(async () => {
    await reception?.role.stop('SIGKILL')
    redis?.disconnect()
    await redisServer?.remove()
  })

  it(`${STREAMS} open streams cost one blocking read and bounded memory; each change reaches its watchers`, async () => {
    const rssBefore = await rssKb(reception.role.child.pid!)
    await redis.config('RESETSTAT')
    const opening = Date.now()
    const clients = await openStreams(reception.base, orders)
    const openedInMs = Date.now() - opening
    const calls = await commandCalls(redis)
    const blocked = await blockedClients(redis)
    const rssMb = (await rssKb(reception.role.child.pid!)) / 1024
    const summary = `${STREAMS} streams opened in ${openedInMs} ms; blocked: ${JSON.stringify(blocked)}; calls: ${JSON.stringify(calls)}; RSS ${Math.round(rssBefore / 1024)} -> ${Math.round(rssMb)} MB`
    console.log(summary)
    assert.equal(
      blocked.filter((cmd) => cmd === 'xread').length,
      1,
      `one blocking read: ${summary}`,
    )
    assert.ok((calls.xread ?? 0) <= 10, `XREAD was not reissued per watcher: ${summary}`)
    assert.equal(calls['client|unblock'] ?? 0, 0, summary)
    const perStreamKb = ((rssMb * 1024 - rssBefore) / STREAMS).toFixed(0)
    assert.ok(Number(perStreamKb) < 64, `${perStreamKb} kB of RSS per stream: ${summary}`)

    // Fifty orders start baking: their watchers, and only theirs, see it.
    const baking = orders.slice(0, 50)
    await Promise.all(
      baking.map((orderKey) =>
        store.append(
          orderKey,
          1,
          [BakingStarted.create({ orderKey, startedAt: timestamp(new Date()) })],
          [],
        ),
      ),
    )
    await waitFor('the fifty watchers to see baking', () =>
      clients.slice(0, 50).every((client) => client.messages.length === 2),
    )
    for (const client of clients.slice(0, 50))
      assert.equal(JSON.parse(client.messages[1]!.data).status, 'baking')
    assert.ok(clients.slice(50).every((client) => client.messages.length === 1))
    for (const client of clients) client.close()
  })

  it('caps the streams of one client address (429), and how long a stream stays open', async () => {
    const capped = await startLoneReception(namespace, {
      REDIS_URL: redisServer.url,
      SSE_MAX_STREAMS_PER_CLIENT: '3',
      SSE_MAX_STREAM_SECONDS: '2',
    })
    const open = (n: number, localAddress: string) =>
      SseClient.open(`${capped.base}/orders/${orders[n]}/updates`, {}, { localAddress })
    try {
      const three = await Promise.all([0, 1, 2].map((n) => open(n, '127.0.0.2')))
      assert.deepEqual(
        three.map((client) => client.status),
        [200, 200, 200],
      )
      const fourth = await open(3, '127.0.0.2')
      await waitFor('the refusal body', () => fourth.ended)
      assert.equal(fourth.status, 429)
      assert.match(String(fourth.headers['content-type']), /^application\/problem\+json/)
      assert.equal(fourth.headers['retry-after'], '1')
      assert.match((JSON.parse(fourth.text) as { detail: string }).detail, /at most 3 update/)
      const elsewhere = await open(3, '127.0.0.3')
      assert.equal(elsewhere.status, 200, 'another address has its own allowance')

      // Each stream ends after SSE_MAX_STREAM_SECONDS; the slots are free again.
      const opened = Date.now()
      await waitFor('the streams to reach their lifetime', () => three.every((c) => c.ended), {
        timeoutMs: 10_000,
      })
      const lived = Date.now() - opened
      assert.ok(lived >= 1500 && lived < 6000, `ended after ${lived} ms`)
      const again = await open(4, '127.0.0.2')
      assert.equal(again.status, 200)
      for (const client of [elsewhere, again]) client.close()
    } finally {
      await capped.role.stop('SIGKILL')
    }
  })
})
