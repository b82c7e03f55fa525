import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import inject, { type InjectOptions, type Response } from 'light-my-request'
import { Redis } from 'ioredis'
import pino from 'pino'
import { createApp } from '../src/reception/app'
import { randomOrderKey } from '../src/reception/orders'
import { orderEventStore } from '../src/wiring'
import { keys } from '../src/platform/keys'
import { ViewStore } from '../src/projections/view-store'
import { BODY_LIMIT_BYTES } from '../src/reception/json-body'
import { dropNamespace, REDIS_URL, uniqueNamespace } from './support'
import { receptionExtras } from './support/reception'
import { withScripts } from '../src/platform/scripts'

const namespace = uniqueNamespace('api')
const redis = withScripts(new Redis(REDIS_URL))
const store = orderEventStore(redis, keys(namespace))
const app = createApp({
  store,
  views: new ViewStore(redis, keys(namespace)),
  now: () => new Date('2026-11-27T10:00:00.000Z'),
  newOrderKey: randomOrderKey,
  logger: pino({ level: 'silent' }),
  readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
  ...receptionExtras(redis, redis, namespace),
})
const handler = app.callback()

const request = (options: InjectOptions): Promise<Response> => inject(handler, options)
const post = (
  payload: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
) => request({ method: 'POST', url: '/orders', payload, headers })

/** Every client mistake: a 4xx problem+json whose detail says what to fix. */
function assertProblem(
  response: Response,
  status: number,
  detail: RegExp,
): Record<string, unknown> {
  assert.equal(response.statusCode, status, response.body)
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/)
  const body = response.json<Record<string, unknown>>()
  assert.equal(body.status, status)
  assert.equal(typeof body.type, 'string')
  assert.equal(typeof body.title, 'string')
  assert.match(String(body.detail), detail)
  return body
}

