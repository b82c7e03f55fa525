import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import fc from 'fast-check'
import { Redis } from 'ioredis'
import { Name, OrderKey, PlaceOrder, Timestamp } from '../src/messages'
import { decodeOrderEntry } from '../src/wiring'
import { keys } from '../src/platform/keys'
import {
  dropNamespace,
  startRole,
  waitFor,
  type RoleProcess,
  isolatedBakery,
  orderKeysIn,
  REDIS_URL,
  rssKb,
} from './support'

const RUNS = 3000

interface RawRequest {
  readonly method: string
  readonly path: string
  readonly headers: readonly (readonly [string, string])[]
  readonly body: Buffer
}

interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

/**
 * Sends bytes as they are: fetch would refuse (or fix) most of what this test wants to send.
 * Resolves with the parsed response once the server closed the connection.
 */
function send(port: number, request: RawRequest): Promise<RawResponse> {
  const head =
    `${request.method} ${request.path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n` +
    request.headers.map(([name, value]) => `${name}: ${value}\r\n`).join('') +
    `content-length: ${request.body.length}\r\n\r\n`
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')))
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1')
      const [headText = '', ...rest] = text.split('\r\n\r\n')
      const [statusLine = '', ...headerLines] = headText.split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of headerLines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
      }
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0)
      resolve({ status, headers, body: rest.join('\r\n\r\n') })
    })
    // Not end(): Node drops the answer to a client that half-closed before it was written.
    socket.write(Buffer.concat([Buffer.from(head, 'latin1'), request.body]))
  })
}

// --- What a hostile client sends ---------------------------------------------------------------

const percent = (bytes: number[]) =>
  bytes.map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')
const hostileKey = fc.oneof(
  fc.stringMatching(/^[0-9a-f]{32}$/),
  fc.constantFrom(
    '..%2f..%2fetc%2fpasswd',
    '../../etc/passwd',
    '%',
    '%zz',
    '%E0%A4%A',
    '%ff%fe',
    '%00',
    '%C0%AF',
    '__proto__',
    'constructor',
    '%2e%2e',
    '',
  ),
  fc.string({ maxLength: 64 }).map(encodeURIComponent),
  fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 40 }).map(percent),
  fc.integer({ min: 1, max: 4000 }).map((n) => 'a'.repeat(n)),
)
const path = fc.oneof(
  fc.constant('/orders'),
  fc.constant('/orders/'),
  hostileKey.map((key) => `/orders/${key}`),
  hostileKey.map((key) => `/orders/${key}/events`),
  hostileKey.map((key) => `/orders/${key}?${key}=${key}`),
  fc.constantFrom('/', '/healthz', '/readyz', '//orders', '/orders//x', '/ORDERS', '/%', '/../../'),
)
const method = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('POST', 'GET') },
  fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'BREW', 'get', 'P0ST'),
)
const contentType = fc.oneof(
  { weight: 5, arbitrary: fc.constant('application/json') },
  fc.constantFrom(
    'application/json; charset=utf-8',
    'application/json; charset=latin1',
    'application/problem+json',
    'text/plain',
    'multipart/form-data; boundary=x',
    'application/x-www-form-urlencoded',
    'application/json; charset=',
    '',
    'json',
  ),
)
const hostileText = fc.oneof(
  fc.string({ maxLength: 120, unit: 'grapheme' }),
  fc.string({ maxLength: 40, unit: 'binary' }),
  fc.constantFrom(' homer ', '\u0000', '\u2028', '\ud800', 'a'.repeat(101), ' '.repeat(10), ''),
  fc.integer({ min: 90, max: 12_000 }).map((n) => 'é'.repeat(n)),
)
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('homer', ' la bombe ', 'kouign-amann', 'ünïcødé 🥐') },
  hostileText,
  fc.constantFrom(1e308, -0, 2 ** 64, null, true, [], {}),
  fc.jsonValue({ maxDepth: 3 }),
)
const jsonBody = fc
  .record(
    {
      customer: hostileValue,
      pastry: hostileValue,
      extra: fc.dictionary(fc.string({ maxLength: 300 }), fc.jsonValue({ maxDepth: 2 }), {
        maxKeys: 4,
      }),
    },
    { requiredKeys: [] },
  )
  .map(({ extra, ...order }) => Buffer.from(JSON.stringify({ ...extra, ...order })))
