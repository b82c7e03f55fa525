import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import amqp from 'amqplib'
import { Redis } from 'ioredis'
import { orderEventStore } from '../src/wiring'
import { keys } from '../src/platform/keys'
import {
  createVhost,
  dropNamespace,
  freePort,
  postOrder,
  REDIS_URL,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
  receptionUrl,
} from './support'
import {
  SpanKind,
  startGrpcReceiver,
  startHttpReceiver,
  StatusCode,
  traceOf,
  type OtlpReceiver,
  type ReceivedSpan,
  type Trace,
} from './support/otlp-receiver'
import { withScripts } from '../src/platform/scripts'

// Roles run from dist/: `npm run build` first.

// Every role with a relay (reception, baker) takes outbox entries from the shared consumer group.
const ANY_RELAY = ''
const TRACE_RESPONSE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/

interface Bakery {
  readonly roles: RoleProcess[]
  readonly base: string
  readonly amqpUrl: string
  readonly namespace: string
  readonly stop: () => Promise<(number | null)[]>
}

/** Starts the given roles as real processes, each in this test's own vhost and namespace. */
async function startBakery(
  label: string,
  roles: readonly string[],
  otel: Record<string, string>,
): Promise<Bakery> {
  const vhost = await createVhost(label)
  const namespace = uniqueNamespace(label)
  const env = {
    AMQP_URL: vhost.url,
    REDIS_URL,
    BAKERY_NAMESPACE: namespace,
    PORT: '0',
    HEALTH_PORT: '0',
    BAKE_TIME_SCALE: '0',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    ...otel,
  }
  const started: RoleProcess[] = []
  try {
    for (const role of roles) started.push(await startRole(role, env))
  } catch (error) {
    await Promise.all(started.map((r) => r.stop('SIGKILL')))
    await vhost.drop()
    throw error
  }
  const reception = roles.indexOf('reception')
  return {
    roles: started,
    base: reception >= 0 ? receptionUrl(started[reception]!) : '',
    amqpUrl: vhost.url,
    namespace,
    stop: async () => {
      const codes = await Promise.all(started.map((r) => r.stop()))
      await vhost.drop()
      await dropNamespace(namespace)
      return codes
    },
  }
}