describe('reception API', () => {
  before(async () => redis.ping())
  after(async () => {
    await dropNamespace(namespace)
    redis.disconnect()
  })

  it('GET / says the reception is attended', async () => {
    const response = await request({ method: 'GET', url: '/' })
    assert.equal(response.statusCode, 200)
    assert.deepEqual(response.json(), { message: 'reception is attended' })
  })

  it('POST /orders answers 202 with a random key and a Location, and GET shows it pending at once', async () => {
    const response = await post(
      JSON.stringify({ customer: ' homer ', pastry: 'la bombe', status: 'finished', extra: 1 }),
    )
    assert.equal(response.statusCode, 202)
    const { orderKey } = response.json<{ orderKey: string }>()
    assert.match(orderKey, /^[0-9a-f]{32}$/)
    assert.equal(response.headers.location, `/orders/${orderKey}`)
    const second = (await post(JSON.stringify({ customer: 'homer', pastry: 'la bombe' }))).json<{
      orderKey: string
    }>()
    assert.notEqual(second.orderKey, orderKey, 'the same order twice gets two keys')

    const got = await request({ method: 'GET', url: `/orders/${orderKey}` })
    assert.equal(got.statusCode, 200)
    assert.deepEqual(got.json(), {
      pastry: 'la bombe',
      customer: 'homer',
      orderTime: '2026-11-27T10:00:00.000Z',
      status: 'pending',
    })
    const [event] = await store.read(orderKey)
    assert.deepEqual(Object.keys(event!.event).sort(), [
      '$name',
      '$version',
      'customer',
      'orderKey',
      'orderTime',
      'pastry',
    ])
  })

  it('accepts application/json with a UTF-8 charset and +json types', async () => {
    const body = JSON.stringify({ customer: 'marge', pastry: 'éclair' })
    assert.equal(
      (await post(body, { 'content-type': 'application/json; charset=utf-8' })).statusCode,
      202,
    )
    assert.equal(
      (await post(body, { 'content-type': 'application/vnd.bakery+json' })).statusCode,
      202,
    )
  })

  it('404 for an unknown key, a malformed key and an unknown route', async () => {
    assertProblem(
      await request({ method: 'GET', url: `/orders/${randomOrderKey()}` }),
      404,
      /no order with key/,
    )
    assertProblem(
      await request({ method: 'GET', url: '/orders/..%2F..%2Fetc%2Fpasswd' }),
      404,
      /32 lowercase hex/,
    )
    assertProblem(await request({ method: 'GET', url: '/cakes' }), 404, /nothing at \/cakes/)
  })

  it('405 with Allow for a wrong method', async () => {
    const response = await request({ method: 'DELETE', url: '/orders' })
    const body = assertProblem(response, 405, /DELETE is not allowed/)
    assert.match(String(response.headers.allow), /POST/)
    assert.equal(body.title, 'Method Not Allowed')
    assertProblem(await request({ method: 'PUT', url: '/' }), 405, /use/)
  })

  const invalid: [string, string, RegExp][] = [
    ['not JSON', '{"customer": ', /not valid JSON/],
    ['an array', '[]', /must be a JSON object/],
    ['null', 'null', /must be a JSON object/],
    ['a string', '"homer"', /must be a JSON object/],
  ]
  for (const [what, body, detail] of invalid)
    it(`400 for a body that is ${what}`, async () => {
      assertProblem(await post(body), 400, detail)
    })

  const fieldCases: [string, unknown, string, RegExp][] = [
    ['missing customer', { pastry: 'donut' }, '/customer', /required/],
    ['missing pastry', { customer: 'homer' }, '/pastry', /required/],
    ['mistyped customer', { customer: 42, pastry: 'donut' }, '/customer', /string/],
    ['empty pastry', { customer: 'homer', pastry: '' }, '/pastry', /empty or blank/],
    ['blank customer', { customer: '   ', pastry: 'donut' }, '/customer', /empty or blank/],
    ['over-long pastry', { customer: 'homer', pastry: 'x'.repeat(101) }, '/pastry', /at most 100/],
    ['control characters', { customer: 'ho\u0007mer', pastry: 'donut' }, '/customer', /control/],
    ['a bidirectional override', { customer: 'homer', pastry: 'don\u202eut' }, '/pastry', /bidi/],
    ['a bidirectional isolate', { customer: '\u2067homer', pastry: 'donut' }, '/customer', /bidi/],
  ]
  for (const [what, body, path, message] of fieldCases)
    it(`400 naming the field for ${what}`, async () => {
      const problem = assertProblem(await post(JSON.stringify(body)), 400, new RegExp(path))
      const errors = problem.errors as { path: string; message: string }[]
      assert.ok(
        errors.some((e) => e.path === path && message.test(e.message)),
        JSON.stringify(errors),
      )
    })

  it('X-Content-Type-Options: nosniff on every response, errors included', async () => {
    const placed = await post(JSON.stringify({ customer: 'homer', pastry: 'donut' }))
    const responses = [
      placed,
      await request({ method: 'GET', url: '/', headers: { accept: 'application/json' } }),
      await request({ method: 'GET', url: '/', headers: { accept: 'text/html' } }),
      await request({ method: 'GET', url: '/storefront.js' }),
      await request({ method: 'GET', url: '/openapi.json' }),
      await request({ method: 'GET', url: '/metrics' }),
      await request({ method: 'GET', url: '/readyz' }),
      await request({ method: 'GET', url: '/nowhere' }),
      await request({ method: 'DELETE', url: '/orders' }),
      await request({ method: 'GET', url: `/orders/${randomOrderKey()}` }),
      await post('{'),
    ]
    for (const response of responses)
      assert.equal(
        response.headers['x-content-type-options'],
        'nosniff',
        `${response.statusCode} ${String(response.headers['content-type'])}`,
      )
  })

  it('400 for invalid UTF-8', async () => {
    assertProblem(await post(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), 400, /UTF-8/)
  })

  it('413 for a body over the limit', async () => {
    const huge = JSON.stringify({ customer: 'homer', pastry: 'x'.repeat(BODY_LIMIT_BYTES) })
    assertProblem(await post(huge), 413, new RegExp(`${BODY_LIMIT_BYTES} bytes`))
  })

  it('415 for a wrong or missing content type, or another charset', async () => {
    const body = JSON.stringify({ customer: 'homer', pastry: 'donut' })
    assertProblem(await post(body, { 'content-type': 'text/plain' }), 415, /application\/json/)
    assertProblem(await post(body, {}), 415, /application\/json/)
    assertProblem(
      await post(body, { 'content-type': 'application/json; charset=latin1' }),
      415,
      /UTF-8/,
    )
  })

  it('503, not 500, when Redis is away, and the body says nothing internal', async () => {
    const down = withScripts(
      new Redis('redis://127.0.0.1:1', {
        lazyConnect: true,
        enableOfflineQueue: false,
        retryStrategy: () => null,
      }),
    )
    const downApp = createApp({
      store: orderEventStore(down, keys(namespace)),
      views: new ViewStore(down, keys(namespace)),
      now: () => new Date(),
      newOrderKey: randomOrderKey,
      logger: pino({ level: 'silent' }),
      readiness: () => ({ ready: false, redis: 'down', rabbitmq: 'up' }),
      ...receptionExtras(down, down, namespace),
    })
    const response = await inject(downApp.callback(), {
      method: 'POST',
      url: '/orders',
      payload: JSON.stringify({ customer: 'homer', pastry: 'donut' }),
      headers: { 'content-type': 'application/json' },
    })
    const body = assertProblem(response, 503, /try again/)
    assert.equal(response.headers['retry-after'], '1')
    assert.doesNotMatch(JSON.stringify(body), /ECONNREFUSED|Stream|stack/i)
    const ready = await inject(downApp.callback(), { method: 'GET', url: '/readyz' })
    assert.equal(ready.statusCode, 503)
    down.disconnect()
  })

  it('500, not 503, when a stored entry does not decode: retrying would not help, and it is logged', async () => {
    const lines: Record<string, unknown>[] = []
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
    )
    const strictApp = createApp({
      store,
      views: new ViewStore(redis, keys(namespace)),
      now: () => new Date(),
      newOrderKey: randomOrderKey,
      logger,
      readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
      ...receptionExtras(redis, redis, namespace),
    })
    const orderKey = randomOrderKey()
    await redis.xadd(keys(namespace).orderStream(orderKey), '*', 'not', 'an event')
    const response = await inject(strictApp.callback(), {
      method: 'GET',
      url: `/orders/${orderKey}`,
    })
    const body = assertProblem(response, 500, /on our side/)
    assert.equal(response.headers['retry-after'], undefined, 'nothing says to try again')
    assert.doesNotMatch(JSON.stringify(body), /malformed|stream entry|stack/i)
    const logged = lines.find((line) => line.msg === 'request failed')
    assert.ok(logged, 'the failure is logged')
    assert.match(JSON.stringify(logged.err), /MalformedEntry/)
    assert.equal(logged.path, `/orders/${orderKey}`)
  })
})
