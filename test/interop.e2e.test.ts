import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Bus, type BusInstance } from '@node-ts/bus-core'
import { Command, Event, type MessageAttributes } from '@node-ts/bus-messages'
import { RabbitMqTransport } from '@node-ts/bus-rabbitmq'
import amqp from 'amqplib'
import {
  createVhost,
  dropNamespace,
  isolatedEnv,
  postOrder,
  startPipeline,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from './support'
import { startHttpReceiver, type OtlpReceiver } from './support/otlp-receiver'

/*
 * A service built only from the published @node-ts/bus-core and @node-ts/bus-rabbitmq, the way
 * their README builds one: its own queue, its own message classes that share nothing with Bakery
 * but the `$name`s. If Bakery renamed an exchange, or changed how it encodes the `attributes`
 * header, this service would stop hearing it. The dead-letter queue and the reason header are
 * spelled out too, as an operator's tools would spell them, not taken from Bakery's code.
 */
const DEAD_LETTER_QUEUE = 'bakery.dead-letter'
const REASON_HEADER = 'x-bakery-reason'

class OrderBaked extends Event {
  static readonly NAME = 'bakery/order-baked'
  readonly $name = OrderBaked.NAME
  readonly $version = 1
  orderKey = ''
  bakedAt = ''
}

class PlaceOrder extends Command {
  static readonly NAME = 'bakery/place-order'
  readonly $name = PlaceOrder.NAME
  readonly $version = 1
  constructor(fields: Record<string, unknown> = {}) {
    super()
    Object.assign(this, fields)
  }
}

interface Heard {
  readonly orderKey: string
  readonly attributes: MessageAttributes
}

/** Quiet: bus-core's default logger writes every delivery to the console. */
const silentLogger = () => ({
  ...console,
  debug: () => undefined,
  trace: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  fatal: () => undefined,
})

describe('a stock @node-ts/bus-rabbitmq service talks to Bakery', () => {
  const namespace = uniqueNamespace('interop')
  const roles: RoleProcess[] = []
  const heard: Heard[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let receiver: OtlpReceiver
  let stock: BusInstance
  let base = ''

  before(async () => {
    vhost = await createVhost('interop')
    receiver = await startHttpReceiver()
    const env = isolatedEnv(vhost.url, namespace, {
      BAKE_TIME_SCALE: '0',
      OTEL_SDK_DISABLED: 'false',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
    })
    base = await startPipeline(env, roles)

    stock = Bus.configure()
      .withLogger(silentLogger)
      .withTransport(
        new RabbitMqTransport({
          queueName: `interop-${randomBytes(4).toString('hex')}`,
          connectionString: vhost.url,
          maxRetries: 1,
          deadLetterQueueName: 'interop.dead-letter',
        }),
      )
      .withHandler({
        messageType: OrderBaked,
        messageHandler: (event: OrderBaked, attributes: MessageAttributes) => {
          heard.push({ orderKey: event.orderKey, attributes })
        },
      })
      .build()
    await stock.initialize()
    await stock.start()
  })

  after(async () => {
    await stock?.dispose()
    const codes = await Promise.all(roles.map((role) => role.stop()))
    await receiver?.close()
    await dropNamespace(namespace)
    await vhost?.drop()
    assert.deepEqual(codes, [0, 0, 0], 'every role exits 0 on SIGTERM')
  })

  it("hears every order's OrderBaked, correlated by the order key and carrying its trace", async () => {
    const orderKeys = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        postOrder(base, { customer: `c${i}`, pastry: 'eclair' }),
      ),
    )
    await waitFor(
      'the stock service to hear every OrderBaked',
      () => orderKeys.every((key) => heard.some((h) => h.orderKey === key)),
      { timeoutMs: 30_000 },
    )
    for (const key of orderKeys) {
      const events = heard.filter((h) => h.orderKey === key)
      assert.equal(events.length, 1, `one OrderBaked for ${key}`)
      const { attributes } = events[0]!
      assert.equal(attributes.correlationId, key)
      const traceparent = attributes.attributes.traceparent
      assert.match(String(traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
    }
  })

  it('dead-letters a PlaceOrder it cannot decode, naming each bad field by path', async () => {
    await stock.send(new PlaceOrder({ orderKey: 'not-a-key', customer: 42, pastry: '   ' }))
    const connection = await amqp.connect(vhost.url)
    try {
      const channel = await connection.createChannel()
      const letter = await waitFor(
        `a message in ${DEAD_LETTER_QUEUE}`,
        async () => (await channel.get(DEAD_LETTER_QUEUE, { noAck: true })) || undefined,
      )
      const body = JSON.parse(letter.content.toString()) as Record<string, unknown>
      assert.equal(body.$name, PlaceOrder.NAME)
      const reason = String(letter.properties.headers?.[REASON_HEADER])
      assert.equal(
        reason,
        'PoisonMessage: the body is not a valid bakery/place-order v1: /orderKey: must be OrderKey; ' +
          '/customer: must be a string; /pastry: must not be empty or blank; ' +
          '/orderTime: is required',
      )
    } finally {
      await connection.close()
    }
  })
})
