// Orders through the real HTTP API, and what the log and read model say of them afterwards.
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { decodeOrderEntry } from '../src/wiring'
import { keys, type Keys } from '../src/platform/keys'
import type { RedisClient } from '../src/platform/redis'
import { forEachScan } from '../src/projections/generations'
import { foldView } from '../src/projections/order-view'
import { viewHash } from '../src/projections/rebuild'

/** What the fault tests, the hostile-input test and the soak check an order's life against. */
export const LIFE = ['bakery/order-placed', 'bakery/baking-started', 'bakery/order-baked'] as const

/** A store: a one-partition namespace by its name, or the keys of any. */
export type Store = string | Keys

const keysOf = (store: Store) => (typeof store === 'string' ? keys(store) : store)

/**
 * `orders` grouped by partition, at most `size` at a time: one pipeline may only name keys of one
 * slot on a Redis Cluster.
 */
function* slices(k: Keys, orders: readonly string[], size: number) {
  const byPartition = Map.groupBy(orders, (order) => k.of(order).index)
  for (const group of byPartition.values())
    for (let i = 0; i < group.length; i += size) yield group.slice(i, i + size)
}

/** Every order key with a stream in the store. */
export async function orderKeysIn(redis: RedisClient, store: Store): Promise<string[]> {
  const found = new Set<string>()
  for (const partition of keysOf(store).partitions) {
    const prefix = partition.orderStream('')
    await forEachScan(redis, `${prefix}*`, async (batch) => {
      for (const key of batch) found.add(key.slice(prefix.length))
    })
  }
  return [...found]
}

/** How many of `orders` have all three events (pipelined, so it is cheap for thousands). */
export async function countFinished(
  redis: RedisClient,
  store: Store,
  orders: readonly string[],
): Promise<number> {
  const k = keysOf(store)
  let finished = 0
  for (const slice of slices(k, orders, 1000)) {
    const pipeline = redis.pipeline()
    for (const order of slice) pipeline.xlen(k.orderStream(order))
    const replies = (await pipeline.exec()) ?? []
    for (const [error, length] of replies) if (!error && Number(length) >= LIFE.length) finished++
  }
  return finished
}

/**
 * What is wrong with `orders` (an empty list when nothing is): each must hold exactly placed,
 * started, baked at versions 1, 2, 3 (a duplicated or missing event is a problem), its read-model
 * hash must equal the fold of its stream, and the global logs must hold exactly their events.
 */
export async function orderProblems(
  redis: RedisClient,
  store: Store,
  orders: readonly string[],
  { expectedGlobal = orders.length * LIFE.length }: { expectedGlobal?: number } = {},
): Promise<string[]> {
  const k = keysOf(store)
  const problems: string[] = []
  for (const slice of slices(k, orders, 500)) {
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
  const lengths = await Promise.all(k.partitions.map((partition) => redis.xlen(partition.events)))
  const global = lengths.reduce((sum, length) => sum + length, 0)
  if (global !== expectedGlobal)
    problems.push(`the global logs hold ${global} events, expected ${expectedGlobal}`)
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
