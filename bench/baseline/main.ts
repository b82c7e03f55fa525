// The benchmark's baseline: Bakery's hops written directly on amqplib, ioredis and koa, with no
// bus framework, no event store and no tracing. It shows what this machine can do for the same
// trip, so Bakery's figures can be read as ratios:
//   POST /orders -> a persistent, confirmed PlaceOrder on RabbitMQ -> the worker publishes a
//   persistent, confirmed OrderBaked -> the writer stores the order with one Lua script -> GET.
// Run by bench/run.ts, one process per role: `node main.js reception|worker|writer`.
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import amqp, { type Channel, type ConfirmChannel, type ConsumeMessage } from 'amqplib'
import Koa from 'koa'
import Router from '@koa/router'
import { Redis } from 'ioredis'

const COMMANDS = 'baseline.place-order'
const EVENTS = 'baseline.order-baked'

interface Settings {
  readonly role: string
  readonly redisUrl: string
  readonly amqpUrl: string
  readonly namespace: string
  readonly port: number
  readonly prefetch: number
  readonly queueType: string
}

function settings(): Settings {
  const env = process.env
  return {
    role: process.argv[2] ?? '',
    redisUrl: env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    amqpUrl: env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    namespace: env.BAKERY_NAMESPACE ?? 'baseline',
    port: Number(env.PORT ?? '0'),
    prefetch: Number(env.PREFETCH ?? '32'),
    queueType: env.QUEUE_TYPE ?? 'classic',
  }
}

const orderKey = (namespace: string, key: string) => `{${namespace}}:order:${key}`

interface Order {
  readonly orderKey: string
  readonly customer: string
  readonly pastry: string
  readonly orderTime: string
}

interface Baked extends Order {
  readonly bakedAt: string
}

async function connect(s: Settings): Promise<{ publisher: ConfirmChannel; consumer: Channel }> {
  const connection = await amqp.connect(s.amqpUrl, { noDelay: true })
  const publisher = await connection.createConfirmChannel()
  const consumer = await connection.createChannel()
  // The same topology as Bakery's: a durable fanout exchange per message, a durable queue each.
  for (const name of [COMMANDS, EVENTS]) {
    await publisher.assertExchange(name, 'fanout', { durable: true })
    await publisher.assertQueue(name, {
      durable: true,
      ...(s.queueType === 'quorum' ? { arguments: { 'x-queue-type': 'quorum' } } : {}),
    })
    await publisher.bindQueue(name, name, '')
  }
  const close = () => void connection.close().finally(() => process.exit(0))
  process.on('SIGTERM', close)
  process.on('SIGINT', close)
  return { publisher, consumer }
}

function publish(channel: ConfirmChannel, exchange: string, message: object): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish(
      exchange,
      '',
      Buffer.from(JSON.stringify(message)),
      { persistent: true, contentType: 'application/json' },
      (error) => (error ? reject(new Error(String(error))) : resolve()),
    )
  })
}

function consume(
  channel: Channel,
  queue: string,
  prefetch: number,
  handle: (body: unknown) => Promise<void>,
): Promise<unknown> {
  return channel.prefetch(prefetch).then(() =>
    channel.consume(queue, (delivery: ConsumeMessage | null) => {
      if (!delivery) return
      handle(JSON.parse(delivery.content.toString('utf8'))).then(
        () => channel.ack(delivery),
        () => channel.nack(delivery, false, true),
      )
    }),
  )
}

async function reception(s: Settings): Promise<void> {
  const { publisher } = await connect(s)
  const redis = new Redis(s.redisUrl)
  const router = new Router()
  router.post('/orders', async (ctx) => {
    const chunks: Buffer[] = []
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) chunks.push(chunk)
    let body: unknown
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch {
      body = undefined
    }
    const { customer, pastry } = (body ?? {}) as { customer?: unknown; pastry?: unknown }
    if (typeof customer !== 'string' || typeof pastry !== 'string') {
      ctx.status = 400
      ctx.body = { title: 'an order needs customer and pastry' }
      return
    }
    const order: Order = {
      orderKey: randomBytes(16).toString('hex'),
      customer,
      pastry,
      orderTime: new Date().toISOString(),
    }
    await publish(publisher, COMMANDS, order)
    ctx.status = 202
    ctx.body = { orderKey: order.orderKey }
  })
  router.get('/orders/:key', async (ctx) => {
    const hash = await redis.hgetall(orderKey(s.namespace, ctx.params.key ?? ''))
    if (!hash.status) ctx.throw(404, 'no such order')
    ctx.body = {
      pastry: hash.pastry,
      customer: hash.customer,
      orderTime: hash.orderTime,
      status: hash.status,
    }
  })
  const app = new Koa()
  app.use(router.routes())
  const server = app.listen(s.port, () =>
    console.log(`baseline reception listening {"port":${(server.address() as AddressInfo).port}}`),
  )
}

async function worker(s: Settings): Promise<void> {
  const { publisher, consumer } = await connect(s)
  await consume(consumer, COMMANDS, s.prefetch, async (body) => {
    const baked: Baked = { ...(body as Order), bakedAt: new Date().toISOString() }
    await publish(publisher, EVENTS, baked)
  })
  console.log('baseline worker connected to RabbitMQ')
}

// Stores the order once: a redelivered event does not rewrite it.
const STORE = `
if redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'customer', ARGV[1], 'pastry', ARGV[2], 'orderTime', ARGV[3],
  'bakedAt', ARGV[4], 'status', 'finished')
return 1
`

async function writer(s: Settings): Promise<void> {
  const { consumer } = await connect(s)
  const redis = new Redis(s.redisUrl)
  const sha = (await redis.script('LOAD', STORE)) as string
  await consume(consumer, EVENTS, s.prefetch, async (body) => {
    const baked = body as Baked
    await redis.evalsha(
      sha,
      1,
      orderKey(s.namespace, baked.orderKey),
      baked.customer,
      baked.pastry,
      baked.orderTime,
      baked.bakedAt,
    )
  })
  console.log('baseline writer connected to RabbitMQ')
}

const roles: Record<string, (s: Settings) => Promise<void>> = { reception, worker, writer }
const s = settings()
const role = roles[s.role]
if (!role) {
  console.error(`usage: main.js reception|worker|writer (not ${JSON.stringify(s.role)})`)
  process.exit(2)
}
role(s).catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
