import amqp, { type ChannelModel } from 'amqplib'
import { redact } from '../platform/config'
import {
  listDeadLetters,
  REQUEUE_BATCH,
  requeueDeadLetters,
  type Broker,
  type DeadLetter,
} from '../platform/dead-letter-queue'
import type { Keys } from '../platform/keys'
import { describeError } from '../platform/logger'
import { listParked, requeueParked, type ParkedEntry } from '../platform/outbox-parking'
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
import { topology } from '../wiring'
import type { ScriptedRedis } from '../platform/scripts'

/**
 * `bakery dead-letters`: what is in the dead-letter queue and the parked outbox entries, and why,
 * and a way to send them back (to the queue they failed on, or into the outbox) once the cause is
 * fixed.
 */

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
      return await command(argv, io, { connection, policy, topology }, redis, keys)
    } finally {
      await connection.close().catch(() => undefined)
    }
  })
}

async function command(
  argv: readonly string[],
  io: ToolIo,
  broker: Broker,
  redis: ScriptedRedis,
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
