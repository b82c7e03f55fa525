import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import inject, { type InjectOptions, type Response } from 'light-my-request'
import * as t from 'io-ts'
import { Redis } from 'ioredis'
import pino from 'pino'
import {
  BakingStarted,
  OrderBaked,
  OrderPlaced,
  timestamp,
  NonNegativeInt,
  type OrderKey,
} from '../src/messages'
import { orderEventStore } from '../src/wiring'
import { keys } from '../src/platform/keys'
import { ViewStore } from '../src/projections/view-store'
import { createApp } from '../src/reception/app'
import { openApiDocument } from '../src/reception/contract'
import { BODY_LIMIT_BYTES } from '../src/reception/json-body'
import { toJsonSchema } from '../src/reception/json-schema'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace } from './support'
import { OpenApiSchemas, pointer } from './support/openapi-schemas'
import { receptionExtras } from './support/reception'
import { withScripts } from '../src/platform/scripts'

type Doc = Record<string, unknown>
const doc = openApiDocument() as Doc
const paths = doc.paths as Record<string, Record<string, Doc>>
const schemas = new OpenApiSchemas(doc)

/** Everything at `key` anywhere in the document. */
function collect(node: unknown, key: string, found: unknown[] = []): unknown[] {
  if (Array.isArray(node)) node.forEach((item) => collect(item, key, found))
  else if (typeof node === 'object' && node !== null)
    for (const [name, value] of Object.entries(node)) {
      if (name === key) found.push(value)
      collect(value, key, found)
    }
  return found
}

