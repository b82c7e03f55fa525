// Bakery's roles as real processes, started exactly as the README says (`npx bakery <role>`, which
// runs bin/bakery.js), each learning its ports from the role itself over an IPC channel.
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { isListening, type Listening } from '../src/platform/announce'
import type { readinessResponse } from '../src/platform/service'
import { ROOT } from './stack'
import { waitFor } from './wait'

type ReadinessBody = ReturnType<typeof readinessResponse>[1]

export interface RoleProcess {
  readonly name: string
  readonly child: ChildProcess
  /** What the role wrote to stdout and stderr (the last `outputLimit` characters). */
  readonly output: () => string
  /** The port of the reception's API and health endpoints. */
  readonly port: number | undefined
  /** The port of `/readyz`, `/healthz` and `/metrics`: the API's for the reception. */
  readonly healthPort: number
  /** Resolves with the exit code after SIGTERM (or the given signal). */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
  readonly exited: Promise<number | null>
}

export interface StartOptions {
  /**
   * When the role counts as started: once it said where it is `listening`; once its `/readyz`
   * answers 200 (`ready`: a consumer is connected to Redis and RabbitMQ, the reception to Redis);
   * or once `/readyz` also reports RabbitMQ up (`connected`, the default: the reception's relay
   * publishes at once).
   */
  readonly until?: 'listening' | 'ready' | 'connected'
  readonly timeoutMs?: number
  /** Node flags for the role's command line (`--cpu-prof` is not allowed in NODE_OPTIONS). */
  readonly nodeArgs?: readonly string[]
  /** A name for messages and reports, when several processes run one role. */
  readonly name?: string
  /** How much output to keep, from the end; a long benchmark's log is not its business. */
  readonly outputLimit?: number
}

export async function startRole(
  role: string,
  env: Record<string, string>,
  {
    until = 'connected',
    timeoutMs = 20_000,
    nodeArgs = [],
    name = role,
    outputLimit = 4 * 1024 * 1024,
  }: StartOptions = {},
): Promise<RoleProcess> {
  const child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin', 'bakery.js'), role], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  let output = ''
  const append = (chunk: Buffer) => {
    output += chunk.toString()
    if (output.length > outputLimit) output = output.slice(-outputLimit / 2)
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)
  let listening: Listening | undefined
  child.on('message', (message) => {
    if (isListening(message)) listening = message
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  const alive = () => {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${name} exited early:\n${output}`)
  }
  try {
    const ports = await waitFor(`${name} to say where it listens`, () => (alive(), listening), {
      timeoutMs,
    })
    const healthPort = ports.http ?? ports.health
    if (healthPort === undefined) throw new Error(`${name} announced no port`)
    if (until !== 'listening')
      await waitFor(
        `${name} to be ${until} (GET /readyz on port ${healthPort})`,
        async () => {
          alive()
          const readiness = await readinessOf(healthPort)
          return readiness?.status === 'ready' && (until === 'ready' || readiness.rabbitmq === 'up')
        },
        { timeoutMs },
      )
    return { name, child, output: () => output, port: ports.http, healthPort, stop, exited }
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
}

/** What a role's `/readyz` says, or undefined while it does not answer. */
async function readinessOf(port: number): Promise<ReadinessBody | undefined> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined)
  return response && ((await response.json()) as ReadinessBody)
}

/** Whether a role's `/readyz` answers 200. */
export const isReady = async (port: number) => (await readinessOf(port))?.status === 'ready'

/** The base URL of a started reception's API. */
export function receptionUrl(reception: RoleProcess): string {
  if (reception.port === undefined) throw new Error(`${reception.name} has no HTTP API`)
  return `http://127.0.0.1:${reception.port}`
}

/**
 * The three roles as real processes with one environment; `roles` receives them as soon as they
 * are up, so that a caller's clean-up stops them even if one failed to start. Resolves with the
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
  return receptionUrl(roles[0]!)
}
