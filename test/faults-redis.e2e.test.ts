import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import {
  createVhost,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
  countFinished,
  driveOrders,
  orderKeysIn,
  orderProblems,
  receptionUrl,
} from './support'
import { OwnRedis } from './support/own-redis'

describe('Redis restarting', () => {
  let redisServer: OwnRedis
  let client: Redis
  let vhost: Awaited<ReturnType<typeof createVhost>>
  const roles: RoleProcess[] = []
  const namespace = uniqueNamespace('redis-restart')

  before(async () => {
    redisServer = await OwnRedis.start()
    client = new Redis(redisServer.url)
    client.on('error', () => undefined)
    vhost = await createVhost('redis-restart')
  })

  after(async () => {
    await Promise.all(roles.map((role) => role.stop('SIGKILL')))
    client?.disconnect()
    await redisServer?.remove()
    await vhost?.drop()
  })

  it('POST answers 503 problem+json while it is down; afterwards no accepted order is lost', async () => {
    const env = {
      AMQP_URL: vhost.url,
      REDIS_URL: redisServer.url,
      BAKERY_NAMESPACE: namespace,
      PORT: '0',
      HEALTH_PORT: '0',
      OTEL_SDK_DISABLED: 'true',
      BAKE_TIME_SCALE: '0.2',
    }
    roles.push(
      ...(await Promise.all(['reception', 'baker', 'projector'].map((r) => startRole(r, env)))),
    )
    const base = receptionUrl(roles[0]!)
    const load = driveOrders(base, 4)
    let whileDown: Response | undefined
    try {
      await waitFor('orders to be accepted', () => load.accepted.length >= 50)
      await redisServer.down()
      const acceptedBefore = load.accepted.length
      whileDown = await fetch(`${base}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ customer: 'homer', pastry: 'donut' }),
      })
      await waitFor('the load to be refused', () => load.refused.length >= 20)
      await redisServer.up()
      await waitFor(
        'orders to be accepted again',
        () => load.accepted.length >= acceptedBefore + 50,
        {
          timeoutMs: 30_000,
        },
      )
    } finally {
      await load.stop()
      await redisServer.up().catch(() => undefined)
    }

    assert.equal(whileDown.status, 503)
    assert.match(whileDown.headers.get('content-type') ?? '', /^application\/problem\+json/)
    assert.equal(whileDown.headers.get('retry-after'), '1')
    const problem = (await whileDown.json()) as { status: number; title: string }
    assert.equal(problem.status, 503)
    assert.equal(problem.title, 'Service Unavailable')
    for (const { status, type } of load.refused) {
      assert.equal(status, 503)
      assert.match(type ?? '', /^application\/problem\+json/)
    }
    assert.ok(
      roles.every((role) => role.child.exitCode === null),
      'no role was restarted',
    )
    // Each role reconnects on its own backoff, which may end after the reception's.
    for (const role of roles)
      await waitFor('every role to log that Redis is back', () =>
        /Redis is back/.test(role.output()),
      )

    await waitFor(
      'every accepted order to finish',
      async () => (await countFinished(client, namespace, load.accepted)) === load.accepted.length,
      { timeoutMs: 45_000, intervalMs: 250 },
    )
    // A request cut off mid-append may have stored its order though it was answered 503: every
    // stored order, accepted or not, must finish exactly once.
    const stored = await orderKeysIn(client, namespace)
    assert.ok(load.accepted.every((order) => stored.includes(order)))
    await waitFor('every stored order to finish and be folded', async () => {
      const problems = await orderProblems(client, namespace, stored)
      if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
      return true
    })
  })
})
