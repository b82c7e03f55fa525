import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import amqp from 'amqplib'
import pino from 'pino'
import { PlaceOrder, timestamp } from '../src/messages'
import { loadConfig } from '../src/platform/config'
import type { DeadLetter } from '../src/platform/dead-letter-queue'
import { runDeadLetters } from '../src/tools/dead-letters'
import { startService, type Service } from '../src/platform/service'
import { bakery, queues, topology } from '../src/wiring'
import { randomOrderKey } from '../src/reception/orders'
import { createVhost, dropNamespace, REDIS_URL, uniqueNamespace, waitFor } from './support'
import { captureIo } from './support/replay'

const run = promisify(execFile)

/** Quorum queues on the one shared broker: what they are declared as, and what they add. */
describe('QUEUE_TYPE=quorum', () => {
  const namespace = uniqueNamespace('quorum')
  const vhosts: Awaited<ReturnType<typeof createVhost>>[] = []
  const services: Service[] = []
  const lines: string[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })

  const start = async (vhost: { url: string }, env: Record<string, string>) => {
    const config = loadConfig({
      AMQP_URL: vhost.url,
      REDIS_URL,
      BAKERY_NAMESPACE: namespace,
      ...env,
    })
    const service = await startService({ config, logger, domain: bakery, relay: false })
    services.push(service)
    return service
  }
  const queueTypes = async (vhost: string) => {
    const { stdout } = await run('rabbitmqctl', [
      '-q',
      '--no-table-headers',
      'list_queues',
      '-p',
      vhost,
      'name',
      'type',
    ])
    return new Map(
      stdout
        .trim()
        .split('\n')
        .map((line) => line.split('\t') as [string, string]),
    )
  }

  before(async () => {
    vhosts.push(await createVhost('quorum'), await createVhost('mismatch'))
  })
  after(async () => {
    for (const service of services) await service.stop()
    await dropNamespace(namespace)
    for (const vhost of vhosts) await vhost.drop()
  })

  it('declares every queue, retry and dead-letter queues included, as a quorum queue', async () => {
    const [vhost] = vhosts
    const service = await start(vhost!, { QUEUE_TYPE: 'quorum', RETRY_MAX_ATTEMPTS: '3' })
    assert.ok(await service.transport.waitUntilReady(10_000))
    const types = await queueTypes(vhost!.name)
    assert.deepEqual([...types.keys()].sort(), [
      'bakery.baker',
      'bakery.baker.retry.100ms',
      'bakery.baker.retry.200ms',
      'bakery.dead-letter',
      'bakery.projector',
      'bakery.projector.retry.100ms',
      'bakery.projector.retry.200ms',
    ])
    assert.ok(
      [...types.values()].every((type) => type === 'quorum'),
      JSON.stringify([...types]),
    )
  })

  it('dead-letters a message whose consumers keep handing it back, past the delivery limit', async () => {
    const env = { QUEUE_TYPE: 'quorum', QUEUE_DELIVERY_LIMIT: '2' }
    // A queue of its own: the one of the first test was declared with the default limit.
    const other = await createVhost('delivery-limit')
    vhosts.push(other)
    const service = await start(other, env)
    assert.ok(await service.transport.waitUntilReady(10_000))
    const connection = await amqp.connect(other.url)
    try {
      const channel = await connection.createConfirmChannel()
      const command = PlaceOrder.create({
        orderKey: randomOrderKey(),
        customer: 'homer',
        pastry: 'donut',
        orderTime: timestamp(new Date()),
      })
      channel.publish('', queues.baker, Buffer.from(JSON.stringify(command)), {
        messageId: 'crashes-its-consumer',
        persistent: true,
      })
      await channel.waitForConfirms()
      // As a consumer that dies with the message in hand: it goes back, delivery after delivery.
      let deliveries = 0
      await waitFor('the message to leave the work queue', async () => {
        const message = await channel.get(queues.baker, { noAck: false })
        if (!message) return deliveries > 2
        deliveries++
        channel.nack(message, false, true)
        return false
      })
      assert.equal(deliveries, 3, 'delivered once, then twice more, then dead-lettered')
      const io = captureIo(namespace, { env: { AMQP_URL: other.url, ...env } })
      const letters = await waitFor('the dead letter', async () => {
        assert.equal(await runDeadLetters(['list', '--json'], io), 0, io.err())
        const found = JSON.parse(io.out().split('\n').at(-2) ?? '[]') as DeadLetter[]
        return found.length > 0 && found
      })
      assert.equal(letters.length, 1)
      assert.equal(letters[0]!.messageId, 'crashes-its-consumer')
      assert.equal(letters[0]!.queue, queues.baker, 'requeue sends it back where it failed')
      assert.equal(letters[0]!.reason, 'dead-lettered by RabbitMQ: delivery_limit')
    } finally {
      await connection.close()
    }
  })

  it('replaces a channel on which the broker refused a publish, and publishes through the new one', async () => {
    const other = await createVhost('refused')
    vhosts.push(other)
    const service = await start(other, { QUEUE_TYPE: 'quorum' })
    assert.ok(await service.transport.waitUntilReady(10_000))
    // A second queue bound to PlaceOrder that refuses everything: the publish is nacked.
    const connection = await amqp.connect(other.url)
    const channel = await connection.createChannel()
    await channel.assertQueue('full', {
      arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' },
    })
    await channel.bindQueue('full', PlaceOrder.$name, '')
    const command = PlaceOrder.create({
      orderKey: randomOrderKey(),
      customer: 'homer',
      pastry: 'donut',
      orderTime: timestamp(new Date()),
    })
    const connected = () =>
      lines.filter((l) => l.includes(other.name) && l.includes('topology declared'))
    await assert.rejects(service.bus.send(command), /message nacked/)
    await waitFor('a fresh connection', () => connected().length === 2)
    assert.ok(lines.some((l) => l.includes('RabbitMQ refused a publish; starting afresh')))
    await channel.unbindQueue('full', PlaceOrder.$name, '')
    await connection.close()
    assert.ok(await service.transport.waitUntilReady(10_000))
    await service.bus.send(command)
  })

  it('says in one line which queue is of the other type and what to do, and starts once it is gone', async () => {
    const vhost = vhosts[1]!
    const classic = await start(vhost, {})
    assert.ok(await classic.transport.waitUntilReady(10_000))
    await classic.stop()
    const service = await start(vhost, { QUEUE_TYPE: 'quorum' })
    const line = await waitFor('the mismatch to be logged', () =>
      lines.find((l) => l.includes('QUEUE_TYPE=quorum') && l.includes(vhost.name)),
    )
    const { msg, level } = JSON.parse(line) as { msg: string; level: number }
    assert.equal(level, 50)
    assert.equal(
      msg,
      `queue ${topology.deadLetterQueue} in vhost ${vhost.name} is a classic queue, but QUEUE_TYPE=quorum ` +
        "and RabbitMQ cannot change a queue's type: set QUEUE_TYPE=classic, or drain it and delete it " +
        `(rabbitmqctl delete_queue -p ${vhost.name} ${topology.deadLetterQueue}) so that it is declared anew - retrying`,
    )
    assert.equal(service.transport.isReady, false)
    // The operator deletes the classic queues; the role, still running, declares them anew.
    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createChannel()
    for (const name of (await queueTypes(vhost.name)).keys()) await channel.deleteQueue(name)
    await connection.close()
    assert.ok(await service.transport.waitUntilReady(15_000), 'ready without a restart')
    assert.ok([...(await queueTypes(vhost.name)).values()].every((type) => type === 'quorum'))
  })
})