describe('the OpenAPI document', () => {
  it('is a well-formed OpenAPI 3.1 document', () => {
    assert.match(String(doc.openapi), /^3\.1\.\d+$/)
    const info = doc.info as Doc
    assert.equal(typeof info.title, 'string')
    assert.equal(typeof info.version, 'string')
    for (const ref of collect(doc, '$ref')) assert.match(String(ref), /^#\/components\/schemas\//)
    for (const name of Object.keys((doc.components as Doc).schemas as Doc)) {
      assert.match(name, /^[A-Za-z0-9._-]+$/)
      schemas.compile(pointer('components', 'schemas', name))
    }
    const operationIds = new Set<string>()
    for (const [path, item] of Object.entries(paths)) {
      assert.match(path, /^\//)
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort()
      for (const [method, operation] of Object.entries(item)) {
        assert.ok(['get', 'post', 'put', 'delete', 'patch'].includes(method), method)
        const id = String(operation.operationId)
        assert.ok(!operationIds.has(id), `operationId ${id} is unique`)
        operationIds.add(id)
        assert.equal(typeof operation.summary, 'string')
        const parameters = (operation.parameters ?? []) as Doc[]
        const inPath = parameters.filter((p) => p.in === 'path')
        assert.deepEqual(inPath.map((p) => p.name).sort(), templated, `${path} path parameters`)
        parameters.forEach((parameter, i) => {
          assert.ok(['path', 'query', 'header'].includes(String(parameter.in)))
          if (parameter.in === 'path') assert.equal(parameter.required, true)
          schemas.compile(pointer('paths', path, method, 'parameters', String(i), 'schema'))
        })
        const body = operation.requestBody as Doc | undefined
        if (body)
          for (const type of Object.keys(body.content as Doc))
            schemas.compile(
              pointer('paths', path, method, 'requestBody', 'content', type, 'schema'),
            )
        const responses = Object.entries(operation.responses as Record<string, Doc>)
        assert.ok(responses.length > 0)
        for (const [status, response] of responses) {
          assert.match(status, /^[1-5]\d\d$/)
          assert.equal(typeof response.description, 'string')
          for (const type of Object.keys(response.content ?? {}))
            schemas.compile(
              pointer('paths', path, method, 'responses', status, 'content', type, 'schema'),
            )
        }
      }
    }
  })

  it('is generated from the codecs, and refuses a codec it cannot describe', () => {
    assert.throws(
      () => toJsonSchema(t.tuple([t.string, t.number]), { closed: true }),
      /no JSON Schema/,
    )
    const view = ((doc.components as Doc).schemas as Doc).OrderView as Doc
    assert.deepEqual(Object.keys(view.properties as Doc).sort(), [
      'customer',
      'orderTime',
      'pastry',
      'status',
    ])
    assert.equal(view.additionalProperties, false)
  })
})

describe('what the reception answers matches the OpenAPI document', () => {
  const namespace = uniqueNamespace('openapi')
  const redis = withScripts(new Redis(REDIS_URL))
  const ns = keys(namespace)
  const store = orderEventStore(redis, ns)
  const base = {
    store,
    views: new ViewStore(redis, ns),
    now: () => new Date(),
    newOrderKey: randomOrderKey,
    logger: pino({ level: 'silent' }),
  }
  const up = createApp({
    ...base,
    readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
    ...receptionExtras(redis, redis, namespace),
  })
  const down = withScripts(
    new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    }),
  )
  down.on('error', () => undefined)
  const downApp = createApp({
    ...base,
    store: orderEventStore(down, ns),
    views: new ViewStore(down, ns),
    readiness: () => ({ ready: false, redis: 'down', rabbitmq: 'up' }),
    ...receptionExtras(down, down, namespace),
  })
  // A client address that has used up its update streams (a cap of 0 stands for that).
  const cappedApp = createApp({
    ...base,
    readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
    ...receptionExtras(redis, redis, namespace, { maxStreamsPerClient: 0 }),
  })
  const finished = randomOrderKey()
  const pending = randomOrderKey()
  const json = { 'content-type': 'application/json' }
  const order = JSON.stringify({ customer: 'homer', pastry: 'la bombe' })

  interface Case {
    readonly name: string
    readonly path: string
    readonly request: InjectOptions
    readonly status: number
    readonly redisDown?: boolean
    readonly capped?: boolean
  }
  const get = (url: string, headers: Record<string, string> = {}): InjectOptions => ({
    method: 'GET',
    url,
    headers,
  })
  const post = (payload: string, headers: Record<string, string> = json): InjectOptions => ({
    method: 'POST',
    url: '/orders',
    payload,
    headers,
  })
  const cases = (): Case[] => [
    { name: 'root, JSON', path: '/', request: get('/', { accept: '*/*' }), status: 200 },
    { name: 'root, page', path: '/', request: get('/', { accept: 'text/html' }), status: 200 },
    { name: 'place', path: '/orders', request: post(order), status: 202 },
    {
      name: 'place with a key',
      path: '/orders',
      request: post(order, { ...json, 'idempotency-key': 'openapi-1' }),
      status: 202,
    },
    { name: 'not JSON', path: '/orders', request: post('{'), status: 400 },
    { name: 'invalid order', path: '/orders', request: post('{"pastry":""}'), status: 400 },
    {
      name: 'bad key',
      path: '/orders',
      request: post(order, { ...json, 'idempotency-key': 'é' }),
      status: 400,
    },
    {
      name: 'too large',
      path: '/orders',
      request: post(JSON.stringify({ customer: 'x'.repeat(BODY_LIMIT_BYTES) })),
      status: 413,
    },
    { name: 'not JSON typed', path: '/orders', request: post(order, {}), status: 415 },
    {
      name: 'key reused',
      path: '/orders',
      request: post('{"customer":"bart","pastry":"donut"}', {
        ...json,
        'idempotency-key': 'openapi-1',
      }),
      status: 422,
    },
    {
      name: 'place, Redis away',
      path: '/orders',
      request: post(order),
      status: 503,
      redisDown: true,
    },
    { name: 'an order', path: '/orders/{key}', request: get(`/orders/${pending}`), status: 200 },
    {
      name: 'no order',
      path: '/orders/{key}',
      request: get(`/orders/${randomOrderKey()}`),
      status: 404,
    },
    {
      name: 'order, Redis away',
      path: '/orders/{key}',
      request: get(`/orders/${pending}`),
      status: 503,
      redisDown: true,
    },
    {
      name: 'history',
      path: '/orders/{key}/events',
      request: get(`/orders/${finished}/events`),
      status: 200,
    },
    {
      name: 'no history',
      path: '/orders/{key}/events',
      request: get('/orders/nope/events'),
      status: 404,
    },
    {
      name: 'history, Redis away',
      path: '/orders/{key}/events',
      request: get(`/orders/${finished}/events`),
      status: 503,
      redisDown: true,
    },
    {
      name: 'updates of a finished order',
      path: '/orders/{key}/updates',
      request: get(`/orders/${finished}/updates`),
      status: 200,
    },
    {
      name: 'updates, all seen',
      path: '/orders/{key}/updates',
      request: get(`/orders/${finished}/updates`, { 'last-event-id': '3' }),
      status: 204,
    },
    {
      name: 'no updates',
      path: '/orders/{key}/updates',
      request: get(`/orders/${randomOrderKey()}/updates`),
      status: 404,
    },
    {
      name: 'too many streams',
      path: '/orders/{key}/updates',
      request: get(`/orders/${pending}/updates`),
      status: 429,
      capped: true,
    },
    {
      name: 'updates, Redis away',
      path: '/orders/{key}/updates',
      request: get(`/orders/${finished}/updates`),
      status: 503,
      redisDown: true,
    },
    { name: 'alive', path: '/healthz', request: get('/healthz'), status: 200 },
    { name: 'ready', path: '/readyz', request: get('/readyz'), status: 200 },
    { name: 'not ready', path: '/readyz', request: get('/readyz'), status: 503, redisDown: true },
    { name: 'metrics', path: '/metrics', request: get('/metrics'), status: 200 },
    { name: 'contract', path: '/openapi.json', request: get('/openapi.json'), status: 200 },
  ]

  before(async () => {
    const at = (ms: number) => timestamp(new Date(Date.UTC(2026, 10, 27, 10, 0, 0, ms)))
    const placed = (orderKey: OrderKey) =>
      OrderPlaced.create({ orderKey, customer: 'marge', pastry: 'éclair', orderTime: at(0) })
    await store.append(pending, 0, [placed(pending)], [])
    await store.append(finished, 0, [placed(finished)], [])
    await store.append(
      finished,
      1,
      [BakingStarted.create({ orderKey: finished, startedAt: at(5) })],
      [],
    )
    await store.append(
      finished,
      2,
      [
        OrderBaked.create({
          orderKey: finished,
          bakedAt: at(90),
          bakeMs: 85 as t.TypeOf<typeof NonNegativeInt>,
          mistake: false,
        }),
      ],
      [],
    )
  })

  after(async () => {
    await dropNamespace(namespace)
    redis.disconnect()
    down.disconnect()
  })

  it('every documented response is exercised, and nothing undocumented is', () => {
    const documented = Object.entries(paths).flatMap(([path, item]) =>
      Object.entries(item).flatMap(([method, operation]) =>
        Object.keys(operation.responses as Doc).map(
          (status) => `${method.toUpperCase()} ${path} ${status}`,
        ),
      ),
    )
    const exercised = cases().map((c) => `${c.request.method ?? 'GET'} ${c.path} ${c.status}`)
    assert.deepEqual([...new Set(exercised)].sort(), [...new Set(documented)].sort())
  })

  for (const c of cases())
    it(`${c.request.method ?? 'GET'} ${c.path} -> ${c.status} (${c.name})`, async () => {
      const app = c.redisDown ? downApp : c.capped ? cappedApp : up
      const response: Response = await inject(app.callback(), c.request)
      assert.equal(response.statusCode, c.status, response.body)
      const method = String(c.request.method ?? 'GET').toLowerCase()
      const operation = paths[c.path]![method]!
      const documented = (operation.responses as Record<string, Doc>)[String(c.status)]
      assert.ok(documented, 'the status is documented')
      const content = (documented.content ?? {}) as Record<string, Doc>
      const type = String(response.headers['content-type'] ?? '').split(';')[0]!
      if (Object.keys(content).length === 0) {
        assert.equal(response.body, '', 'a response documented without content has none')
        return
      }
      const media = content[type]
      assert.ok(media, `${type} is documented (${Object.keys(content).join(', ')})`)
      const schema = pointer(
        'paths',
        c.path,
        method,
        'responses',
        String(c.status),
        'content',
        type,
        'schema',
      )
      if (type.endsWith('json')) {
        const errors = schemas.check(schema, response.json())
        assert.deepEqual(errors, [], response.body)
      } else if (type === 'text/event-stream') {
        // Each event's data is the order as GET answers it.
        const data = response.body
          .split('\n')
          .filter((line) => line.startsWith('data: '))
          .map((line) => JSON.parse(line.slice(6)) as unknown)
        assert.ok(data.length > 0)
        for (const item of data)
          assert.deepEqual(schemas.check(pointer('components', 'schemas', 'OrderView'), item), [])
      } else {
        assert.deepEqual(schemas.check(schema, response.body), [])
      }
    })

  it('serves the document it describes', async () => {
    const response = await inject(up.callback(), get('/openapi.json'))
    assert.deepEqual(response.json(), JSON.parse(JSON.stringify(doc)))
  })
})
