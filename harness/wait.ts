import { AssertionError } from 'node:assert'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Polls `check` until it returns a value other than undefined or false, or fails after
 * `timeoutMs`. An error thrown by `check` counts as "not yet" (a server still starting refuses
 * connections), and the last one is named on timeout; a failed assertion is an answer, not a
 * "not yet", and fails at once.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 15_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value
    } catch (error) {
      if (error instanceof AssertionError) throw error
      last = error
    }
    if (Date.now() > deadline) {
      const reason = last instanceof Error ? ` (last error: ${last.message})` : ''
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${reason}`, {
        cause: last,
      })
    }
    await sleep(intervalMs)
  }
}
