import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { delayAfter, reconnecting } from '../src/platform/backoff'
import { PermanentFailure, PoisonMessage } from '../src/platform/errors'
import {
  attemptOf,
  FailureHeaders,
  retryDelays,
  settle,
} from '../src/platform/transport/settle-policy'

const policy = { maxAttempts: 4, backoff: { initialMs: 100, maxMs: 250 } }

describe('the settle policy', () => {
  it('dead-letters a message that can never be handled at once, with its reason', () => {
    assert.deepEqual(settle(new PoisonMessage('the body is not JSON'), 1, policy), {
      kind: 'deadLetter',
      reason: 'PoisonMessage: the body is not JSON',
    })
  })

  it('dead-letters a failure retrying cannot cure, whatever the attempt', () => {
    for (const attempt of [1, 2, 4])
      assert.deepEqual(settle(new PermanentFailure('there is no such order'), attempt, policy), {
        kind: 'deadLetter',
        reason: 'PermanentFailure: there is no such order',
      })
  })

  it('retries anything else, waiting longer each time, never past the maximum', () => {
    const error = new Error('Redis is away')
    assert.deepEqual(
      [1, 2, 3].map((attempt) => settle(error, attempt, policy)),
      [
        { kind: 'retry', delayMs: 100, reason: 'Error: Redis is away' },
        { kind: 'retry', delayMs: 200, reason: 'Error: Redis is away' },
        { kind: 'retry', delayMs: 250, reason: 'Error: Redis is away' },
      ],
    )
  })

  it('gives up after the last attempt, saying how many there were', () => {
    assert.deepEqual(settle(new TypeError('x is undefined'), 4, policy), {
      kind: 'deadLetter',
      reason: 'gave up after 4 attempts: TypeError: x is undefined',
    })
  })

  it('declares one retry queue per distinct delay', () => {
    assert.deepEqual(retryDelays(policy), [100, 200, 250])
    assert.deepEqual(retryDelays({ maxAttempts: 1, backoff: policy.backoff }), [])
  })

  it('reads the attempt from the headers, and takes anything else as the first', () => {
    assert.equal(attemptOf({ [FailureHeaders.attempt]: 3 }), 3)
    for (const value of [undefined, 0, -1, 1.5, '2', null])
      assert.equal(attemptOf({ [FailureHeaders.attempt]: value }), 1, String(value))
    assert.equal(attemptOf(undefined), 1)
  })
})

describe('the back-off policy', () => {
  it('doubles from the first delay up to the maximum', () => {
    const backoff = { initialMs: 50, maxMs: 300 }
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((failures) => delayAfter(backoff, failures)),
      [50, 100, 200, 300, 300],
    )
  })

  it('reconnects after 200 ms at first and at most every 5 s', () => {
    assert.equal(delayAfter(reconnecting, 1), 200)
    assert.equal(delayAfter(reconnecting, 100), 5000)
  })
})
