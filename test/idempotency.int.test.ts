import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import inject, { type Response } from 'light-my-request'
import { Redis } from 'ioredis'
import pino from 'pino'
import { keys } from '../src/platform/keys'
import { orderEventStore } from '../src/wiring'
import { ViewStore } from '../src/projections/view-store'
import { createApp } from '../src/reception/app'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { receptionExtras } from './support/reception'
import { withScripts } from '../src/platform/scripts'

const TTL_SECONDS = 60

describe('POST /orders with an Idempotency-Key', () => {
  const namespace = uniqueNamespace('idem')
  const redis = withScripts(new Redis(REDIS_URL))
  const ns = keys(namespace)
  const appWith = (idempotencyTtlSeconds: number) =>
    createApp({
      store: orderEventStore(redis, ns),
      views: new ViewStore(redis, ns),
      now: () => new Date(),
      newOrderKey: randomOrderKey,
      logger: pino({ level: 'silent' }),
      readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
      ...receptionExtras(redis, redis, namespace, { idempotencyTtlSeconds }),
    }).callback()
  const handler = appWith(TTL_SECONDS)

  const post = (body: unknown, idempotencyKey?: string, app = handler) =>
    inject(app, {
      method: 'POST',
      url: '/orders',
      payload: JSON.stringify(body),
      headers: {
        'content-type': 'application/json',
        ...(idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }),
      },
    })
  const orderKeyOf = (response: Response) => response.json<{ orderKey: string }>().orderKey
  /** Orders placed so far: OrderPlaced entries in the global log. */
  const placedCount = async () => redis.xlen(ns.partitions[0]!.events)

  before(async () => redis.ping())
  after(async () => {
    await dropNamespace(namespace)
    redis.disconnect()
  })

  it('ten identical requests at once place one order and all answer its key', async () => {
    const before_ = await placedCount()
    const outboxBefore = await redis.xlen(ns.partitions[0]!.outbox)
    const responses = await Promise.all(
      Array.from({ length: 10 }, () => post({ customer: 'homer', pastry: 'donut' }, 'retry-me-1')),
    )
    assert.deepEqual(
      responses.map((r) => r.statusCode),
      Array.from({ length: 10 }, () => 202),
    )
    const orderKeys = new Set(responses.map(orderKeyOf))
    assert.equal(orderKeys.size, 1, 'every retry answers the same orderKey')
    const [orderKey] = orderKeys
    assert.equal(await placedCount(), before_ + 1, 'one OrderPlaced in the log')
    assert.equal(await redis.xlen(ns.orderStream(orderKey!)), 1)
    assert.equal(await redis.xlen(ns.partitions[0]!.outbox), outboxBefore + 1, 'one PlaceOrder')
    assert.equal(
      await redis.hget(ns.view(orderKey!), 'status'),
      'pending',
      'one view, written with it',
    )
    assert.equal(
      responses.filter((r) => r.headers['idempotent-replayed'] === 'true').length,
      9,
      'the nine that placed nothing say they are replays',
    )
    for (const response of responses) assert.equal(response.headers.location, `/orders/${orderKey}`)
  })

  it('a retry that differs only in surrounding spaces is the same order', async () => {
    const first = await post({ customer: 'marge', pastry: 'éclair' }, 'retry-me-2')
    const retry = await post({ customer: ' marge ', pastry: 'éclair ' }, 'retry-me-2')
    assert.equal(orderKeyOf(retry), orderKeyOf(first))
  })

  it('the same key with another body is 422 problem+json, and writes nothing', async () => {
    const first = await post({ customer: 'bart', pastry: 'donut' }, 'retry-me-3')
    assert.equal(first.statusCode, 202)
    const before_ = await placedCount()
    for (const other of [
      { customer: 'bart', pastry: 'croissant' },
      { customer: 'lisa', pastry: 'donut' },
    ]) {
      const response = await post(other, 'retry-me-3')
      assert.equal(response.statusCode, 422, response.body)
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/)
      const problem = response.json<Record<string, unknown>>()
      assert.equal(problem.status, 422)
      assert.equal(problem.type, '/problems/idempotency-key-reused')
      assert.match(String(problem.detail), /another order/)
    }
    assert.equal(await placedCount(), before_)
  })

  it('without a key, or with another key, the same body places a new order', async () => {
    const body = { customer: 'maggie', pastry: 'pacifier cake' }
    const keyed = orderKeyOf(await post(body, 'retry-me-4'))
    const other = orderKeyOf(await post(body, 'retry-me-5'))
    const unkeyed = orderKeyOf(await post(body))
    assert.equal(new Set([keyed, other, unkeyed]).size, 3)
  })

  it('400 for a malformed key, before anything is written', async () => {
    const before_ = await placedCount()
    for (const bad of ['', 'x'.repeat(256), 'clé', 'two words']) {
      const response = await post({ customer: 'ned', pastry: 'donut' }, bad)
      assert.equal(response.statusCode, 400, JSON.stringify(bad))
      assert.match(response.json<{ detail: string }>().detail, /Idempotency-Key/)
    }
    assert.equal(await placedCount(), before_)
  })

  it('a key is remembered for IDEMPOTENCY_TTL_SECONDS, then a retry places a new order', async () => {
    const first = orderKeyOf(await post({ customer: 'moe', pastry: 'pretzel' }, 'retry-me-6'))
    const ttls = await Promise.all(
      (await redis.keys(ns.partitions[0]!.idempotency('*'))).map((key) => redis.ttl(key)),
    )
    assert.ok(ttls.length > 0)
    for (const ttl of ttls) assert.ok(ttl > 0 && ttl <= TTL_SECONDS, `TTL ${ttl}`)

    const shortLived = appWith(1)
    const body = { customer: 'moe', pastry: 'strudel' }
    const remembered = orderKeyOf(await post(body, 'retry-me-7', shortLived))
    assert.notEqual(remembered, first)
    const renewed = await waitFor(
      'the key to expire',
      async () => {
        const response = await post(body, 'retry-me-7', shortLived)
        return response.headers['idempotent-replayed'] === undefined && orderKeyOf(response)
      },
      { timeoutMs: 5000, intervalMs: 200 },
    )
    assert.notEqual(renewed, remembered, 'after the TTL the same key places a new order')
  })
})
