import { after, afterEach, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import { RELAY_GROUP } from '../src/platform/outbox-relay'
import {
  dropNamespace,
  freePort,
  startRole,
  waitFor,
  type RoleProcess,
  type StartOptions,
  countFinished,
  isolatedBakery,
  orderProblems,
  placeOrders,
  REDIS_URL,
  receptionUrl,
} from './support'

/**
 * Guarantee 1 against one process dying at the worst moment: kill -9 (no shutdown hook runs),
 * then only what the platform does by itself may bring every accepted order to `finished`.
 */
describe('a process killed with SIGKILL', () => {
  const redis = new Redis(REDIS_URL)
  const cleanups: (() => Promise<unknown>)[] = []
  const started = async (
    role: string,
    env: Record<string, string>,
    until?: StartOptions['until'],
  ) => {
    const process_ = await startRole(role, env, { until })
    cleanups.push(() => process_.stop('SIGKILL'))
    return process_
  }
  const kill = async (role: RoleProcess) => {
    role.child.kill('SIGKILL')
    await role.exited
  }
  const isolated = async (label: string, extra?: Record<string, string>) => {
    const bakery = await isolatedBakery(label, extra)
    cleanups.push(
      () => dropNamespace(bakery.namespace),
      () => bakery.vhost.drop(),
    )
    return bakery
  }

  afterEach(async () => {
    // Processes first (last started, first stopped), then their namespace and vhost.
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })
  after(() => redis.disconnect())

  it('baker killed mid-bake: another baker finishes every order, no event twice', async () => {
    // Bakes of up to ~2 s (4 s after a mistake), so the kill lands while orders are in the oven.
    const { namespace, env } = await isolated('kill-baker', { BAKE_TIME_SCALE: '20' })
    const [reception, baker] = await Promise.all([
      started('reception', env),
      started('baker', env),
      started('projector', env),
    ])
    const base = receptionUrl(reception)
    const orders = await placeOrders(base, 40)
    const k = keys(namespace)
    const inOven = async () => {
      const lengths = await Promise.all(orders.map((o) => redis.xlen(k.orderStream(o))))
      return lengths.filter((length) => length === 2).length
    }
    await waitFor('orders in the oven', async () => (await inOven()) >= 5, { timeoutMs: 20_000 })
    await kill(baker)
    const stranded = await inOven()
    assert.ok(stranded > 0, 'the kill left orders half-baked')

    await started('baker', env)
    await waitFor(
      'every order to finish',
      async () => (await countFinished(redis, namespace, orders)) === 40,
      {
        timeoutMs: 60_000,
        intervalMs: 200,
      },
    )
    await waitFor('the read model to be the fold of the streams', async () => {
      const problems = await orderProblems(redis, namespace, orders)
      if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
      return true
    })
  })

  it('projector killed: once restarted, the read model catches up with the streams', async () => {
    const { namespace, env } = await isolated('kill-projector')
    const [reception, , projector] = await Promise.all([
      started('reception', env),
      started('baker', env),
      started('projector', env),
    ])
    const base = receptionUrl(reception)
    const k = keys(namespace)
    const first = await placeOrders(base, 100)
    await waitFor(
      'the projector to have folded some orders',
      async () => (await redis.exists(k.view(first[0]!))) === 1,
    )
    await kill(projector)
    const second = await placeOrders(base, 100)
    const all = [...first, ...second]
    await waitFor(
      'the baker to finish every order',
      async () => (await countFinished(redis, namespace, all)) === 200,
      {
        timeoutMs: 30_000,
      },
    )
    const behind = await Promise.all(second.map((o) => redis.hget(k.view(o), 'status')))
    assert.ok(
      behind.every((status) => status !== 'finished'),
      'without a projector, the read model did not see the new orders finish',
    )

    await started('projector', env)
    await waitFor(
      'the read model to be the fold of the streams',
      async () => {
        const problems = await orderProblems(redis, namespace, all)
        if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
        return true
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    )
  })

  it('reception killed holding unsent orders: the baker relay takes them over', async () => {
    const { namespace, env } = await isolated('kill-reception', { RELAY_CLAIM_AFTER_MS: '1500' })
    const k = keys(namespace)
    // This reception cannot reach RabbitMQ, so its relay keeps every outbox entry it read, in
    // hand and unconfirmed: the worst moment to die.
    const unreachable = `amqp://guest:guest@127.0.0.1:${await freePort()}`
    const reception = await started('reception', { ...env, AMQP_URL: unreachable }, 'ready')
    const base = receptionUrl(reception)
    const orders = await placeOrders(base, 50)
    // Its relay read what was in the outbox when it first looked and keeps retrying just those.
    const inHand = await waitFor('the reception relay to hold outbox entries', async () => {
      const [pending] = (await redis.xpending(k.partitions[0]!.outbox, RELAY_GROUP)) as [number]
      return pending > 0 && pending
    })
    assert.equal(await redis.xlen(k.partitions[0]!.outbox), 50, 'one PlaceOrder per order')
    await kill(reception)

    const [baker] = await Promise.all([started('baker', env), started('projector', env)])
    await waitFor(
      'every order to finish',
      async () => (await countFinished(redis, namespace, orders)) === 50,
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    await waitFor('the read model to be the fold of the streams', async () => {
      const problems = await orderProblems(redis, namespace, orders)
      if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
      return true
    })
    await waitFor(
      'the outbox to be empty',
      async () => (await redis.xlen(k.partitions[0]!.outbox)) === 0,
    )
    assert.match(baker.output(), /took over entries of a relay that stopped/, `${inHand} in hand`)
  })
})