async function placeOrder(base: string): Promise<{ orderKey: string; traceresponse: string }> {
  const response = await fetch(`${base}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ customer: 'homer', pastry: 'la bombe' }),
  })
  assert.equal(response.status, 202)
  const { orderKey } = (await response.json()) as { orderKey: string }
  return { orderKey, traceresponse: response.headers.get('traceresponse') ?? '' }
}

async function statusOf(base: string, orderKey: string): Promise<string | undefined> {
  const response = await fetch(`${base}/orders/${orderKey}`)
  return response.ok ? ((await response.json()) as { status: string }).status : undefined
}

const isRedis = (s: ReceivedSpan) =>
  s.kind === SpanKind.client && s.attributes['db.system.name'] === 'redis'

/** Waits until the trace holds every named span and no span's parent is missing. */
async function completeTrace(
  receiver: OtlpReceiver,
  traceId: string,
  expected: readonly [name: string, service: string][], // '' for any service
): Promise<Trace> {
  let last: Trace | undefined
  try {
    return await waitFor(`the whole trace ${traceId}`, () => {
      last = traceOf(receiver.spans, traceId)
      const found = expected.every(([name, service]) => last!.named(name, service).length > 0)
      return found && last.orphans().length === 0 ? last : undefined
    })
  } catch (error) {
    throw new Error(`${String(error)}\nreceived so far:\n${last?.outline() ?? '(nothing)'}`)
  }
}

function assertMessagingSpan(
  span: ReceivedSpan,
  operation: 'send' | 'process',
  destination: string,
  orderKey: string,
): void {
  assert.equal(span.name, `${operation} ${destination}`)
  assert.equal(span.kind, operation === 'send' ? SpanKind.producer : SpanKind.consumer)
  const a = span.attributes
  assert.equal(a['messaging.system'], 'rabbitmq')
  assert.equal(a['messaging.destination.name'], destination)
  assert.equal(a['messaging.operation.type'], operation)
  assert.equal(a['messaging.operation.name'], operation)
  assert.match(String(a['messaging.message.id']), /^[0-9a-f-]{36}$/)
  assert.equal(a['messaging.message.conversation_id'], orderKey)
  assert.equal(a['bakery.order_key'], orderKey)
}

/** Starts the three roles exporting to a receiver of their own; `extra` adds to their env. */
function tracedBakery(label: string, extra: Record<string, string> = {}) {
  let receiver: OtlpReceiver
  let bakery: Bakery
  before(async () => {
    receiver = await startHttpReceiver()
    bakery = await startBakery(label, ['reception', 'baker', 'projector'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      ...extra,
    })
  })
  after(async () => {
    const codes = await bakery?.stop()
    await receiver?.close()
    assert.deepEqual(codes, [0, 0, 0], 'every role stops cleanly')
  })
  return { receiver: () => receiver, bakery: () => bakery }
}

/** An order placed and finished, and its whole trace. */
async function finishedOrder(receiver: OtlpReceiver, base: string) {
  const { orderKey, traceresponse } = await placeOrder(base)
  const match = TRACE_RESPONSE.exec(traceresponse)
  assert.ok(match, `traceresponse ${JSON.stringify(traceresponse)} is 00-<trace>-<span>-01`)
  const [, traceId, serverSpanId] = match
  await waitFor('the order to be finished', async () =>
    (await statusOf(base, orderKey)) === 'finished' ? true : undefined,
  )
  const trace = await completeTrace(receiver, traceId!, [
    ['POST /orders', 'bakery-reception'],
    ['send bakery/place-order', ANY_RELAY],
    ['process bakery/place-order', 'bakery-baker'],
    ['send bakery/order-baked', ANY_RELAY],
    ['process bakery/order-baked', 'bakery-projector'],
  ])
  return { orderKey, traceId: traceId!, serverSpanId: serverSpanId!, trace }
}

describe('one lean trace per order, exported over OTLP/HTTP JSON', () => {
  const { receiver, bakery } = tracedBakery('tracing')

  test('from POST /orders through the baker to the read model', async () => {
    // A probe before the order: it must not show up as a span of its own.
    assert.equal((await fetch(`${bakery().base}/healthz`)).status, 200)

    const { orderKey, traceId, serverSpanId, trace } = await finishedOrder(
      receiver(),
      bakery().base,
    )
    const outline = `\n${trace.outline()}`

    // One trace across the three roles, with a single root: the HTTP request.
    assert.deepEqual([...new Set(trace.spans.map((s) => s.service))].sort(), [
      'bakery-baker',
      'bakery-projector',
      'bakery-reception',
    ])
    const roots = trace.roots()
    assert.equal(roots.length, 1, `one root${outline}`)
    const root = roots[0]!
    assert.equal(root.name, 'POST /orders')
    assert.equal(root.kind, SpanKind.server)
    assert.equal(root.service, 'bakery-reception')
    assert.equal(root.spanId, serverSpanId, 'traceresponse names the server span')
    assert.equal(root.attributes['http.route'], '/orders')
    assert.equal(root.attributes['http.response.status_code'], 202)
    assert.equal(root.attributes['bakery.order_key'], orderKey)
    assert.deepEqual(trace.orphans(), [], `no orphans${outline}`)

    // Lean: the request and its route, a send and a process span per message, nothing else.
    assert.deepEqual(
      trace.spans.map((s) => s.name).sort(),
      [
        'POST /orders',
        'process bakery/order-baked',
        'process bakery/place-order',
        'router - /orders',
        'send bakery/order-baked',
        'send bakery/place-order',
      ],
      `six spans${outline}`,
    )
    assert.deepEqual(trace.spans.filter(isRedis), [], 'no Redis spans unless asked for')

    // HTTP -> send PlaceOrder -> process PlaceOrder (the bake) -> send OrderBaked.
    const sendCommand = trace.one('send bakery/place-order')
    assert.ok(trace.descends(sendCommand, root), `send descends from the request${outline}`)
    assertMessagingSpan(sendCommand, 'send', 'bakery/place-order', orderKey)
    const processCommand = trace.one('process bakery/place-order')
    assert.equal(processCommand.parentSpanId, sendCommand.spanId, 'process is the child of send')
    assertMessagingSpan(processCommand, 'process', 'bakery/place-order', orderKey)
    assert.equal(
      processCommand.attributes['messaging.message.id'],
      sendCommand.attributes['messaging.message.id'],
      'both sides name the same message',
    )
    assert.equal(
      processCommand.attributes['messaging.destination.subscription.name'],
      'bakery.baker',
    )
    assert.equal(processCommand.status.code, StatusCode.unset)

    // The bake is told on the process span: pastry, mistake, times, status, versions appended.
    const bake = processCommand.attributes
    assert.equal(bake['bakery.pastry'], 'la bombe')
    assert.equal(typeof bake['bakery.mistake'], 'boolean')
    // Durations in whole or fractional ms; the order was complete only after its bake.
    const [bakeMs, onQueueMs, toCompletionMs] = [
      'bakery.bake_ms',
      'bakery.time_on_queue_ms',
      'bakery.time_to_completion_ms',
    ].map((name) => bake[name])
    for (const ms of [bakeMs, onQueueMs, toCompletionMs])
      assert.ok(
        typeof ms === 'number' && Number.isFinite(ms) && ms >= 0,
        `a duration: ${String(ms)}`,
      )
    assert.ok(Number(toCompletionMs) >= Number(bakeMs), 'completion includes the bake')
    assert.equal(bake['bakery.order.status'], 'finished')
    assert.deepEqual(bake['bakery.appended_versions'], [2, 3])

    // Only OrderBaked goes on the bus among the events; the others are facts of the log.
    for (const event of ['bakery/order-placed', 'bakery/baking-started'])
      assert.equal(trace.named(`send ${event}`).length, 0, `no send ${event}${outline}`)
    const sendBaked = trace.one('send bakery/order-baked')
    assert.equal(sendBaked.parentSpanId, processCommand.spanId, 'OrderBaked continues the bake')
    assertMessagingSpan(sendBaked, 'send', 'bakery/order-baked', orderKey)
    const processBaked = trace.one('process bakery/order-baked', 'bakery-projector')
    assert.equal(processBaked.parentSpanId, sendBaked.spanId)
    assertMessagingSpan(processBaked, 'process', 'bakery/order-baked', orderKey)
    // The view was written pending with the order: BakingStarted and OrderBaked folded in.
    assert.equal(processBaked.attributes['bakery.events_folded'], 2)
    assert.equal(processBaked.attributes['bakery.view.version'], 3)

    // The trace id is in the order's history, on every event.
    const redis = withScripts(new Redis(REDIS_URL))
    try {
      const store = orderEventStore(redis, keys(bakery().namespace))
      const history = await store.read(orderKey)
      assert.equal(history.length, 3)
      for (const entry of history)
        assert.match(entry.trace.traceparent ?? '', new RegExp(`^00-${traceId}-`))
    } finally {
      redis.disconnect()
    }

    // No noise: probes are not traced.
    assert.deepEqual(
      receiver().spans.filter((s) => String(s.attributes['url.path']).startsWith('/healthz')),
      [],
    )
  })

  test('a failing handler leaves an error span in the trace of the message', async () => {
    // A PlaceOrder for an order that does not exist, sent as another @node-ts/bus service would,
    // with a trace context of its own in the `attributes` header: the baker cannot bake it.
    const traceId = randomBytes(16).toString('hex')
    const parentSpanId = randomBytes(8).toString('hex')
    const orderKey = randomBytes(16).toString('hex')
    const connection = await amqp.connect(bakery().amqpUrl)
    try {
      const channel = await connection.createConfirmChannel()
      const message = {
        $name: 'bakery/place-order',
        $version: 1,
        orderKey,
        customer: 'marge',
        pastry: 'eclair',
        orderTime: new Date().toISOString(),
      }
      await new Promise<void>((resolve, reject) =>
        channel.publish(
          'bakery/place-order',
          '',
          Buffer.from(JSON.stringify(message)),
          {
            persistent: true,
            contentType: 'application/json',
            correlationId: orderKey,
            messageId: randomUUID(),
            type: 'bakery/place-order',
            headers: {
              attributes: JSON.stringify({ traceparent: `00-${traceId}-${parentSpanId}-01` }),
              stickyAttributes: '{}',
            },
          },
          (error) =>
            error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(),
        ),
      )
    } finally {
      await connection.close()
    }

    // The sender's own span is not exported here: the consumer span's parent is outside.
    const trace = await waitFor('the error span', () => {
      const spans = traceOf(receiver().spans, traceId)
      return spans.named('process bakery/place-order').length > 0 ? spans : undefined
    })
    const process = trace.one('process bakery/place-order', 'bakery-baker')
    assert.equal(process.parentSpanId, parentSpanId, 'the context came from the attributes header')
    assert.equal(process.status.code, StatusCode.error)
    assert.match(process.status.message, /PermanentFailure/)
    assert.equal(process.attributes['error.type'], 'PermanentFailure')
    assert.equal(process.attributes['bakery.order_key'], orderKey)
    assert.ok(process.events.includes('exception'))
  })
  test('a caller’s traceparent puts the request in the caller’s trace', async () => {
    const callerTrace = randomBytes(16).toString('hex')
    const callerSpan = randomBytes(8).toString('hex')
    const response = await fetch(`${bakery().base}/orders`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        traceparent: `00-${callerTrace}-${callerSpan}-01`,
      },
      body: JSON.stringify({ customer: 'marge', pastry: 'la bombe' }),
    })
    assert.equal(response.status, 202)
    const [, traceId, serverSpanId] =
      TRACE_RESPONSE.exec(response.headers.get('traceresponse') ?? '') ?? []
    assert.equal(traceId, callerTrace, 'traceresponse names the caller’s trace')
    const span = await waitFor(
      'the request’s span',
      () => traceOf(receiver().spans, callerTrace).named('POST /orders', 'bakery-reception')[0],
    )
    assert.equal(span.spanId, serverSpanId)
    assert.equal(span.parentSpanId, callerSpan, 'the server span is the child of the caller’s')
    assert.equal(span.kind, SpanKind.server)
    // The HTTP conventions' required attributes, and the conditionally required ones.
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(span.attributes).filter(([name]) => !name.startsWith('bakery.')),
      ),
      {
        'http.request.method': 'POST',
        'url.path': '/orders',
        'url.scheme': 'http',
        'http.route': '/orders',
        'http.response.status_code': 202,
      },
    )
  })
  test('a request that fails on our side: 500 with the trace id its span and its log line carry', async () => {
    // A stored entry that is not an event: a bug or a hand edit, not an outage.
    const orderKey = randomBytes(16).toString('hex')
    const redis = withScripts(new Redis(REDIS_URL))
    try {
      await redis.xadd(keys(bakery().namespace).orderStream(orderKey), '*', 'not', 'an event')
    } finally {
      redis.disconnect()
    }
    const response = await fetch(`${bakery().base}/orders/${orderKey}`)
    assert.equal(response.status, 500)
    assert.equal(response.headers.get('retry-after'), null)
    const { traceId } = (await response.json()) as { traceId?: string }
    assert.match(String(traceId), /^[0-9a-f]{32}$/)

    const span = await waitFor(
      'the failed request’s span',
      () => traceOf(receiver().spans, traceId!).named('GET /orders/:key', 'bakery-reception')[0],
    )
    assert.equal(span.attributes['http.response.status_code'], 500)
    const logged = bakery()
      .roles[0]!.output()
      .split('\n')
      .find((line) => line.includes('"request failed"'))
    assert.ok(logged, 'the reception logs the failure')
    assert.equal((JSON.parse(logged) as { trace_id?: string }).trace_id, traceId)
    assert.match(logged, /MalformedEntry/)
  })
})

describe('with BAKERY_TRACE_REDIS=true, every Redis command in its order’s trace', () => {
  const { receiver, bakery } = tracedBakery('tracing-redis', { BAKERY_TRACE_REDIS: 'true' })

  test('each role’s Redis calls hang under the span that made them', async () => {
    const { orderKey, trace } = await finishedOrder(receiver(), bakery().base)
    const outline = `\n${trace.outline()}`
    const root = trace.one('POST /orders')

    // The reception's append is a Redis call within the request.
    const append = trace.spans.filter((s) => s.service === 'bakery-reception' && isRedis(s))
    assert.ok(append.length > 0, `the reception's Redis write is traced${outline}`)
    for (const span of append) assert.ok(trace.descends(span, root))
    // The baker reads and appends within the processing of PlaceOrder.
    const processCommand = trace.one('process bakery/place-order')
    assert.ok(trace.children(processCommand).some(isRedis), `the baker's Redis calls${outline}`)
    // The projector reads the view and what it misses, and saves it.
    const processBaked = trace.one('process bakery/order-baked', 'bakery-projector')
    const writes = trace.children(processBaked).filter(isRedis)
    assert.ok(writes.length > 0, `the projector reads and writes Redis${outline}`)
    for (const write of writes) assert.equal(write.attributes['bakery.order_key'], orderKey)

    assert.deepEqual(
      receiver().spans.filter((s) => isRedis(s) && s.parentSpanId === ''),
      [],
      'no Redis call starts a trace of its own (the relay polling the outbox)',
    )
  })

  test('orders placed at once keep each Redis call in its own order trace', async () => {
    // Redis commands issued in the same tick share one write (auto-pipelining); each command's
    // span must still hang under the order that issued it, not under the first in the batch.
    const base = bakery().base
    const placed = await Promise.all(Array.from({ length: 24 }, () => placeOrder(base)))
    const traceOfOrder = new Map(
      placed.map(({ orderKey, traceresponse }) => [
        orderKey,
        TRACE_RESPONSE.exec(traceresponse)?.[1] ?? '',
      ]),
    )
    for (const { orderKey } of placed)
      await waitFor(`order ${orderKey} to be finished`, async () =>
        (await statusOf(base, orderKey)) === 'finished' ? true : undefined,
      )
    for (const traceId of traceOfOrder.values())
      await completeTrace(receiver(), traceId, [['process bakery/order-baked', 'bakery-projector']])

    const orderRedisSpans = receiver().spans.filter(
      (s) => isRedis(s) && traceOfOrder.has(String(s.attributes['bakery.order_key'])),
    )
    assert.ok(orderRedisSpans.length >= 24 * 3, 'every role traced its Redis calls')
    // (A GET of the order while it was polled is a trace of its own, and not a stray.)
    const orderTraces = new Set(traceOfOrder.values())
    const strays = orderRedisSpans.filter(
      (s) =>
        orderTraces.has(s.traceId) &&
        s.traceId !== traceOfOrder.get(String(s.attributes['bakery.order_key'])),
    )
    assert.deepEqual(
      strays.map((s) => `${s.service} ${s.name} of ${String(s.attributes['bakery.order_key'])}`),
      [],
      'no Redis call of one order is in another order’s trace',
    )
  })
})

