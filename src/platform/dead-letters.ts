import amqp, {
  type ChannelModel,
  type ConfirmChannel,
  type GetMessage,
  type Message,
  type Options,
} from 'amqplib'
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { redact } from './config'
import type { Keys } from './keys'
import { describeError } from './logger'
import { listParked, requeueParked, type ParkedEntry } from './outbox-parking'
import { deadLetterQueue, type QueuePolicy } from './queue-types'
import { Unroutable } from './errors'
import { FailureHeaders } from './transport'
import { topology } from '../wiring'
import {
  formatDuration,
  formatTable,
  parseToolArgs,
  positiveInt,
  printable,
  printableJson,
  processIo,
  runTool,
  UsageError,
  type ToolIo,
} from './tool'

/**
 * `bakery dead-letters`: what is in the dead-letter queue and the parked outbox entries, and why,
 * and a way to send them back (to the queue they failed on, or into the outbox) once the cause is
 * fixed.
 */

/** Dead letters a requeue holds unacknowledged at once. */
export const REQUEUE_BATCH = 100

const USAGE = `Usage: bakery dead-letters list [--json] [--limit N]
       bakery dead-letters requeue (--id <messageId> ... | --all)

  list      the dead letters, oldest first: message id, message name, the queue it failed on,
            how long ago, attempts, and the reason (--json: one JSON array); they stay where they are.
            Then the outbox entries a relay could not decode (queue "outbox"), by their stream id.
  requeue   sends the chosen dead letters back to the queue they failed on, with their attempt
            count reset, ${REQUEUE_BATCH} at a time; the rest stay (moved behind any newer ones).
            A parked outbox entry goes back into the outbox, as it was written.
  --limit   list at most N (default 1000)

Reads AMQP_URL, REDIS_URL and BAKERY_NAMESPACE like the roles. Exit codes: 0 done, 1 RabbitMQ or
Redis unreachable or an --id not found, 2 bad arguments, 78 bad configuration.
`

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

/** Where the dead letters are: a connection, and the queue type they are declared with. */
export interface Broker {
  readonly connection: ChannelModel
  readonly policy: QueuePolicy
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
  { connection, policy }: Broker,
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
  { connection, policy }: Broker,
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
  const returned = new Set<string>()
  channel.on('return', (message: Message) => {
    const { messageId } = message.properties as { messageId?: unknown }
    if (typeof messageId === 'string') returned.add(messageId)
  })
  /** A copy of the message, its headers passed through `headers`. */
  return (
    queue: string,
    message: GetMessage,
    headers: (headers: Record<string, unknown>) => Record<string, unknown>,
  ): Promise<void> => {
    const p = message.properties
    // A copy that comes back is known by its id: one without gets one.
    const messageId = typeof p.messageId === 'string' ? p.messageId : randomUUID()
    const options: Options.Publish = {
      messageId,
      correlationId: p.correlationId as string | undefined,
      type: p.type as string | undefined,
      timestamp: p.timestamp as number | undefined,
      appId: p.appId as string | undefined,
      contentType: p.contentType as string | undefined,
      headers: headers({ ...(p.headers ?? {}) }),
      persistent: true,
      mandatory: true,
    }
    return new Promise((resolve, reject) => {
      channel.publish('', queue, message.content, options, (error) => {
        if (error) reject(error instanceof Error ? error : new Error(String(error)))
        else if (returned.delete(messageId)) reject(new Unroutable('', queue))
        else resolve()
      })
    })
  }
}

/** The age of a dead letter for a person, from its failed-at header. */
const ageOf = (letter: DeadLetter, now: number): string => {
  const at = letter.failedAt ? Date.parse(letter.failedAt) : NaN
  return Number.isNaN(at) ? '?' : formatDuration(now - at)
}

/** Parked outbox entries appear among the dead letters with this as their queue. */
const OUTBOX = 'outbox'

