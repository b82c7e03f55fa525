import type { Options } from 'amqplib'

/**
 * The arguments Bakery declares its queues with. Classic queues live on one broker and keep the
 * arguments they always had, so an existing deployment declares them unchanged. Quorum queues are
 * replicated over the cluster (Raft); what they dead-letter (a retry whose delay ran out, a message
 * past its delivery limit) is moved at least once, never dropped on the way.
 */

export type QueueType = 'classic' | 'quorum'

export interface QueuePolicy {
  readonly type: QueueType
  /** Quorum only: deliveries of one message before the broker dead-letters it. */
  readonly deliveryLimit: number
}

export const classicQueues: QueuePolicy = { type: 'classic', deliveryLimit: 20 }

/**
 * Quorum queues dead-letter at most once unless told otherwise; at-least-once needs the source
 * queue to refuse publishes when full rather than drop its oldest message (RabbitMQ 3.10+).
 */
const quorum = {
  'x-queue-type': 'quorum',
  'x-dead-letter-strategy': 'at-least-once',
  'x-overflow': 'reject-publish',
} as const

/**
 * A queue a role consumes. Bakery retries and dead-letters failed messages itself; the broker's
 * delivery limit is for a message whose consumers keep dying before they can settle it.
 */
export function workQueue(policy: QueuePolicy, deadLetterQueue: string): Options.AssertQueue {
  if (policy.type === 'classic') return { durable: true }
  return {
    durable: true,
    arguments: {
      ...quorum,
      'x-delivery-limit': policy.deliveryLimit,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': deadLetterQueue,
    },
  }
}

/** A queue that holds a failed message for `delayMs`, then dead-letters it back to `queue`. */
export function retryQueue(
  policy: QueuePolicy,
  delayMs: number,
  queue: string,
): Options.AssertQueue {
  const delay = {
    'x-message-ttl': delayMs,
    'x-dead-letter-exchange': '',
    'x-dead-letter-routing-key': queue,
  }
  return {
    durable: true,
    arguments: policy.type === 'classic' ? delay : { ...quorum, ...delay },
  }
}

export function deadLetterQueue(policy: QueuePolicy): Options.AssertQueue {
  return policy.type === 'classic'
    ? { durable: true }
    : { durable: true, arguments: { 'x-queue-type': 'quorum' } }
}

/** A queue that exists with arguments other than those declared: the broker keeps the old ones. */
export class QueueMismatch extends Error {
  override readonly name = 'QueueMismatch'
}

/**
 * What to do about a declaration the broker refused because the queue already exists with other
 * arguments (406 PRECONDITION_FAILED), in one line naming the queue; undefined for other errors.
 * An argument one side has and the other has not means the queue is of the other type: Bakery's
 * quorum queues carry arguments its classic ones never do, and the other way round.
 */
export function explainMismatch(
  queue: string,
  vhost: string,
  policy: QueuePolicy,
  error: unknown,
): QueueMismatch | undefined {
  const message = error instanceof Error ? error.message : String(error)
  const found = /inequivalent arg '([^']+)' for queue '[^']*' in vhost '[^']*': ([^"]*)/.exec(
    message,
  )
  if (!found) return undefined
  const [, arg, difference] = found
  const remedy = `drain it and delete it (rabbitmqctl delete_queue -p ${vhost} ${queue}) so that it is declared anew`
  if (/received none|current is none/.test(difference ?? '')) {
    const current = policy.type === 'quorum' ? 'classic' : 'quorum'
    return new QueueMismatch(
      `queue ${queue} in vhost ${vhost} is a ${current} queue, but QUEUE_TYPE=${policy.type} and ` +
        `RabbitMQ cannot change a queue's type: set QUEUE_TYPE=${current}, or ${remedy}`,
    )
  }
  return new QueueMismatch(
    `queue ${queue} in vhost ${vhost} has another ${arg} (${difference}); RabbitMQ cannot change it: ` +
      `configure this role as before (QUEUE_DELIVERY_LIMIT, RETRY_*), or ${remedy}`,
  )
}
