import { setTimeout as sleep } from 'node:timers/promises'
import type { ConsumeMessage, Options } from 'amqplib'
import type { Logger } from '../logger'
import { metrics } from '../metrics'
import type { Acknowledgements } from './acknowledgements'
import { copyProperties } from './delivery'
import {
  attemptOf,
  FailureHeaders,
  retryQueueName,
  settle,
  type RetryPolicy,
} from './settle-policy'

type Publish = (
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish,
) => Promise<void>

export interface FailureOptions {
  /** The queue consumed: its retry queues take the retries. */
  readonly queue: string
  readonly deadLetterQueue: string
  readonly retry: RetryPolicy
}

/**
 * Carries out the settle policy for a delivery its handler failed on: a copy goes to the delayed
 * retry queue or to the dead-letter queue, with headers that say why, and only then is the
 * delivery acknowledged. If neither copy can be published, the delivery is handed back.
 */
export class FailedDeliveries {
  constructor(
    private readonly options: FailureOptions,
    private readonly publish: Publish,
    private readonly log: Logger,
  ) {}

  async settle(delivery: ConsumeMessage, acks: Acknowledgements, error: Error): Promise<void> {
    const attempt = attemptOf(delivery.properties.headers)
    const settlement = settle(error, attempt, this.options.retry)
    metrics.messageFailed(delivery.properties.type)
    try {
      if (settlement.kind === 'deadLetter') {
        await this.deadLetter(delivery, settlement.reason, attempt)
      } else {
        await this.forward(delivery, retryQueueName(this.options.queue, settlement.delayMs), {
          [FailureHeaders.attempt]: attempt + 1,
          [FailureHeaders.reason]: settlement.reason,
        })
        this.log.warn(
          {
            err: error,
            attempt,
            retryInMs: settlement.delayMs,
            messageType: delivery.properties.type,
          },
          'handler failed; will retry',
        )
      }
      acks.ack(delivery)
    } catch (settleError) {
      // Neither retried nor dead-lettered: hand the message back so that it is not lost.
      this.log.warn({ err: settleError }, 'could not retry or dead-letter a message; returning it')
      await sleep(1000)
      acks.requeue(delivery)
    }
  }

  async deadLetter(delivery: ConsumeMessage, reason: string, attempt: number): Promise<void> {
    const { queue } = this.options
    await this.forward(delivery, this.options.deadLetterQueue, {
      [FailureHeaders.reason]: reason,
      [FailureHeaders.queue]: queue,
      [FailureHeaders.failedAt]: new Date().toISOString(),
      [FailureHeaders.attempt]: attempt,
    })
    metrics.messageDeadLettered(delivery.properties.type)
    this.log.error(
      {
        reason,
        queue,
        messageType: delivery.properties.type,
        messageId: delivery.properties.messageId,
      },
      'message dead-lettered',
    )
  }

  /** Publishes a copy of the delivery straight to `queue`, its headers amended. */
  private forward(delivery: ConsumeMessage, queue: string, headers: Record<string, unknown>) {
    return this.publish('', queue, delivery.content, {
      ...copyProperties(delivery),
      headers: { ...delivery.properties.headers, ...headers },
    })
  }
}
