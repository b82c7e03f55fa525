/**
 * The errors the platform gives its callers, in one place, so that a role can tell "try again"
 * from "this is wrong" without importing the transport or the store.
 */

/**
 * Redis cannot answer right now: not connected, too slow, loading, out of memory, or a cluster
 * in a failover. Retrying later may succeed; nothing about the request was wrong. Made by
 * `asStoreUnavailable` (src/platform/redis.ts), which knows the client's errors.
 */
export class StoreUnavailable extends Error {
  override readonly name = 'StoreUnavailable'
  constructor(override readonly cause: Error) {
    super(`the event store is unavailable: ${cause.message}`)
  }
}

/** Another writer appended to the stream first: read, decide again, append. */
export class VersionConflict extends Error {
  override readonly name = 'VersionConflict'
  constructor(
    readonly orderKey: string,
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`order ${orderKey} is at version ${actual}, expected ${expected}`)
  }
}

/** The outbox holds more than the limit the append was given: the bus is far behind. */
export class OutboxFull extends Error {
  override readonly name = 'OutboxFull'
  constructor(readonly limit: number) {
    super(`the outbox holds ${limit} entries or more`)
  }
}

/** A stream entry that does not decode: reported with its id, never silently used. */
export class MalformedEntry extends Error {
  override readonly name = 'MalformedEntry'
  constructor(
    readonly streamId: string,
    reason: string,
  ) {
    super(`stream entry ${streamId} is malformed: ${reason}`)
  }
}

/** A message that can never be handled: dead-lettered at once, never retried. */
export class PoisonMessage extends Error {
  override readonly name = 'PoisonMessage'
}

/** Thrown by a handler when retrying cannot help (the data is wrong, not the world). */
export class PermanentFailure extends Error {
  override readonly name: string = 'PermanentFailure'
}

/** The broker returned a mandatory publish: no queue is bound to take it. */
export class Unroutable extends Error {
  override readonly name = 'Unroutable'
  constructor(exchange: string, routingKey: string) {
    super(
      `RabbitMQ could not route a message to ${exchange ? `exchange ${exchange}` : `queue ${routingKey}`}: no queue is bound`,
    )
  }
}

/** Not connected to RabbitMQ: nothing can be published now. */
export class BrokerUnavailable extends Error {
  override readonly name = 'BrokerUnavailable'
  constructor() {
    super('not connected to RabbitMQ')
  }
}
