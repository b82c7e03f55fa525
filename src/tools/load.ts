import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'

/**
 * `bakery load`: places orders through reception's public API the way clients would, waits for
 * them to be baked, and reports what those clients saw. The cluster's load-test Job runs it.
 */

const USAGE = `Usage: bakery load [--url URL] [--orders N] [--concurrency N] [--timeout SECONDS]

  --url          reception to drive (default http://localhost:8000)
  --orders       orders to place (default 100)
  --concurrency  requests in flight at once (default 10)
  --timeout      seconds to wait for the accepted orders to be finished (default 60)`

const PASTRIES = ['croissant', 'baguette', 'eclair', 'brioche', 'macaron', 'kouign-amann']
// A hung reception must not hang the run: it shows up as failed requests instead.
const REQUEST_TIMEOUT_MS = 10_000
const POLL_INTERVAL_MS = 250

interface Options {
  readonly url: URL
  readonly orders: number
  readonly concurrency: number
  readonly timeoutMs: number
}

type Placed =
  | { readonly ok: true; readonly orderKey: string; readonly ms: number }
  | { readonly ok: false; readonly reason: string; readonly ms: number }

/**
 * Runs the load and prints a summary. `argv` holds the arguments after `load`. Resolves to the
 * exit code: 0 when every order was accepted and finished, 1 otherwise, 2 for bad arguments.
 */
export async function runLoad(argv: readonly string[]): Promise<number> {
  const options = parseOptions(argv)
  if (typeof options === 'string') {
    console.error(`${options}\n\n${USAGE}`)
    return 2
  }
  const { url, orders, concurrency, timeoutMs } = options
  console.log(`Placing ${orders} orders at ${url.origin} with ${concurrency} in flight`)

  const run = Date.now().toString(36)
  const started = performance.now()
  const placed: Placed[] = []
  await forEachConcurrently(range(orders), concurrency, async (i) => {
    placed.push(await placeOrder(url, `load-${run}-${i}`, PASTRIES[i % PASTRIES.length] ?? ''))
  })
  const placedAt = performance.now()

  let pending = placed.flatMap((p) => (p.ok ? [p.orderKey] : []))
  const accepted = pending.length
  let lastFinishedAt = placedAt
  const deadline = placedAt + timeoutMs
  while (pending.length > 0 && performance.now() < deadline) {
    const stillPending: string[] = []
    await forEachConcurrently(pending, concurrency, async (orderKey) => {
      if (await isFinished(url, orderKey)) lastFinishedAt = performance.now()
      else stillPending.push(orderKey)
    })
    pending = stillPending
    if (pending.length > 0) await sleep(POLL_INTERVAL_MS)
  }

  const finished = accepted - pending.length
  const latencies = placed.map((p) => p.ms).sort((a, b) => a - b)
  const failures = placed.flatMap((p) => (p.ok ? [] : [p.reason]))
  console.log(
    [
      `accepted    ${accepted} of ${orders} (${failures.length} failed)`,
      `finished    ${finished} (${pending.length} not finished within ${timeoutMs / 1000} s)`,
      `throughput  ${perSecond(accepted, placedAt - started)} orders/s placed, ` +
        `${perSecond(finished, lastFinishedAt - started)} orders/s finished`,
      `POST        p50 ${percentile(latencies, 0.5).toFixed(1)} ms, ` +
        `p99 ${percentile(latencies, 0.99).toFixed(1)} ms`,
      ...(failures.length > 0 ? [`first failure: ${failures[0]}`] : []),
    ].join('\n'),
  )
  return failures.length === 0 && pending.length === 0 ? 0 : 1
}

function parseOptions(argv: readonly string[]): Options | string {
  let values: { url: string; orders: string; concurrency: string; timeout: string }
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        url: { type: 'string', default: 'http://localhost:8000' },
        orders: { type: 'string', default: '100' },
        concurrency: { type: 'string', default: '10' },
        timeout: { type: 'string', default: '60' },
      },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (error) {
    return describe(error)
  }
  if (!URL.canParse(values.url)) return `--url ${JSON.stringify(values.url)} is not a URL`
  const orders = positiveInteger(values.orders)
  const concurrency = positiveInteger(values.concurrency)
  const timeout = positiveInteger(values.timeout)
  if (orders === undefined) return `--orders must be a positive integer, not ${values.orders}`
  if (concurrency === undefined) {
    return `--concurrency must be a positive integer, not ${values.concurrency}`
  }
  if (timeout === undefined) return `--timeout must be a positive integer, not ${values.timeout}`
  return { url: new URL(values.url), orders, concurrency, timeoutMs: timeout * 1000 }
}

function positiveInteger(text: string): number | undefined {
  const n = /^\d+$/.test(text) ? Number(text) : NaN
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

async function placeOrder(base: URL, customer: string, pastry: string): Promise<Placed> {
  const started = performance.now()
  const elapsed = () => performance.now() - started
  try {
    const response = await fetch(new URL('/orders', base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ customer, pastry }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    })
    const body: unknown = await response.json().catch(() => undefined)
    const ms = elapsed()
    if (response.status !== 202) return { ok: false, reason: `HTTP ${response.status}`, ms }
    const orderKey = field(body, 'orderKey')
    if (typeof orderKey !== 'string') return { ok: false, reason: '202 without an orderKey', ms }
    return { ok: true, orderKey, ms }
  } catch (error) {
    return { ok: false, reason: describe(error), ms: elapsed() }
  }
}

async function isFinished(base: URL, orderKey: string): Promise<boolean> {
  try {
    const response = await fetch(new URL(`/orders/${encodeURIComponent(orderKey)}`, base), {
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    })
    // A 404 or an error is asked again next round: the read model may not have caught up yet.
    if (!response.ok) return false
    return field(await response.json(), 'status') === 'finished'
  } catch {
    return false
  }
}

/** fetch reports "fetch failed" and keeps the useful part, such as ECONNREFUSED, in `cause`. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  return error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message
}

function field(value: unknown, name: string): unknown {
  return typeof value === 'object' && value !== null
    ? (value as Record<string, unknown>)[name]
    : undefined
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight. */
async function forEachConcurrently<T>(
  items: Iterable<T>,
  concurrency: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  // One iterator shared by all workers: each item is taken by exactly one of them.
  const queue = items[Symbol.iterator]()
  const worker = async () => {
    for (let next = queue.next(); next.done !== true; next = queue.next()) await fn(next.value)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

function* range(n: number): Generator<number> {
  for (let i = 0; i < n; i++) yield i
}

/** Nearest-rank percentile of ascending `sorted`; 0 when there is nothing to rank. */
function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? 0
}

function perSecond(count: number, ms: number): string {
  return ms > 0 ? ((count * 1000) / ms).toFixed(1) : '0.0'
}
