import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { REDIS_URL, ROOT } from './support'

const run = promisify(execFile)

/**
 * `npm run bench` works from end to end: every system measured, every order it accepted
 * finished, every figure present, the ratios worked out, and nothing left behind. It asserts no
 * speed: the figures are in docs/performance.md, from full-length runs.
 */
describe('the benchmark, in miniature', () => {
  let dir: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bakery-bench-test-'))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  const bench = (...args: string[]) =>
    run(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--no-build', ...args], {
      cwd: ROOT,
      maxBuffer: 64 << 20,
      timeout: 240_000,
    })

  it('measures the baseline and Bakery with and without tracing, and cleans up', async () => {
    const leftovers = await benchLeftovers()
    const out = join(dir, 'first.json')
    const { stdout } = await bench('--duration', '2', '--out', out)
    const report = JSON.parse(readFileSync(out, 'utf8')) as Report
    assert.deepEqual(JSON.parse(stdout.trim().split('\n').at(-1)!), report, 'last line is --out')

    assert.deepEqual(Object.keys(report.runs).sort(), ['bakery', 'bakeryTraced', 'baseline'])
    for (const [name, figures] of Object.entries(report.runs)) {
      assert.ok(figures.accepted > 0, `${name} accepted orders`)
      assert.equal(figures.unfinished, 0, `${name} finished every accepted order`)
      for (const field of ['e2ePerS', 'postP99Ms', 'getPerS', 'cpuMsPerOrder'] as const)
        assert.ok(figures[field] > 0, `${name}.${field} = ${figures[field]}`)
      assert.ok(figures.halfSustained.rate >= 1 && figures.halfSustained.postP99Ms > 0)
      for (const [role, proc] of Object.entries(figures.processes))
        assert.ok(proc.peakRssMb > 0 && proc.cpuS > 0, `${name} ${role}: RSS and CPU`)
    }
    assert.deepEqual(Object.keys(report.runs.bakery!.processes).sort(), [
      'baker',
      'projector',
      'reception',
    ])
    assert.ok(report.runs.bakeryTraced!.spansExported!.bytes > 0, 'the OTLP sink got spans')
    assert.equal(report.runs.bakery!.spansExported, undefined, 'no spans with tracing off')

    const { bakery, baseline } = report.runs
    const ratio = bakery!.e2ePerS / baseline!.e2ePerS
    assert.ok(Math.abs(report.ratios.bakery!.e2ePerS! - ratio) < 0.01, 'end-to-end ratio')
    assert.ok(report.tracingCost !== undefined)
    assert.deepEqual(Object.keys(report.targets).sort(), [
      'e2eVsBaseline',
      'getVsBaseline',
      'postP99AtHalfSustainedVsBaseline',
      'rssEndMb',
      'tracingCost',
    ])
    assert.deepEqual(await benchLeftovers(), leftovers, 'no vhost or Redis key left behind')

    // A later run says how each figure changed against the saved one.
    const compared = await bench(
      '--duration',
      '1',
      '--no-baseline',
      '--tracing',
      'off',
      '--compare',
      out,
    )
    assert.match(compared.stdout, new RegExp(`change against the run of ${report.at}`))
    assert.match(compared.stdout, /runs\.bakery\.e2ePerS\s+[\d.]+ -> +[\d.]+ +[+-][\d.]+%/)
  })
})

interface Figures {
  readonly accepted: number
  readonly unfinished: number
  readonly e2ePerS: number
  readonly postP99Ms: number
  readonly getPerS: number
  readonly cpuMsPerOrder: number
  readonly halfSustained: { readonly rate: number; readonly postP99Ms: number }
  readonly processes: Record<string, { readonly peakRssMb: number; readonly cpuS: number }>
  readonly spansExported?: { readonly bytes: number }
}

interface Report {
  readonly at: string
  readonly runs: Record<string, Figures>
  readonly ratios: Record<string, Record<string, number>>
  readonly tracingCost?: number
  readonly targets: Record<string, { value: number; met: boolean }>
}

/** The bench's vhosts and Redis namespaces that exist now. */
async function benchLeftovers(): Promise<string[]> {
  const { stdout } = await run('rabbitmqctl', ['-q', '--no-table-headers', 'list_vhosts'])
  const vhosts = stdout.split('\n').filter((name) => name.includes('bench-'))
  const redis = new Redis(REDIS_URL)
  try {
    const keys = new Set<string>()
    let cursor = '0'
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', '{bench-*', 'COUNT', 1000)
      cursor = next
      for (const key of batch) keys.add(key.slice(0, key.indexOf('}') + 1))
    } while (cursor !== '0')
    return [...vhosts, ...keys].sort()
  } finally {
    redis.disconnect()
  }
}
