import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'

const run = promisify(execFile)

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const AMQP_BASE = 'amqp://guest:guest@127.0.0.1:5672'
export const ROOT = join(__dirname, '..', '..')

/** What the retry and dead-letter tests run over: each queue type in a vhost of its own. */
export const QUEUE_TYPES = ['classic', 'quorum'] as const
export type QueueType = (typeof QUEUE_TYPES)[number]

/** A Redis key namespace no other test uses. */
export const uniqueNamespace = (label: string) => `test-${label}-${randomBytes(4).toString('hex')}`

/** Deletes every key of a namespace (they all share its hash tag). */
export async function dropNamespace(namespace: string, url = REDIS_URL): Promise<void> {
  const redis = new Redis(url)
  try {
    const stream = redis.scanStream({ match: `{${namespace}}:*`, count: 1000 })
    for await (const keys of stream as AsyncIterable<string[]>)
      if (keys.length) await redis.unlink(...keys)
  } finally {
    redis.disconnect()
  }
}

/** A RabbitMQ vhost of its own, so queues and exchanges of one test never meet another's. */
export async function createVhost(label: string): Promise<{
  name: string
  url: string
  queue: (queue: string) => Promise<{ ready: number; unacknowledged: number }>
  exchanges: () => Promise<string[]>
  drop: () => Promise<void>
}> {
  const name = `test-${label}-${randomBytes(4).toString('hex')}`
  await run('rabbitmqctl', ['-q', 'add_vhost', name])
  await run('rabbitmqctl', ['-q', 'set_permissions', '-p', name, 'guest', '.*', '.*', '.*'])
  return {
    name,
    url: `${AMQP_BASE}/${encodeURIComponent(name)}`,
    /** The broker's own count of a queue's ready and delivered-but-unacknowledged messages. */
    queue: async (queue) => {
      const columns = ['name', 'messages_ready', 'messages_unacknowledged']
      const { stdout } = await run('rabbitmqctl', [
        '-q',
        '--no-table-headers',
        'list_queues',
        '-p',
        name,
        ...columns,
      ])
      const row = stdout
        .split('\n')
        .map((line) => line.split('\t'))
        .find(([queueName]) => queueName === queue)
      if (!row) throw new Error(`no queue ${queue} in vhost ${name}`)
      return { ready: Number(row[1]), unacknowledged: Number(row[2]) }
    },
    /** Every exchange declared in the vhost, but the broker's own (`amq.*`, the default). */
    exchanges: async () => {
      const args = ['-q', '--no-table-headers', 'list_exchanges', '-p', name, 'name']
      const { stdout } = await run('rabbitmqctl', args)
      return stdout
        .split('\n')
        .map((line) => line.trim())
        .filter((exchange) => exchange !== '' && !exchange.startsWith('amq.'))
    },
    drop: async () => {
      await run('rabbitmqctl', ['-q', 'delete_vhost', name]).catch(() => undefined)
    },
  }
}

export async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  if (typeof address !== 'object' || address === null) throw new Error('no port')
  return address.port
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
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
      last = error
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ''}`,
      )
    await sleep(intervalMs)
  }
}

export interface RoleProcess {
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves with the exit code after SIGTERM (or the given signal). */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
  readonly exited: Promise<number | null>
}

/**
 * Starts a role exactly as the README says (`npx bakery <role>`, which runs bin/bakery.js) and
 * waits until it logged `readyLine`.
 */
export async function startRole(
  role: string,
  env: Record<string, string>,
  readyLine = /connected to RabbitMQ/,
  timeoutMs = 20_000,
): Promise<RoleProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'bakery.js'), role], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const role_ = {
    child,
    output: () => output,
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
  try {
    await waitFor(
      `${role} to log ${String(readyLine)}`,
      () => {
        if (child.exitCode !== null) throw new Error(`${role} exited early:\n${output}`)
        return readyLine.test(output)
      },
      { timeoutMs },
    )
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
  return role_
}

/**
 * The three roles as real processes with one environment; `roles` receives them as soon as they
 * are up, so that a test's `after` stops them even if one failed to start. Resolves with the
 * reception's base URL.
 */
export async function startPipeline(
  env: Record<string, string>,
  roles: RoleProcess[],
): Promise<string> {
  const started = await Promise.allSettled(
    ['reception', 'baker', 'projector'].map((role) => startRole(role, env)),
  )
  for (const result of started) if (result.status === 'fulfilled') roles.push(result.value)
  const failed = started.find((result) => result.status === 'rejected')
  if (failed) throw failed.reason
  return `http://127.0.0.1:${listeningPort(roles[0]!)}`
}

/** The port a reception logged it listens on. */
export function listeningPort(role: RoleProcess): number {
  const match = /"port":(\d+)/.exec(
    role
      .output()
      .split('\n')
      .find((l) => l.includes('reception is attended')) ?? '',
  )
  if (!match) throw new Error('the reception did not log its port')
  return Number(match[1])
}

export async function postOrder(
  base: string,
  body: unknown = { customer: 'homer', pastry: 'la bombe' },
): Promise<string> {
  const response = await fetch(`${base}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (response.status !== 202)
    throw new Error(`POST /orders answered ${response.status}: ${await response.text()}`)
  return ((await response.json()) as { orderKey: string }).orderKey
}

/**
 * The environment of a role in a test of its own: its vhost, its namespace, any free ports, no
 * trace export unless `overrides` asks for it.
 */
export function isolatedEnv(
  amqpUrl: string,
  namespace: string,
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    AMQP_URL: amqpUrl,
    REDIS_URL,
    BAKERY_NAMESPACE: namespace,
    PORT: '0',
    HEALTH_PORT: '0',
    OTEL_SDK_DISABLED: 'true',
    ...overrides,
  }
}
