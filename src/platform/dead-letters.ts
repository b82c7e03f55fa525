import amqp, {
  type ChannelModel,
  type ConfirmChannel,
  type GetMessage,
  type Options,
} from 'amqplib'
import { loadConfig, ConfigError, redact } from './config'
import { describeError } from './logger'
import { deadLetterQueue, type QueuePolicy } from './queue-types'
import { Headers } from './rabbitmq'
import { topology } from './topology'
import {
  formatDuration,
  formatTable,
  parseToolArgs,
  positiveInt,
  processIo,
  UsageError,
  wantsHelp,
  type ToolIo,
} from './tool'

/**
 * `bakery dead-letters`: what is in the dead-letter queue and why, and a way to send it back to
 * the queue it failed on once the cause is fixed.
 */

const USAGE = `Usage: bakery dead-letters list [--json] [--limit N]
       bakery dead-letters requeue (--id <messageId> ... | --all)

  list      the dead letters, oldest first: message id, message name, the queue it failed on,
            how long ago, attempts, and the reason (--json: one JSON array); they stay where they are
  requeue   sends the chosen dead letters back to the queue they failed on, with their attempt
            count reset; the rest stay
  --limit   list at most N (default 1000)

Reads AMQP_URL like the roles. Exit codes: 0 done, 1 RabbitMQ unreachable or an --id not found,
2 bad arguments, 78 bad configuration.`

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
  const attempts: unknown = headers[Headers.attempt]
  const described = {
    messageId: text(message.properties.messageId),
    name: nameOf(message) ?? text(message.properties.type),
    queue: text(headers[Headers.queue]),
    reason: text(headers[Headers.reason]),
    failedAt: text(headers[Headers.failedAt]),
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
 * Takes up to `limit` messages off the dead-letter queue without acknowledging them, passes them
 * to `each`, and closes the channel: whatever `each` did not acknowledge goes back, in order.
 */
async function withDeadLetters<T>(
  { connection, policy }: Broker,
  limit: number,
  each: (channel: ConfirmChannel, messages: GetMessage[]) => Promise<T>,
): Promise<T> {
  const channel = await connection.createConfirmChannel()
  try {
    // Declared as every role declares it, so that listing an empty Bakery is not an error.
    const queue = topology.deadLetterQueue
    const { messageCount } = await channel.assertQueue(queue, deadLetterQueue(policy))
    const messages: GetMessage[] = []
    while (messages.length < Math.min(limit, messageCount)) {
      const message = await channel.get(topology.deadLetterQueue, { noAck: false })
      if (!message) break
      messages.push(message)
    }
    return await each(channel, messages)
  } finally {
    await channel.close().catch(() => undefined)
  }
}

export async function listDeadLetters(broker: Broker, limit = 1000): Promise<DeadLetter[]> {
  return withDeadLetters(broker, limit, (_channel, messages) =>
    Promise.resolve(messages.map(describeDeadLetter)),
  )
}

export interface RequeueResult {
  readonly requeued: DeadLetter[]
  /** Chosen dead letters that name no Bakery queue to go back to: left where they are. */
  readonly stranded: DeadLetter[]
  /** Ids asked for that are not in the dead-letter queue. */
  readonly notFound: string[]
}

/**
 * Sends dead letters back to the queue they failed on: all of them, or those with the given
 * message ids. Each is acknowledged only after the broker confirmed its copy, so a crash in
 * between leaves it in both queues (handled twice, which the handlers tolerate), never in none.
 */
export async function requeueDeadLetters(
  broker: Broker,
  choose: { readonly all: true } | { readonly ids: readonly string[] },
): Promise<RequeueResult> {
  const wanted = 'ids' in choose ? new Set(choose.ids) : undefined
  const known = new Set(topology.queues.map((queue) => queue.name))
  return withDeadLetters(broker, Number.MAX_SAFE_INTEGER, async (channel, messages) => {
    const requeued: DeadLetter[] = []
    const stranded: DeadLetter[] = []
    const found = new Set<string>()
    for (const message of messages) {
      const letter = describeDeadLetter(message)
      if (wanted && !(letter.messageId !== undefined && wanted.has(letter.messageId))) continue
      if (letter.messageId !== undefined) found.add(letter.messageId)
      if (!letter.queue || !known.has(letter.queue)) {
        stranded.push(letter)
        continue
      }
      await publishConfirmed(channel, letter.queue, message)
      channel.ack(message)
      requeued.push(letter)
    }
    const notFound = wanted ? [...wanted].filter((id) => !found.has(id)) : []
    return { requeued, stranded, notFound }
  })
}

/** The message as it was first sent: its failure headers dropped, so it starts at attempt 1. */
function publishConfirmed(
  channel: ConfirmChannel,
  queue: string,
  message: GetMessage,
): Promise<void> {
  const p = message.properties
  const headers: Record<string, unknown> = { ...(p.headers ?? {}) }
  for (const name of Object.values(Headers)) delete headers[name]
  const options: Options.Publish = {
    messageId: p.messageId as string | undefined,
    correlationId: p.correlationId as string | undefined,
    type: p.type as string | undefined,
    timestamp: p.timestamp as number | undefined,
    appId: p.appId as string | undefined,
    contentType: p.contentType as string | undefined,
    headers,
    persistent: true,
  }
  return new Promise((resolve, reject) => {
    channel.publish('', queue, message.content, options, (error) =>
      error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(),
    )
  })
}

/** The age of a dead letter for a person, from its failed-at header. */
const ageOf = (letter: DeadLetter, now: number): string => {
  const at = letter.failedAt ? Date.parse(letter.failedAt) : NaN
  return Number.isNaN(at) ? '?' : formatDuration(now - at)
}

export async function runDeadLetters(
  argv: readonly string[],
  io: ToolIo = processIo(),
): Promise<number> {
  if (wantsHelp(argv)) {
    io.stdout.write(`${USAGE}\n`)
    return 0
  }
  let config
  try {
    config = loadConfig(io.env)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    io.stderr.write(`bakery dead-letters: ${error.message}\n`)
    return 78
  }
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
    return await command(argv, io, { connection, policy })
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`bakery dead-letters: ${error.message}\n\n${USAGE}\n`)
      return 2
    }
    io.stderr.write(`bakery dead-letters: ${describeError(error)}\n`)
    return 1
  } finally {
    await connection.close().catch(() => undefined)
  }
}

