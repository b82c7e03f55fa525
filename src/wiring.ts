import { OrderBaked, OrderEvent, PlaceOrder, type BusMessage } from './messages'
import { EventStore } from './platform/event-store'
import type { Keys } from './platform/keys'
import type { Domain } from './platform/service'
import { decodeEntry, type StoredEvent } from './platform/stored-events'
import type { Topology } from './platform/transport'
import type { ScriptedRedis } from './platform/scripts'

/*
 * Where Bakery's domain is wired into the platform, whose transport, relay and event store are
 * generic: which queue takes which message, which field correlates a message, and the events the
 * log holds.
 */

/** Bakery's queues. Every role declares the whole topology, so nothing sent is dropped for want of a queue. */
export const queues = {
  baker: 'bakery.baker',
  projector: 'bakery.projector',
} as const

export const topology: Topology = {
  queues: [
    { name: queues.baker, messages: [PlaceOrder] },
    { name: queues.projector, messages: [OrderBaked] },
  ],
  deadLetterQueue: 'bakery.dead-letter',
}

/** The domain as every role hands it to the platform (startService). */
export const bakery: Domain<OrderEvent> = {
  topology,
  // Every message of an order carries its key: bus-core's correlationId, the trace's order key.
  correlationIdOf: (message) => (message as BusMessage).orderKey,
  events: OrderEvent,
}

/** Bakery's event log: the platform's event store, holding order events. */
export type OrderEventStore = EventStore<OrderEvent>
export type StoredOrderEvent = StoredEvent<OrderEvent>

export function orderEventStore(
  redis: ScriptedRedis,
  keys: Keys,
  now?: () => Date,
): OrderEventStore {
  return new EventStore(redis, keys, OrderEvent, now)
}

/** One entry of an order's stream or of the global log, its event decoded as an OrderEvent. */
export function decodeOrderEntry(streamId: string, fields: readonly string[]): StoredOrderEvent {
  return decodeEntry(OrderEvent, streamId, fields)
}
