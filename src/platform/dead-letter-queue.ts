import type { ChannelModel, ConfirmChannel, GetMessage } from 'amqplib'
import { deadLetterQueue, type QueuePolicy } from './queue-types'
import { ConfirmedPublisher, FailureHeaders, type Topology } from './transport'

/*
 * The dead-letter queue as a tool sees it: what is in it and why, and sending letters back to the
 * queue they failed on. `bakery dead-letters` (src/tools/dead-letters.ts) is its command line.
 */

/** Dead letters a requeue holds unacknowledged at once. */
export const REQUEUE_BATCH = 100

export interface DeadLetter {
  /** The message id (`messageId` property); absent on messages published without one. */
  readonly messageId: string | undefined
  /** The message's `$name` if its body says, else its `type` property. */
  readonly name: string | undefined
  /** The queue it failed on. */
  readonly queue: string | undefined
  readonly reason: string | undefined
  readonly failedAt: string | undefined
  readonly attempts: number | undefined
}

/** Where the dead letters are: a connection, the queue type, and the domain's topology. */
export interface Broker {
  readonly connection: ChannelModel
  readonly policy: QueuePolicy
  readonly topology: Topology
}

const text = (value: unknown) =>
  typeof value === 'string' ? value : Buffer.isBuffer(value) ? value.toString('utf8') : undefined

export function describeDeadLetter(message: GetMessage): DeadLetter {
  const headers = message.properties.headers ?? {}
  const attempts: unknown = headers[FailureHeaders.attempt]
  const described = {
    messageId: text(message.properties.messageId),
    name: nameOf(message) ?? text(message.properties.type),
    queue: text(headers[FailureHeaders.queue]),
    reason: text(headers[FailureHeaders.reason]),
    failedAt: text(headers[FailureHeaders.failedAt]),
    attempts: typeof attempts === 'number' ? attempts : undefined,
  }
  return described.queue === undefined
    ? { ...described, ...deadLetteredByBroker(headers) }
    : described
}

/**
 * A quorum queue dead-letters a message past its delivery limit itself, with no Bakery headers:
 * the newest `x-death` entry says from which queue, why, when, and how many times.
 */
function deadLetteredByBroker(headers: Record<string, unknown>): Partial<DeadLetter> {
  const deaths: unknown = headers['x-death']
  const [death] = Array.isArray(deaths) ? (deaths as Record<string, unknown>[]) : []
  if (!death) return {}
  const count = death.count
  const time = death.time as { value?: unknown } | undefined
  return {
    queue: text(death.queue),
    reason: `dead-lettered by RabbitMQ: ${text(death.reason) ?? '?'}`,
    failedAt:
      typeof time?.value === 'number' ? new Date(time.value * 1000).toISOString() : undefined,
    attempts: typeof count === 'number' ? count : undefined,
  }
}

function nameOf(message: GetMessage): string | undefined {
  try {
    const body: unknown = JSON.parse(message.content.toString('utf8'))
    const name: unknown =
      typeof body === 'object' && body !== null ? (body as { $name?: unknown }).$name : undefined
    return typeof name === 'string' ? name : undefined
  } catch {
    return undefined
  }
}

/**
 * Lists up to `limit` dead letters: takes them off the queue unacknowledged and closes the
 * channel, so they all go back, in order.
 */
export async function listDeadLetters(
  { connection, policy, topology }: Broker,
  limit = 1000,
): Promise<DeadLetter[]> {
  const channel = await connection.createChannel()
  try {
    // Declared as every role declares it, so that listing an empty Bakery is not an error.
    const { messageCount } = await channel.assertQueue(
      topology.deadLetterQueue,
      deadLetterQueue(policy),
    )
    const letters: DeadLetter[] = []
    while (letters.length < Math.min(limit, messageCount)) {
      const message = await channel.get(topology.deadLetterQueue, { noAck: false })
      if (!message) break
      letters.push(describeDeadLetter(message))
    }
    return letters
  } finally {
    await channel.close().catch(() => undefined)
  }
}

export interface RequeueResult {
  readonly requeued: number
  /** Chosen dead letters that name no Bakery queue to go back to: left in the dead-letter queue. */
  readonly stranded: number
  /** Ids asked for that are not in the dead-letter queue. */
  readonly notFound: string[]
}

