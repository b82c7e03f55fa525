import type { OrderEvent } from '../messages'
import { metrics } from '../platform/metrics'
import { PermanentFailure } from '../platform/errors'
import { annotate, Attr } from '../platform/tracing'
import { foldView } from './order-view'
import type { ViewStore } from './view-store'

export interface ProjectorDeps {
  readonly views: ViewStore
}

/**
 * Brings an order's view up to date with its stream. The event only says which order changed:
 * the view is folded forward from the stream, the truth, so a lost, repeated or reordered event
 * can never leave the read model different from the fold of the log. Reading the view and what
 * the stream holds after it is one round trip; a view already at the stream's end (the event was
 * folded in with an earlier one) costs nothing more.
 */
export async function projectOrder({ views }: ProjectorDeps, event: OrderEvent): Promise<void> {
  const { stored, behind } = await views.withTail(event.orderKey)
  const last = behind[behind.length - 1]
  if (!last) {
    annotate(() => ({ [Attr.eventsFolded]: 0, [Attr.viewVersion]: stored?.version ?? 0 }))
    if (stored) return
    throw new PermanentFailure(`order ${event.orderKey} has no history`)
  }
  const folded = foldView(behind, stored)
  if (!folded) throw new PermanentFailure(`order ${event.orderKey} has no OrderPlaced`)
  if (await views.save(event.orderKey, folded)) metrics.projected(last.recordedAt)
  annotate(() => ({ [Attr.eventsFolded]: behind.length, [Attr.viewVersion]: folded.version }))
}
