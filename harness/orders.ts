// Orders through the real HTTP API, and what the log and read model say of them afterwards.
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Redis } from 'ioredis'
import { decodeOrderEntry } from '../src/wiring'
import { keys } from '../src/platform/keys'
import { foldView } from '../src/projections/order-view'
import { viewHash } from '../src/projections/rebuild'

/** What the fault tests, the hostile-input test and the soak check an order's life against. */
export const LIFE = ['bakery/order-placed', 'bakery/baking-started', 'bakery/order-baked'] as const

/** Every order key with a stream in the namespace. */
export async function orderKeysIn(redis: Redis, namespace: string): Promise<string[]> {
  const prefix = keys(namespace).orderStream('')
  const found = new Set<string>()
  let cursor = '0'
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    for (const key of batch) found.add(key.slice(prefix.length))
  } while (cursor !== '0')
  return [...found]
}

/** How many of `orders` have all three events (pipelined, so it is cheap for thousands). */
export async function countFinished(
  redis: Redis,
  namespace: string,
  orders: readonly string[],
): Promise<number> {
  const k = keys(namespace)
  let finished = 0
  for (let i = 0; i < orders.length; i += 1000) {
    const pipeline = redis.pipeline()
    for (const order of orders.slice(i, i + 1000)) pipeline.xlen(k.orderStream(order))
    const replies = (await pipeline.exec()) ?? []
    for (const [error, length] of replies) if (!error && Number(length) >= LIFE.length) finished++
  }
  return finished
}

/**
 * What is wrong with `orders` (an empty list when nothing is): each must hold exactly placed,
 * started, baked at versions 1, 2, 3 (a duplicated or missing event is a problem), its read-model
 * hash must equal the fold of its stream, and the global log must hold exactly their events.
 */
export async function orderProblems(
  redis: Redis,
  namespace: string,
  orders: readonly string[],
  { expectedGlobal = orders.length * LIFE.length }: { expectedGlobal?: number } = {},
): Promise<string[]> {
  const k = keys(namespace)
  const problems: string[] = []
  for (let i = 0; i < orders.length; i += 500) {
    const slice = orders.slice(i, i + 500)
    const pipeline = redis.pipeline()
    for (const order of slice) {
      pipeline.xrange(k.orderStream(order), '-', '+')
      pipeline.hgetall(k.view(order))
    }
    const replies = (await pipeline.exec()) ?? []
    slice.forEach((order, j) => {
      const [streamError, entries] = replies[2 * j] ?? []
      const [viewError, view] = replies[2 * j + 1] ?? []
      if (streamError || viewError) {
        problems.push(`${order}: ${String(streamError ?? viewError)}`)
        return
      }
      const history = (entries as [string, string[]][]).map(([id, fields]) =>
        decodeOrderEntry(id, fields),
      )
      const life = history.map((e) => `${e.version}:${e.event.$name}`).join(' ')
      const expected = LIFE.map((name, v) => `${v + 1}:${name}`).join(' ')
      if (life !== expected) problems.push(`${order}: history is [${life}]`)
      const folded = foldView(history)
      const want = folded ? viewHash(folded) : {}
      const got = view as Record<string, string>
      if (JSON.stringify(sorted(want)) !== JSON.stringify(sorted(got)))
        problems.push(
          `${order}: read model ${JSON.stringify(got)} is not the fold ${JSON.stringify(want)}`,
        )
    })
  }
  const global = await redis.xlen(k.events)
  if (global !== expectedGlobal)
    problems.push(`the global log holds ${global} events, expected ${expectedGlobal}`)
  return problems
}

const sorted = (record: Record<string, string>) =>
  Object.fromEntries(Object.entries(record).sort(([a], [b]) => a.localeCompare(b)))

/** Places orders through the real HTTP API, `concurrency` at a time; keys of the 202s. */
export async function placeOrders(
  base: string,
  count: number,
  concurrency = 16,
  label = randomBytes(3).toString('hex'),
): Promise<string[]> {
  const accepted: string[] = []
  let next = 0
  const worker = async () => {
    while (next < count) {
      const i = next++
      const response = await fetch(`${base}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ customer: `customer ${label} ${i}`, pastry: `pastry ${i % 23}` }),
      })
      const body = (await response.json()) as { orderKey?: string }
      if (response.status === 202 && body.orderKey) accepted.push(body.orderKey)
      else throw new Error(`POST /orders answered ${response.status}: ${JSON.stringify(body)}`)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return accepted
}

/** Resident set size of a process, in kB, from /proc (Linux). */
export async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status)
  if (!match) throw new Error(`no VmRSS for ${pid}`)
  return Number(match[1])
}

/** Places one order; its key, or an error naming the answer when it was not a 202. */
export async function postOrder(
  base: string,
  body: unknown = { customer: 'homer', pastry: 'la bombe' },
): Promise<string> {
  const response = await fetch(`${base}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (response.status !== 202)
    throw new Error(`POST /orders answered ${response.status}: ${await response.text()}`)
  return ((await response.json()) as { orderKey: string }).orderKey
}

export interface Load {
  readonly accepted: string[]
  /** Statuses other than 202, with the content type they came with. */
  readonly refused: { status: number; type: string | null }[]
  readonly stop: () => Promise<void>
}

/**
 * Keeps placing orders, `concurrency` at a time, each worker pausing `pauseMs` after each answer,
 * until stopped; records what was answered.
 */
export function driveOrders(base: string, concurrency = 4, pauseMs = 0): Load {
  const accepted: string[] = []
  const refused: Load['refused'] = []
  let stopping = false
  let i = 0
  const worker = async () => {
    while (!stopping) {
      const n = i++
      let status = 0
      try {
        const response = await fetch(`${base}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ customer: `load ${n}`, pastry: `pastry ${n % 23}` }),
          signal: AbortSignal.timeout(10_000),
        })
        status = response.status
        const body = (await response.json()) as { orderKey?: string }
        if (status === 202 && body.orderKey) accepted.push(body.orderKey)
        else refused.push({ status, type: response.headers.get('content-type') })
      } catch {
        refused.push({ status, type: null })
      }
      // Refusals come back at once: do not spin on them.
      const pause = status === 202 ? pauseMs : Math.max(pauseMs, 20)
      if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause))
    }
  }
  const workers = Promise.all(Array.from({ length: concurrency }, worker))
  return {
    accepted,
    refused,
    stop: async () => {
      stopping = true
      await workers
    },
  }
}
