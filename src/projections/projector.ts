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
 * the view is refolded from the stream, the truth, so a lost, repeated or reordered event can
 * never leave the read model different from the fold of the log.
 */
export async function projectOrder(
  { store, views }: ProjectorDeps,
  event: OrderEvent,
): Promise<void> {
  const history = await store.read(event.orderKey)
  const folded = foldView(history)
  if (!folded) throw new PermanentFailure(`order ${event.orderKey} has no history`)
  const last = history[history.length - 1]
  if ((await views.save(event.orderKey, folded)) && last) metrics.projected(last.recordedAt)
}