function parkedLetter(entry: ParkedEntry): DeadLetter {
  return {
    messageId: entry.id,
    name: entry.name,
    queue: OUTBOX,
    reason: `parked by the outbox relay: ${entry.reason ?? '?'}`,
    failedAt: entry.parkedAt,
    attempts: undefined,
  }
}

export async function runDeadLetters(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  return runTool('dead-letters', USAGE, argv, io, async ({ config, redis, keys }) => {
    let connection: ChannelModel | undefined
    const failures: string[] = []
    for (const node of config.AMQP_URL) {
      try {
        connection = await amqp.connect(node.href, { timeout: 5000 })
        break
      } catch (error) {
        failures.push(`${redact(node)} (${describeError(error)})`)
      }
    }
    if (!connection) {
      io.stderr.write(
        `bakery dead-letters: cannot reach RabbitMQ at ${failures.join(', ')}; is it running?\n`,
      )
      return 1
    }
    connection.on('error', () => undefined)
    const policy = { type: config.QUEUE_TYPE, deliveryLimit: config.QUEUE_DELIVERY_LIMIT }
    try {
      return await command(argv, io, { connection, policy }, redis, keys)
    } finally {
      await connection.close().catch(() => undefined)
    }
  })
}

async function command(
  argv: readonly string[],
  io: ToolIo,
  broker: Broker,
  redis: Redis,
  keys: Keys,
): Promise<number> {
  const { values, positionals } = parseToolArgs(argv, {
    json: { type: 'boolean' },
    limit: { type: 'string' },
    id: { type: 'string', multiple: true },
    all: { type: 'boolean' },
  })
  const [subcommand, ...extra] = positionals
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)
  if (subcommand === 'list') {
    if (values.id || values.all) throw new UsageError('--id and --all belong to requeue')
    const limit = positiveInt('limit', values.limit, 1000)
    const queued = await listDeadLetters(broker, limit)
    const parked = await listParked(redis, keys, limit - queued.length)
    const letters = [...queued, ...parked.map(parkedLetter)]
    const now = Date.now()
    if (values.json) {
      io.stdout.write(`${printableJson(letters)}\n`)
    } else if (letters.length === 0) {
      io.stdout.write('No dead letters.\n')
    } else {
      const rows = letters.map((l) =>
        [
          l.messageId ?? '-',
          l.name ?? '?',
          l.queue ?? '?',
          ageOf(l, now),
          String(l.attempts ?? '?'),
          l.reason ?? '?',
        ].map(printable),
      )
      io.stdout.write(formatTable(['ID', 'MESSAGE', 'QUEUE', 'AGE', 'ATTEMPTS', 'REASON'], rows))
    }
    return 0
  }
  if (subcommand === 'requeue') {
    if (values.json || values.limit) throw new UsageError('--json and --limit belong to list')
    const ids = values.id ?? []
    if (Boolean(values.all) === ids.length > 0)
      throw new UsageError('requeue needs --id ... or --all')
    const choose = values.all ? ({ all: true } as const) : { ids }
    const idOf = (letter: DeadLetter) => printable(letter.messageId ?? '(no id)')
    const result = await requeueDeadLetters(broker, choose, {
      onRequeued: (letter) =>
        io.stdout.write(`requeued ${idOf(letter)} to ${printable(letter.queue ?? '')}\n`),
      onStranded: (letter) =>
        io.stderr.write(`left ${idOf(letter)}: it names no Bakery queue to go back to\n`),
    })
    const parked = await requeueParked(redis, keys, choose, (entry) =>
      io.stdout.write(`requeued ${printable(entry.id)} to the outbox\n`),
    )
    const notFound = result.notFound.filter((id) => !parked.found.has(id))
    for (const id of notFound) io.stderr.write(`no dead letter with id ${printable(id)}\n`)
    io.stdout.write(`${result.requeued + parked.requeued} requeued\n`)
    return notFound.length > 0 ? 1 : 0
  }
  throw new UsageError(
    subcommand === undefined ? 'say list or requeue' : `unknown subcommand ${subcommand}`,
  )
}
