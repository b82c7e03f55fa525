import type * as t from 'io-ts'
import { Redis } from 'ioredis'
import {
  BakingStarted,
  OrderBaked,
  OrderPlaced,
  NonNegativeInt,
  type OrderEvent,
  type OrderKey,
  type Timestamp,
} from '../../src/messages'
import { orderEventStore } from '../../src/wiring'
import { keys, type Keys } from '../../src/platform/keys'
import { projectOrder } from '../../src/projections/projector'
import type { ToolIo } from '../../src/tools/tool'
import { ViewStore } from '../../src/projections/view-store'
import { randomOrderKey } from '../../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace } from '.'
import { withScripts } from '../../src/platform/scripts'

/** A namespace's event store and read model, on a connection of its own. */
export function bakery(namespace: string, now?: () => Date) {
  const redis = withScripts(new Redis(REDIS_URL))
  const k: Keys = keys(namespace)
  const store = orderEventStore(redis, k, now)
  const views = new ViewStore(redis, k)
  return { redis, keys: k, store, views, close: () => redis.disconnect() }
}
export type Bakery = ReturnType<typeof bakery>

/** Fresh namespaces for one test file, each with connections of its own; `cleanUp` in `after`. */
export function namespaceFactory() {
  const namespaces: string[] = []
  const opened: Bakery[] = []
  /** Another connection to a namespace, closed with the rest. */
  const open = (namespace: string) => {
    const b = bakery(namespace)
    opened.push(b)
    return b
  }
  return {
    fresh: (label: string) => {
      const namespace = uniqueNamespace(label)
      namespaces.push(namespace)
      return { namespace, b: open(namespace) }
    },
    open,
    cleanUp: async () => {
      for (const b of opened) b.close()
      for (const namespace of namespaces) await dropNamespace(namespace)
    },
  }
}

const at = (ms: number) => new Date(ms).toISOString() as Timestamp

/** The three events of an order's life, as the reception and the baker record them. */
export const lifecycle = {
  placed: (orderKey: OrderKey, customer = 'homer', pastry = 'la bombe', ms = Date.now()) =>
    OrderPlaced.create({ orderKey, customer, pastry, orderTime: at(ms) }),
  started: (orderKey: OrderKey, ms = Date.now()) =>
    BakingStarted.create({ orderKey, startedAt: at(ms) }),
  baked: (orderKey: OrderKey, bakeMs = 42, mistake = false, ms = Date.now()) =>
    OrderBaked.create({
      orderKey,
      bakedAt: at(ms),
      bakeMs: bakeMs as t.TypeOf<typeof NonNegativeInt>,
      mistake,
    }),
}

/** Appends the next event of an order and projects it, as the projector would on delivery. */
export async function record(b: Bakery, event: OrderEvent, project = true): Promise<void> {
  const version = await b.store.version(event.orderKey)
  await b.store.append(event.orderKey, version, [event], [])
  if (project) await projectOrder(b, event)
}

/** Places `count` orders and takes each one `steps` events far (1 placed .. 3 baked). */
export async function seedOrders(b: Bakery, count: number, steps = 3): Promise<OrderKey[]> {
  const orders = Array.from({ length: count }, () => randomOrderKey())
  for (const orderKey of orders) {
    await record(b, lifecycle.placed(orderKey))
    if (steps >= 2) await record(b, lifecycle.started(orderKey))
    if (steps >= 3) await record(b, lifecycle.baked(orderKey))
  }
  return orders
}

export interface CapturedIo extends ToolIo {
  readonly out: () => string
  readonly err: () => string
}

/** Tool surroundings that capture what a command prints. */
export function captureIo(
  namespace: string,
  {
    tty = false,
    signal,
    env = {},
  }: { tty?: boolean; signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {},
): CapturedIo {
  let out = ''
  let err = ''
  return {
    stdout: { write: (s: string) => (out += s), isTTY: tty },
    stderr: { write: (s: string) => (err += s), isTTY: tty },
    env: { REDIS_URL, BAKERY_NAMESPACE: namespace, ...env },
    ...(signal ? { signal } : {}),
    out: () => out,
    err: () => err,
  }
}

/** A tool bound to a namespace and environment: each call runs it with captured output. */
export const toolRunner =
  (
    run: (argv: readonly string[], io: ToolIo) => Promise<number>,
    namespace: string,
    env: () => NodeJS.ProcessEnv,
  ) =>
  async (...argv: string[]) => {
    const io = captureIo(namespace, { env: env() })
    const code = await run(argv, io)
    return { code, out: io.out(), err: io.err() }
  }
