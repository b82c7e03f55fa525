/**
 * How long to wait after consecutive failures: doubling from `initialMs`, never past `maxMs`. One
 * policy for every loop that retries (reconnecting to Redis or RabbitMQ, the relay and the order
 * feed after a failed read, a message's retries), each declaring its own numbers once.
 */
export interface Backoff {
  readonly initialMs: number
  readonly maxMs: number
}

/** The wait after the `failures`-th failure in a row (from 1): initialMs, then twice, … */
export function delayAfter({ initialMs, maxMs }: Backoff, failures: number): number {
  return Math.min(initialMs * 2 ** (Math.max(failures, 1) - 1), maxMs)
}

/** Reconnecting to a server, or reading again after a failed read: quick at first, then 5 s. */
export const reconnecting: Backoff = { initialMs: 200, maxMs: 5000 }
