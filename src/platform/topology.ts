import { OrderBaked, PlaceOrder } from '../messages'
import type { Topology } from './rabbitmq'

/** Bakery's queues. Every role declares all of them, so nothing sent is dropped for want of a queue. */
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
