import * as t from 'io-ts'
import { defineMessage, type MessageOf } from './define'
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

/** The order was accepted at reception: status `pending`. */
export const OrderPlaced = defineMessage('event', 'bakery/order-placed', 1, {
  orderKey: OrderKey,
  customer: Name,
  pastry: Name,
  orderTime: Timestamp,
})
export type OrderPlaced = MessageOf<typeof OrderPlaced>

/** A baker took the order: status `baking`. */
export const BakingStarted = defineMessage('event', 'bakery/baking-started', 1, {
  orderKey: OrderKey,
  startedAt: Timestamp,
})
export type BakingStarted = MessageOf<typeof BakingStarted>

/** The pastry is out of the oven: status `finished`. */
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
export type OrderEventName = OrderEvent['$name']

/** Every message that crosses the bus, by `$name`, for decoding at the consumer. */
export const busMessages = [PlaceOrder, ...orderEvents] as const
export type BusMessage = PlaceOrder | OrderEvent
