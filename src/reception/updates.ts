import { PassThrough } from 'node:stream'
import type { Context } from 'koa'
import type { OrderKey } from '../messages'
import type { OrderEventStore, StoredOrderEvent } from '../wiring'
import { metrics } from '../platform/metrics'
import { evolveView, foldView, type VersionedView } from '../projections/order-view'
import type { OrderUpdates } from './order-feed'
import { problems } from './problem'

export interface UpdatesDeps {
  readonly store: OrderEventStore
  readonly feed: OrderUpdates
  /** Interval of the comment lines that keep an idle stream open through proxies. */
  readonly heartbeatMs: number
  readonly limits: StreamLimits
}

/**
 * Caps on update streams, so that one client cannot hold a reception's memory and sockets: how
 * many a client address may have open at once (SSE_MAX_STREAMS_PER_CLIENT), and how long one
 * stays open (SSE_MAX_STREAM_SECONDS; the client then reconnects with Last-Event-ID).
 */
export class StreamLimits {
  private readonly open = new Map<string, number>()

  constructor(
    readonly perClient: number,
    readonly lifetimeMs: number,
  ) {}

  /** Whether `client` may open another stream. */
  allows(client: string): boolean {
    return (this.open.get(client) ?? 0) < this.perClient
  }

  /** Counts a stream of `client` until the returned function is called (once). */
  take(client: string): () => void {
    this.open.set(client, (this.open.get(client) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = (this.open.get(client) ?? 1) - 1
      if (left > 0) this.open.set(client, left)
      else this.open.delete(client)
    }
  }
}

/** How long an EventSource waits before reconnecting, in ms (sent as the stream's `retry`). */
const RECONNECT_MS = 1000

/** One Server-Sent Event: the order as GET answers it, with its version as the id. */
export const formatUpdate = ({ view, version }: VersionedView): string =>
  `id: ${version}\ndata: ${JSON.stringify(view)}\n\n`

/**
 * Answers `GET /orders/:key/updates`: the order's state at once, then each change, then the
 * stream closes once the order is finished. `Last-Event-ID` (the version the client has) skips
 * what the client already has; a client that has the finished order gets 204, which tells an
 * EventSource to stop reconnecting. Returns false when there is no such order.
 */
export async function streamUpdates(
  ctx: Context,
  deps: UpdatesDeps,
  orderKey: OrderKey,
): Promise<boolean> {
  const client = ctx.ip
  if (!deps.limits.allows(client)) throw problems.tooManyStreams(deps.limits.perClient)
  const history = await deps.store.read(orderKey)
  let current = foldView(history)
  if (!current) return false
  const seen = lastEventId(ctx.get('last-event-id'))
  const upToDate = seen === current.version
  if (upToDate && current.view.status === 'finished') {
    ctx.status = 204
    return true
  }

  const body = new PassThrough()
  ctx.status = 200
  ctx.type = 'text/event-stream; charset=utf-8'
  ctx.set({ 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no' })
  ctx.body = body
  body.write(`retry: ${RECONNECT_MS}\n\n`)
  if (!upToDate) body.write(formatUpdate(current))
  if (current.view.status === 'finished') {
    body.end()
    return true
  }

  metrics.updateStreamOpened()
  const release = deps.limits.take(client)
  const heartbeat = setInterval(() => body.write(': heartbeat\n\n'), deps.heartbeatMs)
  // Past its lifetime the stream ends; the client reconnects and carries on from Last-Event-ID.
  const lifetime = setTimeout(() => finish(), deps.limits.lifetimeMs)
  const finish = () => {
    clearInterval(heartbeat)
    clearTimeout(lifetime)
    unsubscribe()
    release()
    if (!body.writableEnded) body.end()
  }
  const unsubscribe = deps.feed.subscribe(orderKey, current.version, {
    deliver: (events: readonly StoredOrderEvent[]) => {
      for (const { event, version } of events) {
        if (!current || version <= current.version) continue
        const view = evolveView(current.view, event)
        if (!view) continue
        current = { view, version }
        body.write(formatUpdate(current))
      }
      if (current?.view.status === 'finished') finish()
    },
    end: finish,
  })
  ctx.res.once('close', () => {
    metrics.updateStreamClosed()
    finish()
  })
  return true
}

function lastEventId(header: string): number | undefined {
  return /^\d{1,15}$/.test(header.trim()) ? Number(header.trim()) : undefined
}
