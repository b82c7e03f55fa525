import type { Channel, Options } from 'amqplib'
import type { AnyMessageDefinition } from '../../messages'
import {
  deadLetterQueue,
  explainMismatch,
  retryQueue,
  workQueue,
  type QueuePolicy,
} from '../queue-types'
import { retryDelays, retryQueueName, type RetryPolicy } from './settle-policy'

export interface QueueSpec {
  readonly name: string
  readonly messages: readonly AnyMessageDefinition[]
}

/** A domain's queues, the messages bound to each, and where failed messages go. */
export interface Topology {
  readonly queues: readonly QueueSpec[]
  readonly deadLetterQueue: string
}

/**
 * Declares the whole topology: every side declares all of it, so a message sent before its
 * consumer ran is kept. A durable fanout exchange per message `$name`, each queue bound to those of
 * its messages, a delayed retry queue per retry delay, and the dead-letter queue. A queue that
 * exists with another type fails with a QueueMismatch that says what to do.
 */
export async function declareTopology(
  channel: Channel,
  { queues, deadLetterQueue: deadLetters }: Topology,
  policy: QueuePolicy,
  retry: RetryPolicy,
  vhost: string,
): Promise<void> {
  const assert = async (queue: string, options: Options.AssertQueue) => {
    try {
      await channel.assertQueue(queue, options)
    } catch (error) {
      throw explainMismatch(queue, vhost, policy, error) ?? error
    }
  }
  await assert(deadLetters, deadLetterQueue(policy))
  for (const queue of queues) {
    await assert(queue.name, workQueue(policy, deadLetters))
    for (const message of queue.messages) {
      await channel.assertExchange(message.$name, 'fanout', { durable: true })
      await channel.bindQueue(queue.name, message.$name, '')
    }
    for (const delay of retryDelays(retry))
      await assert(retryQueueName(queue.name, delay), retryQueue(policy, delay, queue.name))
  }
}