export interface RequeueReport {
  readonly onRequeued?: (letter: DeadLetter) => void
  readonly onStranded?: (letter: DeadLetter) => void
}

/**
 * Sends dead letters back to the queue they failed on: all of them, or those with the given
 * message ids. It walks the queue as it was when it started, REQUEUE_BATCH letters at a time, so
 * memory and the broker's unacknowledged count stay bounded however long the queue is. A chosen
 * letter is republished to its queue; any other goes to the back of the dead-letter queue, as it
 * was. Each is acknowledged only after the broker confirmed its copy, so a crash in between
 * leaves it in two places (handled twice, which the handlers tolerate), never in none.
 */
export async function requeueDeadLetters(
  { connection, policy, topology }: Broker,
  choose: { readonly all: true } | { readonly ids: readonly string[] },
  report: RequeueReport = {},
): Promise<RequeueResult> {
  const wanted = 'ids' in choose ? new Set(choose.ids) : undefined
  const known = new Set(topology.queues.map((queue) => queue.name))
  const found = new Set<string>()
  let requeued = 0
  let stranded = 0
  const channel = await connection.createConfirmChannel()
  const publish = confirmedPublisher(channel)
  const settle = async (message: GetMessage) => {
    const letter = describeDeadLetter(message)
    const chosen = !wanted || (letter.messageId !== undefined && wanted.has(letter.messageId))
    if (chosen && letter.messageId !== undefined) found.add(letter.messageId)
    const queue = chosen && letter.queue && known.has(letter.queue) ? letter.queue : undefined
    if (queue) await publish(queue, message, withoutFailure)
    else await publish(topology.deadLetterQueue, message, (headers) => headers)
    channel.ack(message)
    if (queue) {
      requeued += 1
      report.onRequeued?.(letter)
    } else if (chosen) {
      stranded += 1
      report.onStranded?.(letter)
    }
  }
  try {
    const { messageCount } = await channel.assertQueue(
      topology.deadLetterQueue,
      deadLetterQueue(policy),
    )
    let left = messageCount
    while (left > 0 && !(wanted && found.size === wanted.size)) {
      const batch: GetMessage[] = []
      while (batch.length < Math.min(REQUEUE_BATCH, left)) {
        const message = await channel.get(topology.deadLetterQueue, { noAck: false })
        if (!message) break
        batch.push(message)
      }
      if (batch.length === 0) break
      left -= batch.length
      // Every confirmed copy is acknowledged before a failed one ends the walk.
      const settled = await Promise.allSettled(batch.map(settle))
      const failed = settled.find((result) => result.status === 'rejected')
      if (failed) throw failed.reason
    }
  } finally {
    await channel.close().catch(() => undefined)
  }
  const notFound = wanted ? [...wanted].filter((id) => !found.has(id)) : []
  return { requeued, stranded, notFound }
}

/** Its failure headers dropped, a requeued message starts again at attempt 1. */
function withoutFailure(headers: Record<string, unknown>): Record<string, unknown> {
  const kept = { ...headers }
  for (const name of Object.values(FailureHeaders)) delete kept[name]
  return kept
}

/**
 * Publishes copies of dead letters on `channel`, each resolving once the broker confirmed it into
 * its queue. Mandatory: a copy whose queue is gone comes back and fails (Unroutable), so its dead
 * letter is not acknowledged, rather than being confirmed and dropped.
 */
function confirmedPublisher(channel: ConfirmChannel) {
  const publisher = new ConfirmedPublisher({ unroutable: async () => {}, failed: () => {} })
  publisher.attach(channel)
  /** A copy of the message, its headers passed through `headers`. */
  return (
    queue: string,
    message: GetMessage,
    headers: (headers: Record<string, unknown>) => Record<string, unknown>,
  ): Promise<void> => {
    const p = message.properties
    return publisher.publish('', queue, message.content, {
      messageId: p.messageId as string | undefined,
      correlationId: p.correlationId as string | undefined,
      type: p.type as string | undefined,
      timestamp: p.timestamp as number | undefined,
      appId: p.appId as string | undefined,
      contentType: p.contentType as string | undefined,
      headers: headers({ ...(p.headers ?? {}) }),
    })
  }
}
