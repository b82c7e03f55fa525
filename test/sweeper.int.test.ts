import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { Sweeper } from '../src/baker/sweeper'
import { randomOrderKey } from '../src/reception/orders'
import { lifecycle, namespaceFactory } from './support/replay'

/** Sweeps of two bakers that overlap (a lease that ran out) must still send an order once. */
describe('the sweeper without a leader', () => {
  const namespaces = namespaceFactory()
  after(namespaces.cleanUp)

  it('sends a stuck order once when two sweeps run at the same time', async () => {
    const { b } = namespaces.fresh('sweeper-overlap')
    const stuckAfterMs = 1000
    const sweeper = () =>
      new Sweeper({
        redis: b.redis,
        store: b.store,
        logger: pino({ level: 'silent' }),
        stuckAfterMs,
      })
    const [one, two] = [sweeper(), sweeper()]
    const orders = [randomOrderKey(), randomOrderKey(), randomOrderKey()]
    for (const order of orders) await b.store.append(order, 0, [lifecycle.placed(order)], [])
    await one.index()
    const due = Date.now() + stuckAfterMs
    const sent = await Promise.all([one.resendDue(due), two.resendDue(due)])
    assert.equal(sent[0] + sent[1], 3, `the two sweeps sent ${sent.join(' and ')}`)
    assert.equal(await b.redis.xlen(b.keys.partitions[0]!.outbox), 3, 'one PlaceOrder per order')
    // Not due again until another STUCK_ORDER_AFTER_MS has passed.
    assert.equal(await one.resendDue(due + stuckAfterMs - 1), 0)
    assert.equal(await two.resendDue(due + stuckAfterMs), 3)
  })
})
