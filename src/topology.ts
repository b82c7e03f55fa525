import { OrderBaked, PlaceOrder, type BusMessage } from './messages'
import type { Topology } from './platform/transport'
import type { BusWiring } from './platform/service'

/**
 * Bakery's bus: which queue takes which message. The platform's transport and relay are generic;
 * this is where the order messages are wired in. Every role declares the whole topology, so
 * nothing sent is dropped for want of a queue.
 */
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

/** The bus as every role wires it into the platform. */
export const bakeryBus: BusWiring = {
  topology,
  // Every message of an order carries its key: bus-core's correlationId, the trace's order key.
  correlationIdOf: (message) => (message as BusMessage).orderKey,
}
