/** Bakery's RabbitMQ transport for @node-ts/bus-core, and what its users configure it with. */
export { RabbitTransport, type RabbitTransportOptions } from './rabbit-transport'
export { FailureHeaders, retryQueueName, settle, type RetryPolicy } from './settle-policy'
export type { QueueSpec, Topology } from './topology'
