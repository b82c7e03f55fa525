import * as t from 'io-ts'
import { assertNever, isAnnounced, Name, Timestamp, type OrderEvent } from '../messages'

export const OrderStatus = t.keyof({ pending: null, baking: null, finished: null })
export type OrderStatus = t.TypeOf<typeof OrderStatus>

/** What `GET /orders/:key` answers, compatible with the original Bakery. */
export const OrderView = t.exact(
  t.type({
    pastry: Name,
    customer: Name,
    orderTime: Timestamp,
    status: OrderStatus,
  }),
)
export type OrderView = t.TypeOf<typeof OrderView>

/** The read model keeps the version of the last event folded in, to stay idempotent. */
export interface VersionedView {
  readonly view: OrderView
  readonly version: number
}

/** Folds one event into the view; a view cannot exist before its order was placed. */
export function evolveView(
  current: OrderView | undefined,
  event: OrderEvent,
): OrderView | undefined {
  switch (event.$name) {
    case 'bakery/order-placed':
      return {
        pastry: event.pastry,
        customer: event.customer,
        orderTime: event.orderTime,
        status: 'pending',
      }
    case 'bakery/baking-started':
      return current && { ...current, status: 'baking' }
    case 'bakery/order-baked':
      return current && { ...current, status: 'finished' }
    default:
      return assertNever(event)
  }
}

/** The view of a whole history, or undefined when there is no order in it. */
export function foldView(
  events: readonly { readonly event: OrderEvent; readonly version: number }[],
  from?: VersionedView,
): VersionedView | undefined {
  let view: OrderView | undefined = from?.view
  let version = from?.version ?? 0
  for (const entry of events) {
    view = evolveView(view, entry.event)
    version = entry.version
  }
  return view && { view, version }
}

/**
 * Whether the read model is written when this event is appended: OrderPlaced's view by the
 * reception's append itself, OrderBaked's by the projector it is announced to. BakingStarted is
 * not: a stored view may lag behind the log by such events, and whoever reads it folds them in
 * (GET /orders/:key, `bakery replay --verify`).
 */
export const writesView = (event: OrderEvent): boolean =>
  event.$name === 'bakery/order-placed' || isAnnounced(event)
