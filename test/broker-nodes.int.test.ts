import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { PlaceOrder, timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { runDeadLetters } from '../src/tools/dead-letters'
import { handlerFor, startService, type Service } from '../src/platform/service'
import { bakery, queues } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import {
  createVhost,
  dropNamespace,
  freePort,
  REDIS_URL,
  uniqueNamespace,
  waitFor,
} from './support'
import { captureIo } from './support/replay'

/** AMQP_URL naming several nodes: the ones that are gone cost a refused connection each. */
describe('several nodes in AMQP_URL', () => {
  const namespace = uniqueNamespace('nodes')
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let nodes: string
  let goneFirst: string
  const services: Service[] = []
  const lines: string[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })

  before(async () => {
    vhost = await createVhost('nodes')
    // The shared broker, and two nodes that are not there (nothing listens on a free port); they
    // take its credentials and vhost.
    const gone = await Promise.all([freePort(), freePort()])
    nodes = [vhost.url, ...gone.map((port) => `amqp://127.0.0.1:${port}`)].join(',')
    goneFirst = [vhost.url.replace(':5672', `:${gone[0]}`), 'amqp://127.0.0.1:5672'].join(',')
  })
  after(async () => {
    for (const service of services) await service.stop()
    await vhost.drop()
    await dropNamespace(namespace)
  })

  it('connects to the node that is up at once, sends and consumes through it', async () => {
    const config = loadConfig({ AMQP_URL: nodes, REDIS_URL, BAKERY_NAMESPACE: namespace })
    assert.equal(config.AMQP_URL.length, 3)
    const received: string[] = []
    const started = Date.now()
    const service = await startService({
      domain: bakery,
      config,
      logger,
      relay: false,
      consume: {
        queue: queues.baker,
        handlers: () => [handlerFor(PlaceOrder, async (c) => void received.push(c.orderKey))],
      },
    })
    services.push(service)
    assert.ok(await service.transport.waitUntilReady(10_000))
    // A round of refused nodes is tried without backing off in between.
    assert.ok(Date.now() - started < 2000, `ready after ${Date.now() - started} ms`)
    const orderKey = randomOrderKey()
    await service.bus.send(
      PlaceOrder.create({
        orderKey,
        customer: 'homer',
        pastry: 'donut',
        orderTime: timestamp(new Date()),
      }),
    )
    await waitFor('the command', () => received.includes(orderKey))
    const connected = lines.filter((l) => l.includes('connected to RabbitMQ'))
    assert.equal(connected.length, 1)
    assert.ok(connected[0]!.includes(`/${vhost.name}`), 'on the node that is up, in its vhost')
  })

  it('the dead-letters tool tries the nodes in turn too', async () => {
    const io = captureIo(namespace, { env: { AMQP_URL: goneFirst } })
    assert.equal(await runDeadLetters(['list'], io), 0, io.err())
    assert.equal(io.out(), 'No dead letters.\n')
  })
})