async function command(argv: readonly string[], io: ToolIo, broker: Broker): Promise<number> {
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
    const letters = await listDeadLetters(broker, positiveInt('limit', values.limit, 1000))
    const now = Date.now()
    if (values.json) {
      io.stdout.write(`${JSON.stringify(letters)}\n`)
    } else if (letters.length === 0) {
      io.stdout.write('No dead letters.\n')
    } else {
      const rows = letters.map((l) => [
        l.messageId ?? '-',
        l.name ?? '?',
        l.queue ?? '?',
        ageOf(l, now),
        String(l.attempts ?? '?'),
        l.reason ?? '?',
      ])
      io.stdout.write(formatTable(['ID', 'MESSAGE', 'QUEUE', 'AGE', 'ATTEMPTS', 'REASON'], rows))
    }
    return 0
  }
  if (subcommand === 'requeue') {
    if (values.json || values.limit) throw new UsageError('--json and --limit belong to list')
    const ids = values.id ?? []
    if (Boolean(values.all) === ids.length > 0)
      throw new UsageError('requeue needs --id ... or --all')
    const result = await requeueDeadLetters(broker, values.all ? { all: true } : { ids })
    for (const letter of result.requeued)
      io.stdout.write(`requeued ${letter.messageId ?? '(no id)'} to ${letter.queue}\n`)
    for (const letter of result.stranded)
      io.stderr.write(
        `left ${letter.messageId ?? '(no id)'}: it names no Bakery queue to go back to\n`,
      )
    for (const id of result.notFound) io.stderr.write(`no dead letter with id ${id}\n`)
    io.stdout.write(`${result.requeued.length} requeued\n`)
    return result.notFound.length > 0 ? 1 : 0
  }
  throw new UsageError(
    subcommand === undefined ? 'say list or requeue' : `unknown subcommand ${subcommand}`,
  )
}
