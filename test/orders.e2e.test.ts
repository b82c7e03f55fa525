import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { orderEventStore } from '../src/wiring'
import { keys } from '../src/platform/keys'
import type { OrderKey } from '../src/messages'
import {
  createVhost,
  isolatedEnv,
  dropNamespace,
  postOrder,
  REDIS_URL,
  ROOT,
  startPipeline,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from './support'
import { withScripts } from '../src/platform/scripts'

/** The three roles as real processes, started the way the README says. */
describe('an order, end to end across reception, baker and projector', () => {
  const namespace = uniqueNamespace('e2e')
  const redis = withScripts(new Redis(REDIS_URL))
  const store = orderEventStore(redis, keys(namespace))
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let base = ''

  before(async () => {
    vhost = await createVhost('e2e')
    const env = isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0.1' })
    base = await startPipeline(env, roles)
  })

  after(async () => {
    const codes = await Promise.all(roles.map((role) => role.stop()))
    redis.disconnect()
    await dropNamespace(namespace)
    await vhost.drop()
    assert.deepEqual(codes, [0, 0, 0], 'every role exits 0 on SIGTERM')
  })

  it('200 concurrent orders all finish, each with exactly its three events', async () => {
    const keys_ = (await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        postOrder(base, { customer: `customer ${i}`, pastry: `pastry ${i % 17}` }),
      ),
    )) as OrderKey[]
    assert.equal(new Set(keys_).size, 200)

    await waitFor(
      'every order to be finished',
      async () => {
        const statuses = await Promise.all(
          keys_.map(
            async (key) =>
              ((await (await fetch(`${base}/orders/${key}`)).json()) as { status: string }).status,
          ),
        )
        return statuses.every((status) => status === 'finished')
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    )

    for (const [i, key] of keys_.entries()) {
      const history = await store.read(key)
      assert.deepEqual(
        history.map((e) => [e.version, e.event.$name]),
        [
          [1, 'bakery/order-placed'],
          [2, 'bakery/baking-started'],
          [3, 'bakery/order-baked'],
        ],
      )
      const view = (await (await fetch(`${base}/orders/${key}`)).json()) as Record<string, string>
      assert.equal(view.customer, `customer ${i}`)
      assert.equal(view.pastry, `pastry ${i % 17}`)
      assert.match(view.orderTime!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    }
    const global = await redis.xlen(keys(namespace).partitions[0]!.events)
    assert.equal(global, 600, 'the global log holds each event once')
    const readModel = await Promise.all(
      keys_.map((key) => redis.hget(keys(namespace).view(key), 'status')),
    )
    assert.ok(
      readModel.every((status) => status === 'finished'),
      'the read model itself is finished',
    )
  })

  it('bakery load drives orders into the reception and reports them all finished', () => {
    const result = spawnSync(
      process.execPath,
      [
        join(ROOT, 'bin', 'bakery.js'),
        'load',
        '--url',
        base,
        '--orders',
        '30',
        '--concurrency',
        '5',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    )
    assert.equal(result.status, 0, result.stdout + result.stderr)
    assert.match(result.stdout, /accepted +30 of 30 \(0 failed\)/)
    assert.match(result.stdout, /finished +30 \(0 not finished/)
    const bad = spawnSync(
      process.execPath,
      [join(ROOT, 'bin', 'bakery.js'), 'load', '--orders', 'many'],
      {
        encoding: 'utf8',
      },
    )
    assert.equal(bad.status, 2, 'bad arguments exit 2')
  })
})

/**
 * An order seen in the oven: a bake long enough (a croissant takes half a second at this scale)
 * that the first GET after the 202 comes before it ends, however busy the machine is.
 */
describe('an order seen through GET while it bakes', () => {
  const namespace = uniqueNamespace('e2e-slow')
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let base = ''

  before(async () => {
    vhost = await createVhost('e2e-slow')
    base = await startPipeline(isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '5' }), roles)
  })

  after(async () => {
    const codes = await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
    assert.deepEqual(codes, [0, 0, 0], 'every role exits 0 on SIGTERM')
  })

  it('goes pending -> baking -> finished as seen through GET', async () => {
    const key = await postOrder(base, { customer: 'homer', pastry: 'croissant' })
    const seen: string[] = []
    await waitFor(
      'the order to finish',
      async () => {
        const { status } = (await (await fetch(`${base}/orders/${key}`)).json()) as {
          status: string
        }
        if (seen[seen.length - 1] !== status) seen.push(status)
        return status === 'finished'
      },
      { intervalMs: 5 },
    )
    // The baker may have taken it already: what matters is that it is there, never a 404.
    assert.ok(seen[0] === 'pending' || seen[0] === 'baking', `first seen: ${seen[0]}`)
    assert.ok(seen.includes('baking'), `seen: ${seen.join(' -> ')}`)
    assert.equal(seen[seen.length - 1], 'finished')
    const order = ['pending', 'baking', 'finished']
    assert.deepEqual(
      [...seen].sort((a, b) => order.indexOf(a) - order.indexOf(b)),
      seen,
      'never backwards',
    )
  })
})
