/** Bakery's RabbitMQ transport for @node-ts/bus-core, and what its users configure it with. */
export { RabbitTransport, type RabbitTransportOptions } from './rabbit-transport'
export { FailureHeaders } from './settle-policy'
export { ConfirmedPublisher } from './publisher'
export type { Topology } from './topology'
