import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp from 'amqplib'
import pino from 'pino'
import { Redis } from 'ioredis'
import { PlaceOrder, type Timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import type { DeadLetter } from '../src/platform/dead-letter-queue'
import { runDeadLetters } from '../src/tools/dead-letters'
import { keys } from '../src/platform/keys'
import { fieldRecord } from '../src/platform/redis'
import { startService, type Service } from '../src/platform/service'
import { bakery, queues } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { toolRunner } from './support/replay'

/**
 * During a rolling deploy an old relay meets an outbox entry written by a newer Bakery (a message
 * version or kind it does not know). It must neither publish it nor lose it.
 */
describe('outbox entries a relay cannot decode', () => {
  const namespace = uniqueNamespace('parking')
  const k = keys(namespace)
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let redis: Redis
  let relay: Service | undefined
  let env: NodeJS.ProcessEnv

  const tool = toolRunner(runDeadLetters, namespace, () => env)
  const bakerQueue = async () => {
    const connection = await amqp.connect(vhost.url)
    try {
      const channel = await connection.createChannel()
      return (await channel.checkQueue(queues.baker)).messageCount
    } finally {
      await connection.close()
    }
  }

  const order = randomOrderKey()
  const command = {
    orderKey: order,
    customer: 'homer',
    pastry: 'la bombe',
    orderTime: new Date().toISOString() as Timestamp,
  }
  /** The entries as a newer Bakery would write them: a PlaceOrder v2, and a kind not known yet. */
  const newer = [
    [
      'order',
      order,
      'kind',
      'command',
      'message',
      JSON.stringify({ ...command, $name: PlaceOrder.$name, $version: 2, rush: true }),
      'trace',
      '{}',
    ],
    [
      'order',
      order,
      'kind',
      'query',
      'message',
      '{"$name":"bakery/where-is-my-order"}',
      'trace',
      '{}',
    ],
  ]

  before(async () => {
    vhost = await createVhost('parking')
    env = { AMQP_URL: vhost.url, REDIS_URL, BAKERY_NAMESPACE: namespace }
    redis = new Redis(REDIS_URL)
    relay = await startService({
      domain: bakery,
      config: loadConfig({ ...env, RELAY_CLAIM_AFTER_MS: '200' }),
      logger: pino({ level: 'silent' }),
      relay: true,
    })
    assert.ok(await relay.transport.waitUntilReady(10_000))
  })

  after(async () => {
    await relay?.stop()
    redis?.disconnect()
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('parks them with the reason and the original fields, publishes nothing, and moves on', async () => {
    for (const fields of newer) await redis.xadd(k.partitions[0]!.outbox, '*', ...fields)
    // A valid entry behind them still goes out.
    await redis.xadd(
      k.partitions[0]!.outbox,
      '*',
      'order',
      order,
      'kind',
      'command',
      'message',
      JSON.stringify(PlaceOrder.create(command)),
      'trace',
      '{}',
    )
    await waitFor('the valid command to be published', async () => (await bakerQueue()) === 1)
    await waitFor(
      'the outbox to be empty',
      async () => (await redis.xlen(k.partitions[0]!.outbox)) === 0,
    )

    const parked = await redis.xrange(k.partitions[0]!.parked, '-', '+')
    assert.equal(parked.length, 2, 'both undecodable entries are parked, not deleted')
    const [v2, query] = parked.map(([, fields]) => fieldRecord(fields))
    assert.deepEqual(
      { order: v2!.order, kind: v2!.kind, message: v2!.message, trace: v2!.trace },
      fieldRecord(newer[0]!),
    )
    assert.match(v2!['parked-reason'] ?? '', /not a valid bakery\/place-order v1/)
    assert.match(query!['parked-reason'] ?? '', /unknown kind "query"/)
    assert.equal(await bakerQueue(), 1, 'nothing of them was published')
  })

  it('lists them among the dead letters, with their reason', async () => {
    const { code, out } = await tool('list', '--json')
    assert.equal(code, 0)
    const letters = (JSON.parse(out) as DeadLetter[]).filter((l) => l.queue === 'outbox')
    assert.equal(letters.length, 2)
    assert.equal(letters[0]!.name, PlaceOrder.$name)
    assert.match(letters[0]!.reason ?? '', /not a valid bakery\/place-order v1/)
    assert.match(letters[1]!.reason ?? '', /unknown kind "query"/)
    const table = await tool('list')
    assert.match(
      table.out,
      /bakery\/place-order\s+outbox\s+\d+(\.\d)? (ms|s)\s+\?\s+parked by the outbox relay:/,
    )
  })

  it('requeues them into the outbox as they were written', async () => {
    // Stopped first: this relay would park them again; a newer one would publish them.
    await relay?.stop()
    relay = undefined
    const parked = await redis.xrange(k.partitions[0]!.parked, '-', '+')
    const { code, out } = await tool('requeue', '--id', parked[0]![0])
    assert.equal(code, 0, out)
    assert.match(out, /requeued .* to the outbox\n1 requeued\n$/)
    const all = await tool('requeue', '--all')
    assert.equal(all.code, 0)
    assert.match(all.out, /1 requeued\n$/)
    assert.equal(await redis.xlen(k.partitions[0]!.parked), 0)
    const back = (await redis.xrange(k.partitions[0]!.outbox, '-', '+')).map(([, fields]) =>
      fieldRecord(fields),
    )
    assert.deepEqual(
      back,
      newer.map((fields) => fieldRecord(fields)),
    )
  })
})
