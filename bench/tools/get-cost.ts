// What one GET /orders/:key costs: CPU microseconds of the reception and of Redis per request,
// counted rather than timed. The three roles run (steady.ts); --orders orders are placed at a
// steady rate and left to finish; then the load generator (bench/load-worker.ts, a process of
// its own) GETs them at random as fast as they are answered, on --connections connections, for
// --seconds, while the reception's CPU (/proc) and Redis's (INFO cpu, main thread) are read
// before and after. With --tracing every request is traced and exported to a sink (otlp-sink.ts).
//   npx tsx bench/tools/get-cost.ts [--orders 3000] [--seconds 10] [--connections 32] [--tracing]
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { ROOT, REDIS_URL, waitFor } from '../../harness'
import { roleNodeOptions } from '../../src/platform/heap'
import { paced, type LoadResult } from '../load-worker'
import { sampleProcess } from '../procstat'
import { withRoles } from './steady'

const run = promisify(execFile)
const { values } = parseArgs({
  options: {
    orders: { type: 'string', default: '3000' },
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    tracing: { type: 'boolean', default: false },
  },
})

/** Redis's main thread CPU seconds so far. */
async function redisCpuS(redis: Redis): Promise<number> {
  const info = await redis.info('cpu')
  const read = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1])
  return read('used_cpu_user_main_thread') + read('used_cpu_sys_main_thread')
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'bakery-get-cost-'))
  const redis = new Redis(REDIS_URL)
  try {
    await withRoles(
      'get-cost',
      roleNodeOptions(),
      async ({ url, processes }) => {
        const keysFile = join(work, 'keys')
        const orders = Number(values.orders)
        await paced({
          url,
          connections: 16,
          durationS: Math.ceil(orders / 500),
          post: { customer: 'get-cost' },
          overallRate: 500,
          keysOut: keysFile,
        })
        const keys = readFileSync(keysFile, 'utf8').split('\n').filter(Boolean)
        const last = keys.at(-1)!
        await waitFor('the orders to finish', async () => {
          const response = await fetch(`${url}/orders/${last}`)
          return (
            response.ok && ((await response.json()) as { status: string }).status === 'finished'
          )
        })
        const reception = processes.find(([name]) => name === 'reception')![1].child.pid!
        const cpuBefore = sampleProcess(reception)!.cpuS
        const redisBefore = await redisCpuS(redis)
        const plan = {
          url,
          connections: Number(values.connections),
          durationS: Number(values.seconds),
          getKeysFile: keysFile,
        }
        const { stdout } = await run(
          process.execPath,
          ['--import', 'tsx', join(ROOT, 'bench', 'load-worker.ts'), JSON.stringify(plan)],
          { cwd: ROOT },
        )
        const result = JSON.parse(stdout.trim().split('\n').pop()!) as LoadResult
        const receptionUs = ((sampleProcess(reception)!.cpuS - cpuBefore) * 1e6) / result.ok
        const redisUs = (((await redisCpuS(redis)) - redisBefore) * 1e6) / result.ok
        const perS = result.ok / result.durationS
        console.log(
          `get-cost: ${result.ok} GETs in ${result.durationS} s (${perS.toFixed(0)}/s, ` +
            `${result.non2xx + result.errors} failed), p99 ${result.p99Ms.toFixed(1)} ms\n` +
            `CPU µs per GET: reception ${receptionUs.toFixed(1)}, Redis ${redisUs.toFixed(1)}`,
        )
        console.log(
          JSON.stringify({
            bench: 'get-cost',
            at: new Date().toISOString(),
            tracing: values.tracing,
            getsPerS: Math.round(perS),
            receptionUsPerGet: Number(receptionUs.toFixed(1)),
            redisUsPerGet: Number(redisUs.toFixed(1)),
          }),
        )
      },
      { tracing: values.tracing },
    )
  } finally {
    redis.disconnect()
    rmSync(work, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 1
})
