// Does a role's memory grow under steady load? Runs the three roles for --minutes at a steady
// --rate of orders (well under saturation, so the backlog stays empty) and samples each role's
// RSS every --every seconds. At the end it prints each role's CPU seconds and the POST latency,
// so that two heaps can be compared at the same load: --node-options replaces the roles' own
// (src/platform/heap.ts).
//   npx tsx bench/tools/memory.ts --minutes 5 --rate 400
//   npx tsx bench/tools/memory.ts --minutes 2 --rate 150 '--node-options=--max-semi-space-size=1'
import { parseArgs } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { paced } from '../load-worker'
import { sampleProcess } from '../procstat'
import { roleNodeOptions } from '../../src/platform/heap'
import { withRoles } from './steady'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    rate: { type: 'string', default: '400' },
    every: { type: 'string', default: '30' },
    'node-options': { type: 'string', default: roleNodeOptions() },
  },
})
const minutes = Number(values.minutes)
const rate = Number(values.rate)
const everyS = Number(values.every)

async function main(): Promise<void> {
  await withRoles('memory', values['node-options'], async ({ url, processes: roles }) => {
    const durationS = minutes * 60
    // One order every 1/rate seconds: a steady load, not a burst once a second.
    const load = paced({
      url,
      connections: 16,
      durationS,
      post: { customer: 'homer' },
      overallRate: rate,
    })
    const samples: Record<string, number[]> = {}
    const cpuAtStart = roles.map(([, role]) => sampleProcess(role.child.pid!)?.cpuS ?? NaN)
    const started = Date.now()
    console.log(`memory: ${minutes} min at ${rate} orders/s; RSS MB every ${everyS} s`)
    console.log(`NODE_OPTIONS=${values['node-options']}`)
    console.log(['t (s)', ...roles.map(([name]) => name)].join('\t'))
    while (Date.now() - started < durationS * 1000) {
      await sleep(everyS * 1000)
      const row = [String(Math.round((Date.now() - started) / 1000))]
      for (const [name, role] of roles) {
        const rss = sampleProcess(role.child.pid!)?.rssMb ?? NaN
        ;(samples[name] ??= []).push(rss)
        row.push(rss.toFixed(1))
      }
      console.log(row.join('\t'))
    }
    const result = await load
    const cpuS = Object.fromEntries(
      roles.map(([name, role], i) => [
        name,
        Number(((sampleProcess(role.child.pid!)?.cpuS ?? NaN) - cpuAtStart[i]!).toFixed(2)),
      ]),
    )
    const postMs = { p50: Number(result.p50Ms.toFixed(1)), p99: Number(result.p99Ms.toFixed(1)) }
    console.log(`posted ${result.requests} orders, ${result.non2xx + result.errors} not accepted`)
    console.log(`POST p50 ${postMs.p50} ms, p99 ${postMs.p99} ms; CPU s: ${JSON.stringify(cpuS)}`)
    // Growth: the mean of the last third of samples against the mean of the second third (the
    // first third is warm-up, while V8 sizes its heap).
    const summary: Record<string, { secondThirdMb: number; lastThirdMb: number }> = {}
    for (const [name, rss] of Object.entries(samples)) {
      const third = Math.max(1, Math.floor(rss.length / 3))
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
      summary[name] = {
        secondThirdMb: Number(mean(rss.slice(third, 2 * third)).toFixed(1)),
        lastThirdMb: Number(mean(rss.slice(-third)).toFixed(1)),
      }
    }
    const nodeOptions = values['node-options']
    console.log(
      JSON.stringify({ bench: 'memory', minutes, rate, nodeOptions, summary, cpuS, postMs }),
    )
  })
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