test('OTLP/HTTP protobuf: the last spans are flushed when the reception stops', async () => {
  const receiver = await startHttpReceiver()
  // A schedule delay far longer than the test: only the flush at shutdown can deliver the spans.
  const bakery = await startBakery('tracing-proto', ['reception'], {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_BSP_SCHEDULE_DELAY: '600000',
  })
  try {
    const { orderKey, traceresponse } = await placeOrder(bakery.base)
    const traceId = TRACE_RESPONSE.exec(traceresponse)?.[1]
    assert.ok(traceId)
    // The relay sent the PlaceOrder (no baker takes it from the queue).
    const connection = await amqp.connect(bakery.amqpUrl)
    try {
      const channel = await connection.createChannel()
      await waitFor('the PlaceOrder on the baker queue', async () =>
        (await channel.checkQueue('bakery.baker')).messageCount === 1 ? true : undefined,
      )
    } finally {
      await connection.close()
    }
    assert.deepEqual(receiver.spans, [], 'nothing exported before the stop')
    assert.deepEqual(await bakery.stop(), [0])

    assert.ok(receiver.contentTypes.length > 0, 'the spans were exported at shutdown')
    for (const type of receiver.contentTypes) assert.equal(type, 'application/x-protobuf')
    const trace = traceOf(receiver.spans, traceId)
    const root = trace.one('POST /orders', 'bakery-reception')
    assert.equal(root.attributes['bakery.order_key'], orderKey)
    const send = trace.one('send bakery/place-order')
    assert.ok(trace.descends(send, root))
    assertMessagingSpan(send, 'send', 'bakery/place-order', orderKey)
    assert.deepEqual(trace.orphans(), [])
  } finally {
    await bakery.stop()
    await receiver.close()
  }
})

