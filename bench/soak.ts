// A bounded soak: the three roles as real processes (BAKE_TIME_SCALE=0) in a fresh namespace and
// vhost, orders driven through the HTTP API as fast as the machine takes them, then the check that
// every accepted order finished with exactly its three events and the read model is the fold of
// the streams. Build first (`npm run build`), then:
//   npx tsx bench/soak.ts [--orders 20000] [--concurrency 64] [--json]
// With --json it prints the result as one JSON object (what test/soak.e2e.test.ts reads).
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import {
  countFinished,
  dropNamespace,
  isolatedBakery,
  orderProblems,
  REDIS_URL,
  rssKb,
  startPipeline,
  waitFor,
  type RoleProcess,
} from '../harness'

export interface SoakOptions {
  readonly orders: number
  readonly concurrency: number
  readonly log?: (line: string) => void
}

export interface SoakResult {
  readonly orders: number
  readonly accepted: number
  readonly refused: number
  readonly acceptSeconds: number
  readonly acceptedPerSecond: number
  readonly postP50Ms: number
  readonly postP99Ms: number
  /** From the last 202 until every accepted order had its three events. */
  readonly drainSeconds: number
  /** From the last 202 until the read model was the fold of the streams. */
  readonly foldedSeconds: number
  readonly peakRssMb: Record<string, number>
  readonly problems: string[]
}

export async function soak({
  orders,
  concurrency,
  log = () => {},
}: SoakOptions): Promise<SoakResult> {
  const redis = new Redis(REDIS_URL)
  const { vhost, namespace, env } = await isolatedBakery('soak', { PREFETCH: '64' })
  const roles: RoleProcess[] = []
  const peak: Record<string, number> = {}
  const sampler = setInterval(() => {
    for (const [i, name] of ['reception', 'baker', 'projector'].entries()) {
      const pid = roles[i]?.child.pid
      if (pid)
        void rssKb(pid).then(
          (kb) => (peak[name] = Math.max(peak[name] ?? 0, kb / 1024)),
          () => undefined,
        )
    }
  }, 250)
  try {
    const base = await startPipeline(env, roles)
    log(
      `soak: ${orders} orders, ${concurrency} in flight, namespace ${namespace}, vhost ${vhost.name}`,
    )

    const accepted: string[] = []
    const latencies: number[] = []
    let refused = 0
    let next = 0
    const started = performance.now()
    const worker = async () => {
      while (next < orders) {
        const i = next++
        const sent = performance.now()
        try {
          const response = await fetch(`${base}/orders`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ customer: `soak ${i}`, pastry: `pastry ${i % 50}` }),
          })
          const body = (await response.json()) as { orderKey?: string }
          latencies.push(performance.now() - sent)
          if (response.status === 202 && body.orderKey) accepted.push(body.orderKey)
          else refused++
        } catch {
          refused++
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    const lastAccepted = performance.now()
    const acceptSeconds = (lastAccepted - started) / 1000
    log(`accepted ${accepted.length} (refused ${refused}) in ${acceptSeconds.toFixed(1)} s`)

    await waitFor(
      'every accepted order to finish',
      async () => (await countFinished(redis, namespace, accepted)) === accepted.length,
      { timeoutMs: 600_000, intervalMs: 500 },
    )
    const drainSeconds = (performance.now() - lastAccepted) / 1000
    log(`every order finished ${drainSeconds.toFixed(1)} s after the last 202`)
    let problems: string[] = []
    await waitFor(
      'the read model to be the fold of the streams',
      async () => {
        problems = await orderProblems(redis, namespace, accepted)
        return problems.length === 0
      },
      { timeoutMs: 120_000, intervalMs: 1000 },
    ).catch(() => undefined)
    const foldedSeconds = (performance.now() - lastAccepted) / 1000
    latencies.sort((a, b) => a - b)
    const at = (q: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0
    return {
      orders,
      accepted: accepted.length,
      refused,
      acceptSeconds,
      acceptedPerSecond: accepted.length / acceptSeconds,
      postP50Ms: at(0.5),
      postP99Ms: at(0.99),
      drainSeconds,
      foldedSeconds,
      peakRssMb: peak,
      problems,
    }
  } finally {
    clearInterval(sampler)
    await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
    redis.disconnect()
  }
}

export function formatSoak(r: SoakResult): string {
  const rss = Object.entries(r.peakRssMb)
    .map(([role, mb]) => `${role} ${mb.toFixed(0)} MB`)
    .join(', ')
  return [
    `orders placed        ${r.orders} (accepted ${r.accepted}, refused ${r.refused})`,
    `accepting took       ${r.acceptSeconds.toFixed(1)} s = ${r.acceptedPerSecond.toFixed(0)} accepted/s`,
    `POST latency         p50 ${r.postP50Ms.toFixed(1)} ms, p99 ${r.postP99Ms.toFixed(1)} ms`,
    `all finished         ${r.drainSeconds.toFixed(1)} s after the last 202`,
    `read model = fold    ${r.foldedSeconds.toFixed(1)} s after the last 202`,
    `peak RSS             ${rss}`,
    `problems             ${r.problems.length === 0 ? 'none' : r.problems.slice(0, 10).join('\n  ')}`,
  ].join('\n')
}

if (require.main === module) {
  const { values } = parseArgs({
    options: {
      orders: { type: 'string', default: '20000' },
      concurrency: { type: 'string', default: '64' },
      json: { type: 'boolean', default: false },
    },
  })
  soak({
    orders: Number(values.orders),
    concurrency: Number(values.concurrency),
    log: (line) => (values.json ? console.error(line) : console.log(line)),
  }).then(
    (result) => {
      console.log(values.json ? JSON.stringify(result) : formatSoak(result))
      if (result.problems.length > 0 || result.accepted !== result.orders) process.exitCode = 1
    },
    (error: unknown) => {
      console.error(error)
      process.exitCode = 1
    },
  )
}