const rawBody = fc.oneof(
  { weight: 6, arbitrary: jsonBody },
  fc
    .constantFrom(
      '{"customer":"homer","pastry":"donut","__proto__":{"status":"finished","admin":true}}',
      '{"customer":"homer","pastry":"donut","constructor":{"prototype":{"polluted":1}}}',
      '{"__proto__":{"customer":"homer","pastry":"donut"}}',
      '{"customer":"homer","pastry":"donut","orderKey":"00000000000000000000000000000000"}',
      '{"customer":"homer","pastry":"donut","status":"finished","$name":"bakery/order-baked"}',
      '{"customer":1e999999,"pastry":123456789012345678901234567890}',
      '{"customer":"homer","pastry":"donut"',
      '[{"customer":"homer","pastry":"donut"}]',
      'null',
      '"homer"',
      '',
    )
    .map((text) => Buffer.from(text)),
  fc.integer({ min: 1, max: 20_000 }).map((n) => Buffer.from('['.repeat(n) + ']'.repeat(n))),
  fc
    .integer({ min: 1, max: 5000 })
    .map((n) => Buffer.from(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`)),
  fc.integer({ min: 1, max: 40_000 }).map((n) => Buffer.from(`{"${'k'.repeat(n)}":1}`)),
  // Invalid UTF-8 inside a JSON string.
  fc
    .uint8Array({ minLength: 1, maxLength: 16 })
    .map((bytes) =>
      Buffer.concat([
        Buffer.from('{"customer":"'),
        Buffer.from([0xc3, 0x28, 0xff, ...bytes]),
        Buffer.from('","pastry":"donut"}'),
      ]),
    ),
  fc.uint8Array({ maxLength: 512 }).map((bytes) => Buffer.from(bytes)),
)
const extraHeaders = fc.array(
  fc.tuple(
    fc.oneof(
      fc.constantFrom('x-forwarded-for', 'accept', 'idempotency-key', 'traceparent', 'cookie'),
      fc.stringMatching(/^x-[a-z0-9-]{1,60}$/),
    ),
    fc.oneof(
      fc.stringMatching(/^[\x20-\x7e]{0,200}$/),
      fc.integer({ min: 1, max: 6000 }).map((n) => 'v'.repeat(n)),
      fc.constantFrom('00-zzzz-zzzz-01', '*/*', '../../etc/passwd'),
    ),
  ),
  { maxLength: 4 },
)
const request: fc.Arbitrary<RawRequest> = fc.record({
  method,
  path,
  headers: fc
    .tuple(contentType, extraHeaders)
    .map(([type, extra]) => [...(type ? [['content-type', type] as const] : []), ...extra]),
  body: rawBody,
})

// --- The test ----------------------------------------------------------------------------------

describe('hostile requests against a real reception', () => {
  const redis = new Redis(REDIS_URL)
  let bakery: Awaited<ReturnType<typeof isolatedBakery>>
  let reception: RoleProcess
  let port = 0

  before(async () => {
    bakery = await isolatedBakery('hostile')
    reception = await startRole('reception', bakery.env)
    port = reception.port!
    await waitFor('the reception to accept orders', async () => {
      const r = await send(port, {
        method: 'GET',
        path: '/readyz',
        headers: [],
        body: Buffer.alloc(0),
      })
      return r.status === 200
    })
  })

  after(async () => {
    await reception?.stop()
    await dropNamespace(bakery.namespace)
    await bakery.vhost.drop()
    redis.disconnect()
  })

  it(`answers ${RUNS} random and hostile requests with 2xx or 4xx, problem+json on errors`, async () => {
    const pid = reception.child.pid!
    const accepted: string[] = []
    const check = async (req: RawRequest) => {
      const response = await send(port, req)
      const what = `${req.method} ${req.path.slice(0, 80)} -> ${response.status} ${response.body.slice(0, 200)}`
      assert.ok(
        (response.status >= 200 && response.status < 300) ||
          (response.status >= 400 && response.status < 500),
        what,
      )
      if (response.status >= 400)
        assert.match(response.headers['content-type'] ?? '', /^application\/problem\+json/, what)
      if (response.status >= 400 && req.method !== 'HEAD') {
        const problem = JSON.parse(response.body) as { status: number; title: string }
        assert.equal(problem.status, response.status, what)
        assert.equal(typeof problem.title, 'string', what)
      }
      if (response.status === 202) {
        const { orderKey } = JSON.parse(response.body) as { orderKey: string }
        accepted.push(orderKey)
      }
    }

    // Warm up, then measure: memory must not grow with the number of requests.
    await fc.assert(fc.asyncProperty(request, check), { numRuns: 200, seed: 1 })
    const rssBefore = await rssKb(pid)
    await fc.assert(fc.asyncProperty(request, check), { numRuns: RUNS })
    const rssAfter = await rssKb(pid)

    assert.equal(reception.child.exitCode, null, 'the reception is still up')
    const healthy = await send(port, {
      method: 'GET',
      path: '/healthz',
      headers: [],
      body: Buffer.alloc(0),
    })
    assert.equal(healthy.status, 200)
    const growthMb = (rssAfter - rssBefore) / 1024
    assert.ok(
      growthMb < 64,
      `RSS grew by ${growthMb.toFixed(1)} MB (${rssBefore} -> ${rssAfter} kB)`,
    )
    assert.ok(accepted.length > 0, 'some hostile requests were valid orders')

    // Nothing but the contract was stored, whatever the requests carried.
    const k = keys(bakery.namespace)
    const stored = await orderKeysIn(redis, bakery.namespace)
    assert.deepEqual(new Set(stored), new Set(accepted), 'one stored order per 202, no other')
    const allowed = ['$name', '$version', 'orderKey', 'customer', 'pastry', 'orderTime']
    for (const orderKey of stored) {
      const entries = await redis.xrange(k.orderStream(orderKey), '-', '+')
      assert.equal(entries.length, 1)
      const [id, fields] = entries[0]!
      const raw = JSON.parse(fields[fields.indexOf('event') + 1]!) as Record<string, unknown>
      assert.deepEqual(Object.keys(raw).sort(), [...allowed].sort(), JSON.stringify(raw))
      assert.ok(OrderKey.is(raw.orderKey) && raw.orderKey === orderKey)
      assert.ok(Name.is(raw.customer) && Name.is(raw.pastry) && Timestamp.is(raw.orderTime))
      assert.equal(decodeOrderEntry(id, fields).event.$name, 'bakery/order-placed')
    }
    for (const [, fields] of await redis.xrange(k.partitions[0]!.outbox, '-', '+')) {
      const message = JSON.parse(fields[fields.indexOf('message') + 1]!) as Record<string, unknown>
      assert.deepEqual(Object.keys(message).sort(), [...allowed].sort())
      if (message.$name === PlaceOrder.$name) assert.ok(PlaceOrder.codec.is(message))
    }
    console.log(
      `# ${RUNS + 200} requests, ${accepted.length} accepted; reception RSS ${rssBefore} -> ${rssAfter} kB`,
    )
  })
})