test('OTLP/gRPC export reaches a collector', async () => {
  const receiver = await startGrpcReceiver()
  const bakery = await startBakery('tracing-grpc', ['reception'], {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc',
  })
  try {
    const { orderKey, traceresponse } = await placeOrder(bakery.base)
    const traceId = TRACE_RESPONSE.exec(traceresponse)?.[1]
    assert.ok(traceId)
    const trace = await completeTrace(receiver, traceId, [
      ['POST /orders', 'bakery-reception'],
      ['send bakery/place-order', ANY_RELAY],
    ])
    assert.equal(trace.one('POST /orders').attributes['bakery.order_key'], orderKey)
  } finally {
    await bakery.stop()
    await receiver.close()
  }
})

test('with no collector listening, Bakery serves orders and keeps its log readable', async () => {
  const closedPort = await freePort()
  const bakery = await startBakery('tracing-nocollector', ['reception', 'baker', 'projector'], {
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${closedPort}`,
  })
  let codes: (number | null)[] = []
  try {
    const orderKey = await postOrder(bakery.base)
    await waitFor('the order to be finished', async () =>
      (await statusOf(bakery.base, orderKey)) === 'finished' ? true : undefined,
    )
    // Let several export rounds fail (each gives up after its retries).
    await waitFor(
      'each role to notice the collector is missing',
      () => bakery.roles.every((r) => r.output().includes('cannot export traces')),
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    await postOrder(bakery.base)
  } finally {
    const started = Date.now()
    codes = await bakery.stop()
    assert.ok(Date.now() - started < 8000, 'stopping does not wait long for a missing collector')
  }
  assert.deepEqual(codes, [0, 0, 0])
  for (const role of bakery.roles) {
    const lines = role.output().split('\n')
    const telemetry = lines.filter((l) => /export|otlp|opentelemetry|ECONNREFUSED/i.test(l))
    assert.equal(
      telemetry.length,
      1,
      `one line about the collector, not a stream:\n${telemetry.join('\n')}`,
    )
    assert.deepEqual(
      lines.filter((l) => /"level":(50|60)/.test(l)),
      [],
      'nothing logged as an error',
    )
  }
})
