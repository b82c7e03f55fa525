import * as t from 'io-ts'
import { assertNever, defineMessage, type MessageOf } from './define'
import { Name, NonNegativeInt, OrderKey, Timestamp } from './fields'

export * from './define'
export * from './field-errors'
export * from './fields'

/** Reception hands an accepted order to the bakery; the baker handles it. */
export const PlaceOrder = defineMessage('command', 'bakery/place-order', 1, {
  orderKey: OrderKey,
  customer: Name,
  pastry: Name,
  orderTime: Timestamp,
})
export type PlaceOrder = MessageOf<typeof PlaceOrder>

/**
 * The order was accepted at reception: status `pending`. A fact of the log only: the reception's
 * append writes the pending view with it, so nothing needs it on the bus.
 */
export const OrderPlaced = defineMessage('event', 'bakery/order-placed', 1, {
  orderKey: OrderKey,
  customer: Name,
  pastry: Name,
  orderTime: Timestamp,
})
export type OrderPlaced = MessageOf<typeof OrderPlaced>

/**
 * A baker took the order: status `baking`. A fact of the log only: GET folds it in while the
 * read model waits for OrderBaked, and the live updates read it from the order's stream.
 */
export const BakingStarted = defineMessage('event', 'bakery/baking-started', 1, {
  orderKey: OrderKey,
  startedAt: Timestamp,
})
export type BakingStarted = MessageOf<typeof BakingStarted>

/** The pastry is out of the oven: status `finished`. On the bus: the projector folds the order. */
export const OrderBaked = defineMessage('event', 'bakery/order-baked', 1, {
  orderKey: OrderKey,
  bakedAt: Timestamp,
  /** Time spent in the oven, in ms, including a second bake after a mistake. */
  bakeMs: NonNegativeInt,
  /** The baker made a mistake and baked the pastry twice. */
  mistake: t.boolean,
})
export type OrderBaked = MessageOf<typeof OrderBaked>

export const orderEvents = [OrderPlaced, BakingStarted, OrderBaked] as const
export const OrderEvent = t.union([OrderPlaced.codec, BakingStarted.codec, OrderBaked.codec])
export type OrderEvent = t.TypeOf<typeof OrderEvent>

/**
 * Whether an event is announced on the bus (the appender puts it in the outbox). Two messages
 * cross RabbitMQ per order, the design's own shape: PlaceOrder, then OrderBaked, on which the
 * projector folds the whole tail of the order's stream into the read model.
 */
export function isAnnounced(event: OrderEvent): event is OrderBaked {
  switch (event.$name) {
    case 'bakery/order-placed':
    case 'bakery/baking-started':
      return false
    case 'bakery/order-baked':
      return true
    default:
      return assertNever(event)
  }
}

/** The messages that cross the bus (src/topology.ts says which queue takes each). */
export type BusMessage = PlaceOrder | OrderBaked
