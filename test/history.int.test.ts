import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { context, propagation, ROOT_CONTEXT, trace, TraceFlags } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import pino from 'pino'
import { runHistory } from '../src/tools/history'
import { createApp } from '../src/reception/app'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, uniqueNamespace } from './support'
import { StackContextManager } from './support/context'
import { receptionExtras } from './support/reception'
import { bakery, captureIo, lifecycle, record } from './support/replay'

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const namespace = uniqueNamespace('history')
const start = Date.parse('2026-05-01T10:00:00.000Z')
let clock = start
const b = bakery(namespace, () => new Date(clock))
const order = randomOrderKey()
let server: Server
let base: string

describe('an order history', () => {
  before(async () => {
    context.setGlobalContextManager(new StackContextManager())
    propagation.setGlobalPropagator(new W3CTraceContextPropagator())
    const traced = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: TRACE_ID,
      spanId: '00f067aa0ba902b7',
      traceFlags: TraceFlags.SAMPLED,
    })
    // Given: placed at 10:00:00.000, baking 150 ms later, baked 2.5 s after that (a mistake);
    // the first two recorded inside a trace. The append reads the trace as it starts.
    await context.with(traced, () =>
      b.store.append(order, 0, [lifecycle.placed(order, 'homer', 'la bombe', start)], []),
    )
    clock += 150
    await context.with(traced, () =>
      b.store.append(order, 1, [lifecycle.started(order, clock)], []),
    )
    clock += 2500
    await record(b, lifecycle.baked(order, 84, true, clock))

    const app = createApp({
      store: b.store,
      views: b.views,
      now: () => new Date(),
      newOrderKey: randomOrderKey,
      logger: pino({ level: 'silent' }),
      readiness: () => ({ ready: true, redis: 'up', rabbitmq: 'up' }),
      ...receptionExtras(b.redis, b.redis, namespace),
    })
    const handler = app.callback()
    server = createServer((req, res) => void handler(req, res)).listen(0, '127.0.0.1')
    await once(server, 'listening')
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    server.close()
    b.close()
    await dropNamespace(namespace)
  })

  it('bakery history prints each event with its time, the gap, and a Jaeger link', async () => {
    const io = captureIo(namespace, { env: { JAEGER_UI_URL: 'http://jaeger.test:16686' } })
    assert.equal(await runHistory([order], io), 0, io.err())
    const lines = io.out().trimEnd().split('\n')
    assert.equal(lines[0], `Order ${order}: 3 events`)
    assert.deepEqual(
      lines.slice(3).map((line) => line.split(/\s{2,}/)),
      [
        [
          '1',
          'bakery/order-placed',
          '2026-05-01T10:00:00.000Z',
          '-',
          'homer ordered la bombe',
          `http://jaeger.test:16686/trace/${TRACE_ID}`,
        ],
        [
          '2',
          'bakery/baking-started',
          '2026-05-01T10:00:00.150Z',
          '+150 ms',
          'a baker started baking',
          `http://jaeger.test:16686/trace/${TRACE_ID}`,
        ],
        [
          '3',
          'bakery/order-baked',
          '2026-05-01T10:00:02.650Z',
          '+2.5 s',
          'baked in 84 ms, baked twice after a mistake',
          '-',
        ],
      ],
    )
  })

  it('--json gives the same history to a machine', async () => {
    const io = captureIo(namespace)
    assert.equal(await runHistory([order, '--json'], io), 0)
    const history = JSON.parse(io.out()) as {
      orderKey: string
      entries: { version: number; sincePreviousMs: number | null; traceUrl: string | null }[]
    }
    assert.equal(history.orderKey, order)
    assert.deepEqual(
      history.entries.map((e) => [e.version, e.sincePreviousMs, e.traceUrl]),
      [
        [1, null, `http://localhost:16686/trace/${TRACE_ID}`],
        [2, 150, `http://localhost:16686/trace/${TRACE_ID}`],
        [3, 2500, null],
      ],
    )
  })

  it('--at shows the order as it was at a version or an instant', async () => {
    const byVersion = captureIo(namespace)
    assert.equal(await runHistory([order, '--at', '2'], byVersion), 0)
    assert.match(
      byVersion.out(),
      /^Order [0-9a-f]{32} at version 2: version 2 of 3, after bakery\/baking-started recorded 2026-05-01T10:00:00.150Z\n/,
    )
    assert.match(byVersion.out(), /^status +baking$/m)
    assert.match(byVersion.out(), /^customer +homer$/m)

    const byTime = captureIo(namespace)
    assert.equal(await runHistory([order, '--at', '2026-05-01T10:00:01Z', '--json'], byTime), 0)
    assert.deepEqual(JSON.parse(byTime.out()), {
      orderKey: order,
      at: { time: '2026-05-01T10:00:01.000Z' },
      version: 2,
      recordedAt: '2026-05-01T10:00:00.150Z',
      view: {
        pastry: 'la bombe',
        customer: 'homer',
        orderTime: '2026-05-01T10:00:00.000Z',
        status: 'baking',
      },
    })

    const before_ = captureIo(namespace)
    assert.equal(await runHistory([order, '--at', '2026-05-01T09:00:00Z'], before_), 0)
    assert.match(before_.out(), /did not exist yet/)
  })

  it('answers 1 for an unknown order and 2 for a bad key', async () => {
    const unknown = captureIo(namespace)
    assert.equal(await runHistory([randomOrderKey()], unknown), 1)
    assert.match(unknown.err(), /there is no order [0-9a-f]{32} in namespace test-history-/)
    const bad = captureIo(namespace)
    assert.equal(await runHistory(['croissant'], bad), 2)
    assert.match(bad.err(), /"croissant" is not an order key[\s\S]*Usage: bakery history/)
  })

  it('GET /orders/:key/events returns the history as JSON, 404 problem+json when unknown', async () => {
    const response = await fetch(`${base}/orders/${order}/events`)
    assert.equal(response.status, 200)
    const body = (await response.json()) as {
      orderKey: string
      entries: { version: number; type: string; traceId: string | null }[]
      skipped: unknown[]
    }
    assert.equal(body.orderKey, order)
    assert.deepEqual(
      body.entries.map((e) => [e.version, e.type, e.traceId]),
      [
        [1, 'bakery/order-placed', TRACE_ID],
        [2, 'bakery/baking-started', TRACE_ID],
        [3, 'bakery/order-baked', null],
      ],
    )
    assert.deepEqual(body.skipped, [])

    for (const key of [randomOrderKey(), 'not-a-key']) {
      const missing = await fetch(`${base}/orders/${key}/events`)
      assert.equal(missing.status, 404)
      assert.match(String(missing.headers.get('content-type')), /^application\/problem\+json/)
      const problem = (await missing.json()) as { status: number; detail: string }
      assert.equal(problem.status, 404)
      assert.match(problem.detail, /there is no order with key/)
    }
  })
})
