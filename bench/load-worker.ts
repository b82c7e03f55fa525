// The load generator of bench/run.ts, in a process of its own so that its CPU is not the
// measured services'. Takes one JSON argument (LoadPlan) and prints one JSON line (LoadResult)
// with the latencies it timed itself (autocannon's histogram rounds to ms). At saturation it
// drives autocannon; at a given rate it paces the requests itself (see `paced`).
import { readFileSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'

export interface LoadPlan {
  readonly url: string
  readonly connections: number
  readonly durationS: number
  /** POST orders for this customer name, or GET the order keys listed in the file. */
  readonly post?: { readonly customer: string }
  readonly getKeysFile?: string
  /** POSTs per second in all, evenly spaced; absent: as fast as the server answers. */
  readonly overallRate?: number
  /** Where to write the keys of the orders accepted (202), one per line. */
  readonly keysOut?: string
}

export interface LoadResult {
  readonly requests: number
  readonly ok: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly durationS: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

const PASTRIES = [
  'croissant',
  'baguette',
  'eclair',
  'brioche',
  'macaron',
  'kouign-amann',
  'la bombe',
]

export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? 0
}

const REQUEST_TIMEOUT_MS = 10_000

/**
 * POSTs at `overallRate` per second, one every 1/rate seconds, on at most `connections` kept-alive
 * connections. autocannon's own rate limit sends each connection's quota for the second as fast
 * as it can at the start of the second and then waits: a saturating burst once a second, not a
 * rate (a server that does nothing showed a 33 ms p99 at 300/s on 32 connections). A latency is
 * timed from when the request was made, not from when a connection was free to send it, so time
 * spent waiting behind slow responses counts (no coordinated omission).
 */
export async function paced(plan: LoadPlan & { overallRate: number }): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: plan.connections })
  const url = new URL('/orders', plan.url)
  const customer = plan.post?.customer ?? 'paced'
  const latencies: number[] = []
  const accepted: string[] = []
  const counts = { requests: 0, ok: 0, non2xx: 0, errors: 0, timeouts: 0 }
  const post = (body: string) =>
    new Promise<void>((resolve) => {
      const madeAt = performance.now()
      const req = request(
        url,
        { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => (text += chunk))
          res.on('end', () => {
            const orderKey = res.statusCode === 202 ? orderKeyIn(text) : undefined
            if (orderKey) {
              counts.ok += 1
              latencies.push(performance.now() - madeAt)
              accepted.push(orderKey)
            } else counts.non2xx += 1
            resolve()
          })
        },
      )
      let timedOut = false
      req.setTimeout(REQUEST_TIMEOUT_MS, () => {
        timedOut = true
        counts.timeouts += 1
        req.destroy()
      })
      req.on('error', () => {
        if (!timedOut) counts.errors += 1
        resolve()
      })
      req.end(body)
    })

  const interval = 1000 / plan.overallRate
  const start = performance.now()
  const end = start + plan.durationS * 1000
  const inFlight = new Set<Promise<void>>()
  while (performance.now() < end) {
    const due = Math.floor((performance.now() - start) / interval) + 1
    while (counts.requests < due) {
      const pastry = PASTRIES[counts.requests % PASTRIES.length]
      counts.requests += 1
      const sent = post(JSON.stringify({ customer, pastry }))
      inFlight.add(sent)
      void sent.then(() => inFlight.delete(sent))
    }
    await sleep(Math.max(0, start + counts.requests * interval - performance.now()))
  }
  await Promise.all(inFlight)
  agent.destroy()
  if (plan.keysOut) writeFileSync(plan.keysOut, accepted.join('\n'))
  return summarize(latencies, { ...counts, durationS: (performance.now() - start) / 1000 })
}

/** The key of an accepted order, from a 202's body; undefined if the body does not name one. */
function orderKeyIn(body: string): string | undefined {
  try {
    const key = (JSON.parse(body) as { orderKey?: unknown }).orderKey
    return typeof key === 'string' ? key : undefined
  } catch {
    return undefined
  }
}

function summarize(
  latencies: number[],
  counts: Omit<LoadResult, 'p50Ms' | 'p99Ms' | 'maxMs'>,
): LoadResult {
  const sorted = Float64Array.from(latencies).sort()
  return {
    ...counts,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted[sorted.length - 1] ?? 0,
  }
}

async function main(): Promise<void> {
  const plan = JSON.parse(process.argv[2] ?? '{}') as LoadPlan
  if (plan.overallRate) {
    if (!plan.post) throw new Error('a paced plan POSTs orders')
    const result = await paced({ ...plan, overallRate: plan.overallRate })
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return
  }
  let requests: autocannon.Request[]
  const accepted: string[] = []
  if (plan.post) {
    const customer = plan.post.customer
    requests = PASTRIES.map((pastry) => ({
      method: 'POST',
      path: '/orders',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ customer, pastry }),
      onResponse: (status: number, body: string) => {
        if (status === 202) accepted.push((JSON.parse(body) as { orderKey: string }).orderKey)
      },
    }))
  } else if (plan.getKeysFile) {
    const keys = readFileSync(plan.getKeysFile, 'utf8').split('\n').filter(Boolean)
    let next = 0
    requests = [
      {
        method: 'GET',
        setupRequest: (request) => ({
          ...request,
          path: `/orders/${keys[next++ % keys.length] ?? ''}`,
        }),
      },
    ]
  } else {
    throw new Error('a plan needs post or getKeysFile')
  }
  const latencies: number[] = []
  let resolveResult: (result: autocannon.Result) => void = () => {}
  let rejectResult: (error: Error) => void = () => {}
  const finished = new Promise<autocannon.Result>((resolve, reject) => {
    resolveResult = resolve
    rejectResult = reject
  })
  const instance = autocannon(
    {
      url: plan.url,
      connections: plan.connections,
      duration: plan.durationS,
      requests,
    },
    (error: Error | null, result: autocannon.Result) =>
      error ? rejectResult(error) : resolveResult(result),
  )
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime)
  })
  const result = await finished
  const summary = summarize(latencies, {
    requests: result.requests.total,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    durationS: result.duration,
  })
  if (plan.keysOut) writeFileSync(plan.keysOut, accepted.join('\n'))
  process.stdout.write(`${JSON.stringify(summary)}\n`)
}

if (require.main === module) void main()
