import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { formatSoak, soak } from '../bench/soak'

/** The soak of bench/soak.ts, small enough for the suite: the full run's figures are in docs. */
describe('a short soak', () => {
  it('2,000 orders at full speed: every one finished once, the read model is the fold', async () => {
    const result = await soak({ orders: 2000, concurrency: 32 })
    console.log(formatSoak(result).replace(/^/gm, '# '))
    assert.equal(result.accepted, 2000)
    assert.deepEqual(result.problems, [])
  })
})
