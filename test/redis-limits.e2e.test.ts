import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import {
  dropNamespace,
  postOrder,
  REDIS_URL,
  uniqueNamespace,
  waitFor,
  orderKeysIn,
} from './support'
import { startLoneReception, type LoneReception } from './support/lone-reception'
import { OwnRedis } from './support/own-redis'

const placeOrder = (base: string) =>
  fetch(`${base}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ customer: 'homer', pastry: 'donut' }),
  })

/** A refusal as the reception gives it: 503 problem+json, Retry-After, and what it says. */
async function refusal(response: Response): Promise<string> {
  assert.equal(response.status, 503)
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/)
  assert.equal(response.headers.get('retry-after'), '1')
  return ((await response.json()) as { detail: string }).detail
}

describe('limits on what Redis holds', () => {
  const cleanups: (() => Promise<unknown>)[] = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined)
  })
  const start = async (namespace: string, env: Record<string, string>): Promise<LoneReception> => {
    const reception = await startLoneReception(namespace, env)
    cleanups.push(() => reception.role.stop('SIGKILL'))
    return reception
  }

  it('answers 503 while the outbox is deeper than OUTBOX_MAX_DEPTH, and takes orders again once it drains', async () => {
    const namespace = uniqueNamespace('outbox-depth')
    cleanups.push(() => dropNamespace(namespace))
    const redis = new Redis(REDIS_URL)
    cleanups.push(async () => redis.disconnect())
    const outbox = keys(namespace).partitions[0]!.outbox
    // No broker: nothing leaves the outbox.
    const { base } = await start(namespace, { OUTBOX_MAX_DEPTH: '5' })

    const statuses: number[] = []
    let refused: Response | undefined
    for (let i = 0; i < 20 && !refused; i++) {
      const response = await placeOrder(base)
      statuses.push(response.status)
      if (response.status !== 202) refused = response
      else await response.body?.cancel()
    }
    assert.ok(refused, `never refused: ${statuses.join(' ')}`)
    assert.match(await refusal(refused), /backlog/)
    const accepted = statuses.filter((status) => status === 202).length
    assert.ok(accepted >= 1, 'orders were taken until the limit')
    const depth = await redis.xlen(outbox)
    const perOrder = depth / accepted
    assert.ok(depth >= 5 && depth < 5 + perOrder, `outbox depth ${depth}`)
    assert.equal(
      (await orderKeysIn(redis, namespace)).length,
      accepted,
      'nothing refused was stored',
    )
    // Reads go on.
    assert.equal((await fetch(`${base}/readyz`)).status, 200)

    // The relay caught up (here: the test empties the outbox): orders are taken again.
    await redis.xtrim(outbox, 'MAXLEN', 0)
    assert.equal((await placeOrder(base)).status, 202)
  })

  it('a full Redis (maxmemory, noeviction) refuses writes: 503, and nothing stored is evicted', async () => {
    const redisServer = await OwnRedis.start([
      '--appendonly',
      'no',
      '--maxmemory-policy',
      'noeviction',
    ])
    cleanups.push(() => redisServer.remove())
    const redis = new Redis(redisServer.url)
    cleanups.push(async () => redis.disconnect())
    const namespace = uniqueNamespace('full')
    const { base } = await start(namespace, { REDIS_URL: redisServer.url })
    const before = await Promise.all(Array.from({ length: 20 }, () => postOrder(base)))

    // Full: what it holds is over maxmemory (as after a flood of orders, in a smaller room).
    const used = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1])
    await redis.config('SET', 'maxmemory', String(Math.floor(used / 2)))
    assert.match(await refusal(await placeOrder(base)), /try again/)
    // Everything stored is still there, and readable.
    assert.deepEqual((await orderKeysIn(redis, namespace)).sort(), [...before].sort())
    for (const orderKey of before.slice(0, 3))
      assert.equal((await fetch(`${base}/orders/${orderKey}`)).status, 200)

    // Room again: orders are taken again.
    await redis.config('SET', 'maxmemory', '0')
    await waitFor('an order to be taken again', async () => (await placeOrder(base)).status === 202)
  })
})
