import { after, afterEach, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import { queues, topology } from '../src/wiring'
import {
  dropNamespace,
  startRole,
  waitFor,
  type RoleProcess,
  countFinished,
  driveOrders,
  isolatedBakery,
  isReady,
  orderKeysIn,
  orderProblems,
  placeOrders,
  REDIS_URL,
  receptionUrl,
} from './support'
import { whereStuck } from './support/faults'

const run = promisify(execFile)

/**
 * Stops and starts the RabbitMQ application of the shared broker. Every other test that uses
 * RabbitMQ at that moment fails, so these tests live in this one file, to be run on purpose
 * (CI runs its files one at a time). `start_app` always runs, even when the test fails.
 */
async function withBrokerStopped<T>(whileDown: () => Promise<T>): Promise<T> {
  await run('rabbitmqctl', ['-q', 'stop_app'])
  try {
    return await whileDown()
  } finally {
    await run('rabbitmqctl', ['-q', 'start_app'])
    await run('rabbitmqctl', ['-q', 'await_startup'])
  }
}

describe('RabbitMQ going away', () => {
  const redis = new Redis(REDIS_URL)
  const cleanups: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })
  after(() => redis.disconnect())

  /** The three roles in a vhost and namespace of their own; health ports of all three. */
  const bakery = async (label: string) => {
    const { vhost, namespace, env } = await isolatedBakery(label, { BAKE_TIME_SCALE: '0.2' })
    cleanups.push(
      () => dropNamespace(namespace),
      () => vhost.drop(),
    )
    const roles = await Promise.all(
      ['reception', 'baker', 'projector'].map((r) => startRole(r, env)),
    )
    for (const role of roles) cleanups.push(() => role.stop())
    const [reception, baker, projector] = roles as [RoleProcess, RoleProcess, RoleProcess]
    const base = receptionUrl(reception)
    // The reception's /readyz is on its API port; the others have a health port of their own.
    const ports = [reception.port!, baker.healthPort, projector.healthPort]
    const readiness = () => Promise.all(ports.map(isReady))
    const allReady = async () => (await readiness()).every((ready) => ready)
    // The reception can serve without the broker (its outbox holds the orders); the consumers cannot.
    const consumersNotReady = async () => {
      const [receptionReady, ...consumers] = await readiness()
      return receptionReady === true && consumers.every((ready) => !ready)
    }
    return { vhost, namespace, roles, base, allReady, consumersNotReady }
  }
  type Bakery = Awaited<ReturnType<typeof bakery>>

  /** Where the orders that have not finished are stuck, with what the broker's queues hold. */
  const stuck = async (b: Bakery, accepted: readonly string[]): Promise<string> => {
    const queued = await Promise.all(
      [...Object.values(queues), topology.deadLetterQueue].map(
        async (q) => `${q} ${JSON.stringify(await b.vhost.queue(q))}`,
      ),
    )
    return whereStuck(redis, b.namespace, b.roles, accepted, queued.join('; '))
  }

  /** Every order in the namespace, accepted or not, finished with exactly its three events. */
  const everyOrderFinishes = async (b: Bakery, accepted: readonly string[]) => {
    const { namespace } = b
    try {
      await waitFor(
        'every accepted order to finish',
        async () => (await countFinished(redis, namespace, accepted)) === accepted.length,
        { timeoutMs: 45_000, intervalMs: 250 },
      )
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${await stuck(b, accepted)}`)
    }
    const stored = await orderKeysIn(redis, namespace)
    assert.ok(accepted.every((order) => stored.includes(order)))
    await waitFor('the read model to be the fold of the streams', async () => {
      const problems = await orderProblems(redis, namespace, stored)
      if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
      return true
    })
  }

  it('restarts under load: every role reconnects by itself and every accepted order finishes', async () => {
    const b = await bakery('rabbit-restart')
    const { namespace, roles, base, allReady, consumersNotReady } = b
    const load = driveOrders(base, 4)
    try {
      await waitFor(
        'some orders to finish',
        async () => (await countFinished(redis, namespace, load.accepted)) >= 20,
      )
      await withBrokerStopped(async () => {
        await waitFor('the consumers to notice', consumersNotReady, { timeoutMs: 30_000 })
        const before = load.accepted.length
        // Orders keep being accepted while the broker is away.
        await waitFor(
          'orders accepted while RabbitMQ is down',
          () => load.accepted.length >= before + 20,
        )
      })
      await waitFor('every role to be ready again', allReady, {
        timeoutMs: 60_000,
        intervalMs: 250,
      })
      const after = load.accepted.length
      await waitFor('orders accepted after the restart', () => load.accepted.length >= after + 20)
    } finally {
      await load.stop()
    }
    assert.deepEqual(load.refused, [], 'nothing was refused: the reception needs only Redis')
    assert.ok(
      roles.every((role) => role.child.exitCode === null),
      'no role was restarted',
    )
    for (const role of roles) assert.match(role.output(), /RabbitMQ is back/)
    await everyOrderFinishes(b, load.accepted)
  })

  it('down while orders arrive: they are accepted into the outbox and delivered once it is back', async () => {
    const b = await bakery('rabbit-down')
    const { namespace, base, allReady, consumersNotReady } = b
    const k = keys(namespace)
    const accepted = await withBrokerStopped(async () => {
      await waitFor('the consumers to notice', consumersNotReady, { timeoutMs: 30_000 })
      const orders = await placeOrders(base, 50)
      // Read your writes, though nothing can be baked yet.
      for (const order of orders.slice(0, 5)) {
        const response = await fetch(`${base}/orders/${order}`)
        assert.equal(response.status, 200)
        assert.equal(((await response.json()) as { status: string }).status, 'pending')
      }
      assert.equal(
        await redis.xlen(k.partitions[0]!.outbox),
        50,
        'one PlaceOrder per order, waiting',
      )
      assert.equal(await countFinished(redis, namespace, orders), 0)
      return orders
    })
    await waitFor('every role to be ready again', allReady, { timeoutMs: 60_000, intervalMs: 250 })
    await everyOrderFinishes(b, accepted)
    await waitFor(
      'the outbox to be empty',
      async () => (await redis.xlen(k.partitions[0]!.outbox)) === 0,
    )
  })
})
