import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import amqp, { type Channel, type ChannelModel } from 'amqplib'
import pino from 'pino'
import { OrderBaked, timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { REQUEUE_BATCH, type DeadLetter } from '../src/platform/dead-letter-queue'
import { runDeadLetters } from '../src/tools/dead-letters'
import { FailureHeaders } from '../src/platform/transport'
import { handlerFor, startService, type Service } from '../src/platform/service'
import { bakery, queues, topology } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { QUEUE_TYPES, type QueueType } from './support'
import { toolRunner } from './support/replay'

const theTool = (queueType: QueueType) => () => {
  let vhost: Awaited<ReturnType<typeof createVhost>>
  const namespace = uniqueNamespace('dead-letters')
  const services: Service[] = []
  /** Handler calls per order key; the handler fails while `broken`. */
  const calls = new Map<string, number>()
  let broken = true
  let env: NodeJS.ProcessEnv

  const tool = toolRunner(runDeadLetters, namespace, () => env)
  const list = async () => {
    const { code, out } = await tool('list', '--json')
    assert.equal(code, 0)
    return JSON.parse(out) as DeadLetter[]
  }

  before(async () => {
    vhost = await createVhost('dead-letters')
    env = { AMQP_URL: vhost.url, REDIS_URL, BAKERY_NAMESPACE: namespace, QUEUE_TYPE: queueType }
    const config = loadConfig({ ...env, RETRY_MAX_ATTEMPTS: '2', RETRY_INITIAL_DELAY_MS: '20' })
    const logger = pino({ level: 'silent' })
    const service = await startService({
      domain: bakery,
      config,
      logger,
      relay: false,
      consume: {
        queue: queues.projector,
        handlers: () => [
          handlerFor(OrderBaked, async (event) => {
            calls.set(event.orderKey, (calls.get(event.orderKey) ?? 0) + 1)
            if (broken) throw new Error('the read model is jammed')
            return Promise.resolve()
          }),
        ],
      },
    })
    services.push(service)
    assert.ok(await service.transport.waitUntilReady(10_000))
  })

  after(async () => {
    for (const service of services) await service.stop()
    await dropNamespace(namespace)
    await vhost.drop()
  })

  const orders = [randomOrderKey(), randomOrderKey(), randomOrderKey()]

  it('lists dead letters with reason, message, queue, age and attempts, and leaves them there', async () => {
    const [service] = services
    for (const orderKey of orders)
      await service!.bus.publish(
        OrderBaked.create({
          orderKey,
          bakedAt: timestamp(new Date()),
          bakeMs: 42 as OrderBaked['bakeMs'],
          mistake: false,
        }),
      )
    await waitFor('three dead letters', async () => (await list()).length === 3)
    const letters = await list()
    assert.equal(letters.length, 3, 'listing twice takes nothing away')
    for (const letter of letters) {
      assert.equal(letter.name, OrderBaked.$name)
      assert.equal(letter.queue, queues.projector)
      assert.equal(letter.attempts, 2)
      assert.match(letter.reason ?? '', /gave up after 2 attempts: Error: the read model is jammed/)
      assert.match(letter.messageId ?? '', /^[0-9a-f-]{36}$/)
    }
    const { code, out } = await tool('list')
    assert.equal(code, 0)
    assert.match(out, /^ID\s+MESSAGE\s+QUEUE\s+AGE\s+ATTEMPTS\s+REASON\n/)
    assert.match(out, /bakery\/order-baked\s+bakery\.projector\s+\d+(\.\d)? (ms|s)\s+2\s+gave up/)
  })

  it('requeues one by id to the queue it failed on, with its attempts reset', async () => {
    const [first] = await list()
    const before = new Map(calls)
    const { code, out } = await tool('requeue', '--id', first!.messageId!)
    assert.equal(code, 0)
    assert.match(out, /requeued .* to bakery\.projector\n1 requeued/)
    // Still broken: it is tried afresh, twice, then dead-lettered again.
    await waitFor('the requeued message to fail twice more', () =>
      orders.some((order) => (calls.get(order) ?? 0) === (before.get(order) ?? 0) + 2),
    )
    await waitFor('it to be back among the dead letters', async () => (await list()).length === 3)
    const total = (map: Map<string, number>) => [...map.values()].reduce((a, b) => a + b, 0)
    assert.equal(total(calls), total(before) + 2, 'only the chosen one was requeued')
  })

  it('requeues all once the cause is fixed; an unknown id is an error', async () => {
    const missing = await tool('requeue', '--id', 'no-such-id')
    assert.equal(missing.code, 1)
    assert.match(missing.err, /no dead letter with id no-such-id/)
    broken = false
    const before = new Map(calls)
    const { code, out } = await tool('requeue', '--all')
    assert.equal(code, 0)
    assert.match(out, /3 requeued/)
    await waitFor('each to be handled once more', () =>
      orders.every((order) => calls.get(order) === (before.get(order) ?? 0) + 1),
    )
    assert.deepEqual(await list(), [])
    const empty = await tool('list')
    assert.equal(empty.out, 'No dead letters.\n')
  })

  it('answers usage errors with exit code 2', async () => {
    assert.equal((await tool('requeue')).code, 2)
    assert.equal((await tool('requeue', '--all', '--id', 'x')).code, 2)
    assert.equal((await tool('explode')).code, 2)
    assert.equal((await tool('list', '--limit', '0')).code, 2)
  })
}

for (const type of QUEUE_TYPES) describe(`bakery dead-letters, ${type} queues`, theTool(type))

/** Control characters a terminal may act on (a newline between lines aside). */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/

describe('bakery dead-letters on a long queue and hostile text', () => {
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let connection: ChannelModel
  let env: NodeJS.ProcessEnv
  const namespace = uniqueNamespace('dead-letters-bulk')

  const tool = toolRunner(runDeadLetters, namespace, () => env)

  /** Publishes dead letters straight to the dead-letter queue, as the transport would. */
  const deadLetter = async (count: number, headers: Record<string, unknown> = {}, id?: string) => {
    const channel = await connection.createConfirmChannel()
    for (let i = 0; i < count; i++)
      channel.publish(
        '',
        topology.deadLetterQueue,
        Buffer.from(`{"$name":"${OrderBaked.$name}"}`),
        {
          messageId: id ?? randomUUID(),
          type: OrderBaked.$name,
          persistent: true,
          headers: {
            [FailureHeaders.queue]: queues.projector,
            [FailureHeaders.reason]: 'the read model is jammed',
            [FailureHeaders.failedAt]: new Date().toISOString(),
            [FailureHeaders.attempt]: 1,
            ...headers,
          },
        },
      )
    await channel.waitForConfirms()
    await channel.close()
  }
  let counter: Channel
  const ready = async (queue: string) => (await counter.checkQueue(queue)).messageCount

  before(async () => {
    vhost = await createVhost('dead-letters-bulk')
    env = { AMQP_URL: vhost.url, REDIS_URL, BAKERY_NAMESPACE: namespace }
    // The topology as the roles declare it; nothing consumes, so requeued letters stay countable.
    const service = await startService({
      domain: bakery,
      config: loadConfig(env),
      logger: pino({ level: 'silent' }),
      relay: false,
    })
    assert.ok(await service.transport.waitUntilReady(10_000))
    await service.stop()
    connection = await amqp.connect(vhost.url)
    counter = await connection.createChannel()
  })

  after(async () => {
    await connection?.close()
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('requeues a long queue in bounded batches: never more than a batch out of both queues', async () => {
    const total = 2000
    await deadLetter(total)
    assert.equal(await ready(topology.deadLetterQueue), total)
    // What the broker holds ready in the two queues, sampled while the requeue runs: a message
    // taken off the dead-letter queue and not yet republished is counted in neither.
    let lowest = Infinity
    let running = true
    const sampler = (async () => {
      while (running) {
        const held = (await ready(topology.deadLetterQueue)) + (await ready(queues.projector))
        lowest = Math.min(lowest, held)
      }
    })()
    const { code, out } = await tool('requeue', '--all')
    running = false
    await sampler
    assert.equal(code, 0)
    assert.match(out, new RegExp(`${total} requeued\\n$`))
    assert.equal(await ready(queues.projector), total)
    assert.equal(await ready(topology.deadLetterQueue), 0)
    assert.ok(lowest >= total - REQUEUE_BATCH, `${total - lowest} messages were held at once`)
  })

  it('lists hostile text with its control characters escaped, never raw', async () => {
    const hostile = 'jammed \u001b]0;owned\u0007 \u001b[2J \u009b31m \u007f \u202eevil'
    await deadLetter(
      1,
      { [FailureHeaders.reason]: hostile, [FailureHeaders.queue]: '\u001b[31mqueue' },
      'id\u001b[1m',
    )
    const { code, out } = await tool('list')
    assert.equal(code, 0)
    assert.doesNotMatch(out, RAW)
    assert.ok(out.includes('jammed \\x1b]0;owned\\x07 \\x1b[2J \\x9b31m \\x7f \\u202eevil'), out)
    assert.ok(out.includes('\\x1b[31mqueue') && out.includes('id\\x1b[1m'), out)

    const json = await tool('list', '--json')
    assert.doesNotMatch(json.out, RAW)
    const letters = JSON.parse(json.out) as DeadLetter[]
    assert.equal(
      letters.find((l) => l.messageId === 'id\u001b[1m')?.reason,
      hostile,
      'JSON is lossless',
    )

    const requeue = await tool('requeue', '--id', 'id\u001b[1m')
    assert.ok(!(requeue.out + requeue.err).includes('\u001b'))
    assert.match(requeue.err, /left id\\x1b\[1m: it names no Bakery queue/)
  })

  it('leaves the dead letters where they are when their queue is gone', async () => {
    const channel = await connection.createChannel()
    await channel.purgeQueue(topology.deadLetterQueue)
    await channel.deleteQueue(queues.projector)
    await channel.close()
    await deadLetter(5)
    const { code, err } = await tool('requeue', '--all')
    assert.equal(code, 1)
    assert.match(err, /could not route .* bakery\.projector/)
    assert.equal(await ready(topology.deadLetterQueue), 5, 'none was lost')
  })
})
