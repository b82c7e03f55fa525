import type { OrderEvent } from '../messages'
import type { EventStore } from '../platform/event-store'
import { metrics } from '../platform/metrics'
import { PermanentFailure } from '../platform/rabbitmq'
import { foldView } from './order-view'
import type { ViewStore } from './view-store'

export interface ProjectorDeps {
  readonly store: EventStore
  readonly views: ViewStore
}

/**
 * Brings an order's view up to date with its stream. The event only says which order changed:
 * the view is folded forward from the stream, the truth, so a lost, repeated or reordered event
 * can never leave the read model different from the fold of the log. A view already at the
 * stream's end (the event was folded in with an earlier one) costs a single read.
 */
export async function projectOrder(
  { store, views }: ProjectorDeps,
  event: OrderEvent,
): Promise<void> {
  const { stored, streamVersion } = await views.getAtStream(event.orderKey)
  if (streamVersion === 0) throw new PermanentFailure(`order ${event.orderKey} has no history`)
  if (stored && stored.version >= streamVersion) return
  const fresh = await store.read(event.orderKey, stored?.version ?? 0)
  const folded = foldView(fresh, stored)
  if (!folded) throw new PermanentFailure(`order ${event.orderKey} has no OrderPlaced`)
  const last = fresh[fresh.length - 1]
  if ((await views.save(event.orderKey, folded)) && last) metrics.projected(last.recordedAt)
}
