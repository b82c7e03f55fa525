import { delayAfter, type Backoff } from '../backoff'
import { PermanentFailure, PoisonMessage } from '../errors'

/** How often a failing message is tried, and how long it waits between tries. */
export interface RetryPolicy {
  readonly maxAttempts: number
  readonly backoff: Backoff
}

/** What becomes of a delivery its handler failed on. */
export type Settlement =
  | { readonly kind: 'retry'; readonly delayMs: number; readonly reason: string }
  | { readonly kind: 'deadLetter'; readonly reason: string }

/**
 * The transport's whole retry policy, as a pure function of the error and the attempt that failed
 * (from 1): a message that can never be handled, or a failure retrying cannot cure, is
 * dead-lettered at once; anything else is retried after the policy's back-off, until the last
 * attempt, after which it is dead-lettered saying how many attempts it had.
 */
export function settle(error: Error, attempt: number, policy: RetryPolicy): Settlement {
  const reason = `${error.name}: ${error.message}`
  if (error instanceof PoisonMessage || error instanceof PermanentFailure)
    return { kind: 'deadLetter', reason }
  if (attempt >= policy.maxAttempts)
    return { kind: 'deadLetter', reason: `gave up after ${attempt} attempts: ${reason}` }
  return { kind: 'retry', delayMs: delayAfter(policy.backoff, attempt), reason }
}

/** Every delay a retry may wait: one delayed retry queue is declared for each. */
export function retryDelays(policy: RetryPolicy): number[] {
  const delays = new Set<number>()
  for (let attempt = 1; attempt < policy.maxAttempts; attempt++)
    delays.add(delayAfter(policy.backoff, attempt))
  return [...delays]
}

export const retryQueueName = (queue: string, delayMs: number) => `${queue}.retry.${delayMs}ms`

/** Headers Bakery adds to a message it retries or dead-letters. */
export const FailureHeaders = {
  attempt: 'x-bakery-attempt',
  reason: 'x-bakery-reason',
  queue: 'x-bakery-queue',
  failedAt: 'x-bakery-failed-at',
} as const

/** Which attempt a delivery is (from 1), as its headers say. */
export function attemptOf(headers: Record<string, unknown> | undefined): number {
  const value = headers?.[FailureHeaders.attempt]
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 ? value : 1
}
