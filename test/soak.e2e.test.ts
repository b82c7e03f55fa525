import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { ROOT } from './support'

const run = promisify(execFile)

/**
 * The soak of bench/soak.ts, run as the script it is, small enough for the suite: the full run's
 * figures are in the docs.
 */
describe('a short soak', () => {
  it('2,000 orders at full speed: every one finished once, the read model is the fold', async () => {
    const args = ['--import', 'tsx', 'bench/soak.ts', '--orders', '2000', '--concurrency', '32']
    const { stdout } = await run(process.execPath, [...args, '--json'], {
      cwd: ROOT,
      timeout: 300_000,
    })
    const result = JSON.parse(stdout) as { orders: number; accepted: number; problems: string[] }
    console.log(`# ${JSON.stringify(result)}`)
    assert.equal(result.orders, 2000)
    assert.equal(result.accepted, 2000)
    assert.deepEqual(result.problems, [])
  })
})
