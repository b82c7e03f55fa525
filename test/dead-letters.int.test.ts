import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { OrderBaked, timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import { runDeadLetters, type DeadLetter } from '../src/platform/dead-letters'
import { handlerFor, startService, type Service } from '../src/platform/service'
import { queues } from '../src/platform/topology'
import { randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { captureIo } from './support/replay'

describe('bakery dead-letters', () => {
  let vhost: Awaited<ReturnType<typeof createVhost>>
  const namespace = uniqueNamespace('dead-letters')
  const services: Service[] = []
  /** Handler calls per order key; the handler fails while `broken`. */
  const calls = new Map<string, number>()
  let broken = true
  let env: NodeJS.ProcessEnv

  const tool = async (...argv: string[]) => {
    const io = captureIo(namespace, { env })
    const code = await runDeadLetters(argv, io)
    return { code, out: io.out(), err: io.err() }
  }
  const list = async () => {
    const { code, out } = await tool('list', '--json')
    assert.equal(code, 0)
    return JSON.parse(out) as DeadLetter[]
  }

  before(async () => {
    vhost = await createVhost('dead-letters')
    env = { AMQP_URL: vhost.url, REDIS_URL, BAKERY_NAMESPACE: namespace }
    const config = loadConfig({ ...env, RETRY_MAX_ATTEMPTS: '2', RETRY_INITIAL_DELAY_MS: '20' })
    const logger = pino({ level: 'silent' })
    const service = await startService({
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
})
