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
