import { resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { Archive } from '../projections/archive'
import { ConfigError, loadConfig, type Config } from '../platform/config'
import { keys, type Keys } from '../platform/keys'
import { createLogger, describeError } from '../platform/logger'
import { claimPartitionLayout, PartitionMismatch } from '../platform/partition-layout'
import { connectRedis, describeTarget } from '../platform/redis'
import type { ScriptedRedis } from '../platform/scripts'

/**
 * What the command-line tools share: where they write, how they read their arguments and
 * configuration, how they connect, and how they format for a person.
 */

export interface Output {
  write(text: string): unknown
  readonly isTTY?: boolean
  readonly columns?: number
}

/** A tool's surroundings; tests pass their own to capture output and stop `--follow`. */
export interface ToolIo {
  readonly stdout: Output
  readonly stderr: Output
  readonly env: NodeJS.ProcessEnv
  /** Aborted when the user interrupts (SIGINT); default: installed by `processIo`. */
  readonly signal?: AbortSignal
}

export const processIo = (): ToolIo => ({
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
})

/** A signal aborted by the first SIGINT (or the given signal), and a function to stop listening. */
export function interruptSignal(io: ToolIo): { signal: AbortSignal; release: () => void } {
  if (io.signal) return { signal: io.signal, release: () => undefined }
  const controller = new AbortController()
  const onSignal = () => controller.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return {
    signal: controller.signal,
    release: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}

export interface ToolContext {
  readonly config: Config
  readonly redis: ScriptedRedis
  readonly keys: Keys
}

/** Bad command-line arguments: the tool prints the message and its usage, and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

type Options = NonNullable<ParseArgsConfig['options']>

/** Strict `parseArgs`: an unknown option or a missing value is a UsageError. */
export function parseToolArgs<O extends Options>(argv: readonly string[], options: O) {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError(describeError(error))
  }
}

/** `parseToolArgs` for a tool that takes options only: any other argument is a UsageError. */
export function parseToolOptions<O extends Options>(argv: readonly string[], options: O) {
  const { values, positionals } = parseToolArgs(argv, options)
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  return values
}

/**
 * Runs a tool's body with configuration and a Redis connection, and maps failures to exit codes:
 * 2 bad arguments, 78 bad configuration, 1 Redis unreachable or anything else unexpected.
 */
export async function runTool(
  name: string,
  usage: string,
  argv: readonly string[],
  io: ToolIo,
  body: (context: ToolContext) => Promise<number>,
): Promise<number> {
  if (wantsHelp(argv)) {
    io.stdout.write(usage)
    return 0
  }
  let config: Config
  try {
    config = loadConfig(io.env)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    io.stderr.write(`bakery ${name}: ${error.message}\n`)
    return 78
  }
  const logger = createLogger(`bakery-${name}`, 'silent')
  const redis = connectRedis(config, logger, { failFast: true, name, once: true })
  try {
    try {
      await redis.connect()
    } catch (error) {
      io.stderr.write(
        `bakery ${name}: cannot reach ${describeTarget(config)} (${describeError(error)}); is it running?\n`,
      )
      return 1
    }
    const toolKeys = keys(config.BAKERY_NAMESPACE, config.BAKERY_PARTITIONS)
    await claimPartitionLayout(redis, toolKeys)
    return await body({ config, redis, keys: toolKeys })
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`bakery ${name}: ${error.message}\n\n${usage}`)
      return 2
    }
    io.stderr.write(`bakery ${name}: ${describeError(error)}\n`)
    return error instanceof PartitionMismatch ? 78 : 1
  } finally {
    redis.disconnect()
  }
}

/** The archive `--archive DIR` names, for the namespace of `config`; undefined without it. */
export const archiveOption = (dir: string | undefined, config: Config): Archive | undefined =>
  dir === undefined ? undefined : new Archive(resolve(dir), config.BAKERY_NAMESPACE)

/** `--help` anywhere in the arguments. */
export const wantsHelp = (argv: readonly string[]) => argv.includes('--help') || argv.includes('-h')

/** A positive integer option, or a UsageError naming it. */
export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, not ${JSON.stringify(value)}`)
  return n
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * A point in time given on the command line: an RFC 3339 / ISO 8601 date or time, or a duration
 * ago (`90s`, `15m`, `2h`, `1d`). Undefined when the text is neither.
 */
export function parseTime(text: string, now: number): number | undefined {
  const ago = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text)
  if (ago) return now - Number(ago[1]) * UNITS[ago[2]!]!
  if (!/^\d{4}-\d{2}-\d{2}/.test(text)) return undefined
  const ms = Date.parse(text)
  return Number.isNaN(ms) ? undefined : ms
}

/** A duration for a person: `840 ms`, `2.4 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  const sign = ms < 0 ? '-' : ''
  const abs = Math.abs(ms)
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(abs < 10_000 ? 1 : 0)} s`
  const s = Math.round(abs / 1000)
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min ${s % 60} s`
  if (s < 86_400) return `${sign}${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
  return `${sign}${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`
}

/** 12345 -> `12,345`, the same on every machine. */
export const formatCount = (n: number): string =>
  Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',')

/** C0 and C1 control characters, DEL, and the bidirectional overrides and isolates. */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g
const hex = (c: string, digits: number) => c.charCodeAt(0).toString(16).padStart(digits, '0')

/**
 * Text that came from outside (a message, a header), made safe to print on a terminal: each
 * control character is written as `\xNN` (or `\uNNNN`), so the text cannot move the cursor,
 * retitle the window or hide what follows it.
 */
export const printable = (text: string): string =>
  text.replace(UNPRINTABLE, (c) => (c <= '\u00ff' ? `\\x${hex(c, 2)}` : `\\u${hex(c, 4)}`))

/** JSON whose strings escape every control character (JSON.stringify leaves C1 and DEL raw). */
export const printableJson = (value: unknown): string =>
  JSON.stringify(value).replace(UNPRINTABLE, (c) => `\\u${hex(c, 4)}`)

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  )
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n') + '\n'
}

/** Jaeger's page for a trace. */
export const traceUrl = (jaegerUi: URL, traceId: string): string =>
  `${jaegerUi.href.replace(/\/+$/, '')}/trace/${traceId}`
