// What one message costs in @node-ts/bus-core itself, with no I/O: the CPU time per message of
//   - decoding a delivery (Bakery's RabbitTransport.receive: UTF-8, JSON, io-ts, headers);
//   - bus.receive of that delivery, dispatched to a handler that does nothing;
//   - RabbitTransport.dispatch of it to the same handler (what Bakery's consumers do instead);
//   - bus.send / bus.publish of a message to a transport that does nothing.
// Everything runs in this process, 32 messages at a time (the default PREFETCH). It says how much
// of Bakery's CPU per order (docs/performance.md) the bus framework takes before any work is done.
//   npx tsx bench/tools/bus-overhead.ts [messages=100000]
import { Writable } from 'node:stream'
import { Bus, type Transport } from '@node-ts/bus-core'
import pino from 'pino'
import type { ConsumeMessage } from 'amqplib'
import { OrderBaked, PlaceOrder, timestamp, type OrderKey } from '../../src/messages'
import { busLoggerFactory } from '../../src/platform/logger'
import { RabbitTransport } from '../../src/platform/transport'
import { queues, topology } from '../../src/wiring'

const BATCH = 32
const messages = Number(process.argv[2] ?? 100_000)
const logger = pino({ level: 'info' }, new Writable({ write: (_chunk, _encoding, done) => done() }))

const order = {
  orderKey: '0123456789abcdef0123456789abcdef' as OrderKey,
  customer: 'homer',
  pastry: 'donut',
  orderTime: timestamp(new Date()),
}
const baked = OrderBaked.create({
  orderKey: order.orderKey,
  bakedAt: order.orderTime,
  bakeMs: 42 as OrderBaked['bakeMs'],
  mistake: false,
})
const traceparent = '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01'

/** A delivery as amqplib hands it over, with the headers Bakery's publisher writes. */
function delivery(): ConsumeMessage {
  return {
    content: Buffer.from(JSON.stringify(baked)),
    fields: {
      deliveryTag: 1,
      redelivered: false,
      exchange: OrderBaked.$name,
      routingKey: '',
      consumerTag: 'bench',
    },
    properties: {
      messageId: 'bench',
      correlationId: order.orderKey,
      type: OrderBaked.$name,
      headers: { attributes: JSON.stringify({ traceparent }), stickyAttributes: '{}' },
    },
  } as unknown as ConsumeMessage
}

/** CPU microseconds per call of `one`, called `n` times, BATCH at once. */
async function perMessage(n: number, one: () => Promise<unknown>): Promise<number> {
  const start = process.cpuUsage()
  for (let i = 0; i < n; i += BATCH) await Promise.all(Array.from({ length: BATCH }, one))
  const used = process.cpuUsage(start)
  return (used.user + used.system) / n
}

/** Each measurement twice: the first run warms the JIT up and is not reported. */
async function measure(one: () => Promise<unknown>): Promise<number> {
  await perMessage(Math.min(messages, 20_000), one)
  return perMessage(messages, one)
}

async function main(): Promise<void> {
  const transport = new RabbitTransport({
    // Port 1: it never reaches a broker, so nothing is consumed or declared anywhere.
    brokers: [new URL('amqp://127.0.0.1:1')],
    topology,
    logger,
    retry: { maxAttempts: 1, backoff: { initialMs: 1, maxMs: 1 } },
    consume: { queue: queues.projector, prefetch: BATCH },
  })
  let sent = 0
  const nowhere: Transport = {
    send: async () => void sent++,
    publish: async () => void sent++,
    fail: async () => {},
    readNextMessage: async () => undefined,
    deleteMessage: async () => {},
    returnMessage: async () => {},
    prepare: () => {},
  }
  let handled = 0
  // The transport only decodes and dispatches here: it never connects.
  const receiving = Bus.configure()
    .withTransport(transport)
    .withLogger(busLoggerFactory(logger))
    .withConcurrency(BATCH)
    .withReceiver(transport)
    .withHandler({ messageType: OrderBaked.Class, messageHandler: async () => void handled++ })
    .build()
  await receiving.initialize()
  // Looks bus-core's handlers up; with no broker connected, nothing is consumed.
  transport.startConsuming(receiving)

  const sending = Bus.configure()
    .withTransport(nowhere)
    .withLogger(busLoggerFactory(logger))
    .asSendOnly()
    .build()
  await sending.initialize()
  const options = { correlationId: order.orderKey, attributes: { traceparent } }

  const decode = await measure(() => transport.receive(delivery()))
  const receive = await measure(() => receiving.receive(delivery()))
  const dispatch = await measure(() => transport.dispatch(delivery()))
  const send = await measure(() => sending.send(PlaceOrder.create(order), options))
  const publish = await measure(() => sending.publish(baked, options))
  if (handled === 0 || sent === 0) throw new Error('nothing was dispatched')

  // Per order Bakery receives two messages (PlaceOrder, OrderBaked) and sends them.
  const perOrder = 2 * dispatch + send + publish
  const rows: [string, number][] = [
    ['decode a delivery (RabbitTransport.receive)', decode],
    ['bus.receive, no-op handler (includes the decode)', receive],
    ['RabbitTransport.dispatch, no-op handler (decode too)', dispatch],
    ['bus.send to a no-op transport', send],
    ['bus.publish to a no-op transport', publish],
    ['per order: 2 dispatched, 2 sent', perOrder],
    ['per order before: 4 bus.receive, 4 sent', 4 * receive + 2 * send + 2 * publish],
  ]
  for (const [label, us] of rows) console.log(`${label.padEnd(54)} ${us.toFixed(1).padStart(7)} µs`)
  console.log(
    JSON.stringify({
      bench: 'bus-overhead',
      at: new Date().toISOString(),
      messages,
      node: process.version,
      usPerMessage: { decode, receive, dispatch, send, publish },
      usPerOrder: perOrder,
    }),
  )
  await receiving.dispose()
  await sending.dispose()
  await transport.disconnect()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
