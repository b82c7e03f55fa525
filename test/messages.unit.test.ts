import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { isLeft, isRight } from 'fp-ts/lib/Either'
import { Name, NAME_MAX_LENGTH, OrderEvent, PlaceOrder } from '../src/messages'
import { OrderRequest } from '../src/reception/orders'
import { foldView } from '../src/projections/order-view'
import { loadConfig, ConfigError } from '../src/platform/config'

describe('message contracts', () => {
  const command = {
    $name: 'bakery/place-order',
    $version: 1,
    orderKey: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    customer: 'homer',
    pastry: 'la bombe',
    orderTime: '2026-11-27T10:00:00.000Z',
  }
  it('decode a valid PlaceOrder and drop fields the contract does not name', () => {
    const decoded = PlaceOrder.codec.decode({ ...command, admin: true })
    assert.ok(isRight(decoded))
    assert.deepEqual(decoded.right, command)
  })
  it('reject a wrong $version, a bad key and a non-UTC time', () => {
    assert.ok(isLeft(PlaceOrder.codec.decode({ ...command, $version: 2 })))
    assert.ok(isLeft(PlaceOrder.codec.decode({ ...command, orderKey: 'ABC' })))
    assert.ok(
      isLeft(PlaceOrder.codec.decode({ ...command, orderTime: '2026-11-27T10:00:00+01:00' })),
    )
  })
  it('tell events apart by $name', () => {
    assert.ok(isLeft(OrderEvent.decode(command)))
  })
})

describe('names a customer writes', () => {
  const decode = (u: unknown) => Name.decode(u)
  it('are trimmed', () => assert.deepEqual(decode('  homer '), { _tag: 'Right', right: 'homer' }))
  it('must not be empty, blank, too long or hold control characters', () => {
    for (const bad of ['', '   ', 'x'.repeat(NAME_MAX_LENGTH + 1), 'a\u0000b', 'a\nb', 42, null])
      assert.ok(isLeft(decode(bad)), JSON.stringify(bad))
  })
  it('must not hold bidirectional overrides or isolates, which can make a name read backwards', () => {
    const bidi = [
      '\u202a',
      '\u202b',
      '\u202c',
      '\u202d',
      '\u202e',
      '\u2066',
      '\u2067',
      '\u2068',
      '\u2069',
    ]
    for (const mark of bidi) {
      const decoded = decode(`evil${mark}gpj.exe`)
      assert.ok(isLeft(decoded), JSON.stringify(mark))
      assert.match(String(decoded.left[0]?.message), /bidirectional/)
    }
    // Right-to-left scripts themselves are fine.
    assert.ok(isRight(decode('כנאפה')))
    assert.ok(isRight(decode('بقلاوة')))
  })
  it('count characters, not UTF-16 units', () =>
    assert.ok(isRight(decode('🥐'.repeat(NAME_MAX_LENGTH)))))
  it('an order request keeps only customer and pastry', () => {
    const decoded = OrderRequest.decode({
      customer: 'homer',
      pastry: 'donut',
      __proto__: { x: 1 },
      status: 'finished',
    })
    assert.ok(isRight(decoded))
    assert.deepEqual(Object.keys(decoded.right).sort(), ['customer', 'pastry'])
  })
})

describe('the read model fold', () => {
  it('is empty for an empty history', () => assert.equal(foldView([]), undefined))
})

describe('configuration', () => {
  it('has defaults for everything', () => {
    const config = loadConfig({})
    assert.equal(config.PORT, 8000)
    assert.equal(config.REDIS_URL.href, 'redis://127.0.0.1:6379')
    assert.equal(config.BAKE_TIME_SCALE, 1)
  })
  it('names every bad variable', () => {
    assert.throws(
      () => loadConfig({ PORT: 'eighty', BAKE_TIME_SCALE: '-1', REDIS_URL: 'http://x' }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.problems.length === 3 &&
        /PORT="eighty"/.test(error.message) &&
        /BAKE_TIME_SCALE/.test(error.message) &&
        /REDIS_URL/.test(error.message),
    )
  })
})
