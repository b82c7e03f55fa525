// The load generator of bench/run.ts, in a process of its own so that its CPU is not the
// measured services'. Takes one JSON argument (LoadPlan), drives autocannon, and prints one JSON
// line (LoadResult) with the latencies it timed itself (autocannon's histogram rounds to ms).
import { readFileSync, writeFileSync } from 'node:fs'
import autocannon from 'autocannon'

export interface LoadPlan {
  readonly url: string
  readonly connections: number
  readonly durationS: number
  /** POST orders for this customer name, or GET the order keys listed in the file. */
  readonly post?: { readonly customer: string }
  readonly getKeysFile?: string
  /** Requests per second in all; absent: as fast as the server answers. */
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

async function main(): Promise<void> {
  const plan = JSON.parse(process.argv[2] ?? '{}') as LoadPlan
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
      ...(plan.overallRate ? { overallRate: plan.overallRate } : {}),
    },
    (error: Error | null, result: autocannon.Result) =>
      error ? rejectResult(error) : resolveResult(result),
  )
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime)
  })
  const result = await finished
  const sorted = Float64Array.from(latencies).sort()
  const summary: LoadResult = {
    requests: result.requests.total,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    durationS: result.duration,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted[sorted.length - 1] ?? 0,
  }
  if (plan.keysOut) writeFileSync(plan.keysOut, accepted.join('\n'))
  process.stdout.write(`${JSON.stringify(summary)}\n`)
}

if (require.main === module) void main()
