import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import {
  BakingStarted,
  OrderBaked,
  OrderPlaced,
  PlaceOrder,
  type OrderEvent,
  type OrderKey,
  type Timestamp,
} from '../src/messages'
import {
  decide,
  evolve,
  initialState,
  InvalidTransition,
  type BakerCommand,
  type OrderState,
} from '../src/baker/order'
import { fnv1a32, planBake } from '../src/baker/bake-time'
import { commandToResend } from '../src/baker/sweeper'

const orderKey = '0123456789abcdef0123456789abcdef' as OrderKey
const at = new Date('2026-11-27T10:00:00.000Z')
const placed = OrderPlaced.create({
  orderKey,
  customer: 'homer',
  pastry: 'la bombe',
  orderTime: '2026-11-27T09:59:59.000Z' as Timestamp,
})
const started = BakingStarted.create({
  orderKey,
  startedAt: '2026-11-27T10:00:00.000Z' as Timestamp,
})
const baked = OrderBaked.create({
  orderKey,
  bakedAt: '2026-11-27T10:00:00.065Z' as Timestamp,
  bakeMs: 65 as OrderBaked['bakeMs'],
  mistake: false,
})

/** given events, when a command is decided, then these events (or this error). */
const given = (...events: OrderEvent[]) => ({
  when: (command: BakerCommand) => ({
    then: (expected: OrderEvent[]) =>
      assert.deepEqual(decide(command, events.reduce(evolve, initialState)), expected),
    thenRejects: (pattern: RegExp) =>
      assert.throws(
        () => decide(command, events.reduce(evolve, initialState)),
        (error: unknown) => error instanceof InvalidTransition && pattern.test(error.message),
      ),
  }),
})

const startBaking: BakerCommand = { type: 'StartBaking', at }
const finishBaking: BakerCommand = {
  type: 'FinishBaking',
  at: new Date('2026-11-27T10:00:00.065Z'),
  bakeMs: 65,
  mistake: false,
}

describe('the baker decides', () => {
  it('to start baking a pending order', () => given(placed).when(startBaking).then([started]))
  it('nothing when asked to start an order already in the oven (a redelivered command)', () =>
    given(placed, started).when(startBaking).then([]))
  it('nothing when asked to start a finished order', () =>
    given(placed, started, baked).when(startBaking).then([]))
  it('to finish an order in the oven, recording the bake', () =>
    given(placed, started).when(finishBaking).then([baked]))
  it('nothing when asked to finish a finished order (another baker won)', () =>
    given(placed, started, baked).when(finishBaking).then([]))
  it('that an order not yet in the oven cannot be finished', () =>
    given(placed)
      .when(finishBaking)
      .thenRejects(/not in the oven/))
  it('that an order that does not exist cannot be baked', () =>
    given()
      .when(startBaking)
      .thenRejects(/no such order/))
})

describe('the order evolves', () => {
  it('pending -> baking -> finished', () => {
    const states = [placed, started, baked].reduce<OrderState[]>(
      (acc, event) => [...acc, evolve(acc[acc.length - 1]!, event)],
      [initialState],
    )
    assert.deepEqual(
      states.map((s) => s.status),
      ['none', 'pending', 'baking', 'finished'],
    )
  })
})

describe('the bake-time model of the original', () => {
  it('is FNV-1a 32-bit of the pastry name (published test vectors)', () => {
    assert.equal(fnv1a32(''), 0x811c9dc5)
    assert.equal(fnv1a32('a'), 0xe40c292c)
    assert.equal(fnv1a32('foobar'), 0xbf9cf968)
  })
  it('bakes for the hash modulo 100 ms, twice as long after a mistake, scaled', () => {
    assert.equal(fnv1a32('la bombe') % 100, 65)
    assert.deepEqual(planBake('la bombe', 0.5, 1), { onceMs: 65, mistake: false, totalMs: 65 })
    assert.deepEqual(planBake('la bombe', 0.05, 1), { onceMs: 65, mistake: true, totalMs: 130 })
    assert.deepEqual(planBake('la bombe', 0.5, 0), { onceMs: 65, mistake: false, totalMs: 0 })
    assert.equal(planBake('la bombe', 0.5, 0.5).totalMs, 33)
  })
  it('makes a mistake one time in ten', () => {
    assert.equal(planBake('x', 0.0999, 1).mistake, true)
    assert.equal(planBake('x', 0.1, 1).mistake, false)
  })
})

describe('the sweeper sends again', () => {
  const command = PlaceOrder.create({
    orderKey,
    customer: 'homer',
    pastry: 'la bombe',
    orderTime: placed.orderTime,
  })
  it("a pending order's PlaceOrder", () => assert.deepEqual(commandToResend([placed]), command))
  it('the PlaceOrder of an order left in the oven, so that it is finished', () =>
    assert.deepEqual(commandToResend([placed, started]), command))
  it('nothing for a finished order, nor for an order that does not exist', () => {
    assert.equal(commandToResend([placed, started, baked]), undefined)
    assert.equal(commandToResend([]), undefined)
  })
})
