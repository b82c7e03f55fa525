import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { OrderKey } from '../src/messages'
import { randomOrderKey } from '../src/reception/orders'
import {
  dropNamespace,
  startRole,
  waitFor,
  type RoleProcess,
  isolatedBakery,
  LIFE,
} from './support'
import { bakery, lifecycle } from './support/replay'

/** The value of an unlabelled counter in a Prometheus text exposition (0 if absent). */
const counter = (text: string, name: string) =>
  Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0)

/**
 * Orders whose command was lost (a Redis crash losing its last second, a message lost on the
 * way) have nothing to move them on. The bakers' sweeper finds them and sends their PlaceOrder
 * again; two bakers sweep without a leader and send each one once.
 */
describe('orders stuck pending or baking', () => {
  const roles: RoleProcess[] = []
  const cleanups: (() => Promise<unknown>)[] = []
  after(async () => {
    for (const role of roles) await role.stop()
    for (const cleanup of cleanups) await cleanup()
  })

  it('are sent again by the sweeper, once, and finish', async () => {
    const { vhost, namespace, env } = await isolatedBakery('sweeper', {
      STUCK_ORDER_AFTER_MS: '2000',
    })
    const b = bakery(namespace)
    cleanups.push(
      async () => b.close(),
      () => dropNamespace(namespace),
      () => vhost.drop(),
    )
    // Both bakers at work first: a command sent again is then baked at once, well before it could
    // be due a second time.
    roles.push(await startRole('baker', env), await startRole('baker', env))
    // Appended as the reception and a baker would, but with no outbox entry: the command is lost.
    const pending = randomOrderKey()
    const baking = randomOrderKey()
    const finished = randomOrderKey()
    await b.store.append(pending, 0, [lifecycle.placed(pending)], [])
    await b.store.append(baking, 0, [lifecycle.placed(baking), lifecycle.started(baking)], [])
    await b.store.append(finished, 0, [lifecycle.placed(finished)], [])
    await b.store.append(finished, 1, [lifecycle.started(finished), lifecycle.baked(finished)], [])

    const history = async (order: OrderKey) => (await b.store.read(order)).map((e) => e.event.$name)
    await waitFor(
      'the stuck orders to finish',
      async () => (await history(pending)).length === 3 && (await history(baking)).length === 3,
      { timeoutMs: 20_000 },
    )
    for (const order of [pending, baking, finished]) assert.deepEqual(await history(order), LIFE)

    const resent = await Promise.all(
      roles.map(async (role) => {
        const port = role.healthPort
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
        return counter(text, 'bakery_orders_resent_total')
      }),
    )
    assert.equal(
      resent[0]! + resent[1]!,
      2,
      `each stuck order sent once, by one of the two bakers (they say ${resent.join(' and ')}):\n` +
        roles.map((role) => role.output()).join('\n'),
    )
    assert.equal(await b.redis.xlen(b.keys.partitions[0]!.outbox), 0)
  })
})
