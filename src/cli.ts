// The entry point of every Bakery process. It loads nothing instrumented before telemetry starts:
// each command's module is imported only once OpenTelemetry is in place.
import { spawn, type ChildProcess } from 'node:child_process'
import { announceListening, isListening, type Listening } from './platform/announce'
import { ConfigError, loadConfig, type Config } from './platform/config'
import { roleNodeOptions } from './platform/heap'
import { createLogger, type Logger } from './platform/logger'
import { startTelemetry } from './platform/telemetry'

type Role = 'reception' | 'baker' | 'projector'

const roles: Record<Role, (config: Config, logger: Logger) => Promise<void>> = {
  reception: async (config, logger) =>
    (await import('./reception/main.js')).runReception(config, logger),
  baker: async (config, logger) => (await import('./baker/main.js')).runBaker(config, logger),
  projector: async (config, logger) =>
    (await import('./projections/main.js')).runProjector(config, logger),
}

/**
 * Tools run once and exit with a code. Each takes its own arguments, answers --help, and reads
 * configuration through loadConfig like the roles.
 */
interface Tool {
  readonly summary: string
  readonly run: () => Promise<(argv: readonly string[]) => Promise<number>>
}

const tools: Record<string, Tool> = {
  load: {
    summary: 'drives orders into a running reception and reports how they fared',
    run: async () => (await import('./tools/load.js')).runLoad,
  },
  history: {
    summary: "an order's events with times and trace links; --at shows it as it was",
    run: async () => (await import('./tools/history.js')).runHistory,
  },
  events: {
    summary: 'a slice of the global event log, filtered; --follow tails it',
    run: async () => (await import('./tools/events.js')).runEvents,
  },
  replay: {
    summary: 'rebuilds the read model from the log and swaps it in; --verify compares',
    run: async () => (await import('./tools/replay.js')).runReplay,
  },
  archive: {
    summary: 'moves old events to compressed segment files and trims them from Redis',
    run: async () => (await import('./tools/archive.js')).runArchive,
  },
  'dead-letters': {
    summary: 'dead letters with their reason, message, queue and age; requeue sends them back',
    run: async () => (await import('./tools/dead-letters.js')).runDeadLetters,
  },
}

const usage = `Usage: bakery <command> [options]

Roles (each runs as its own process; configure with environment variables, see README):
  reception     the HTTP API: POST /orders, GET /orders/:key (PORT, default 8000)
  baker         bakes the orders it takes from RabbitMQ
  projector     folds events into the read model that GET /orders/:key serves
  dev           runs all three roles for a local try-out (what \`npm start\` runs)

Tools (each answers --help):
${Object.entries(tools)
  .map(([name, tool]) => `  ${name.padEnd(14)}${tool.summary}`)
  .join('\n')}

Options:
  -h, --help    show this help

Examples:
  npx bakery reception
  PREFETCH=64 BAKE_TIME_SCALE=0 npx bakery baker
`

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(usage)
    return command === undefined ? 2 : 0
  }
  if (command === 'dev') return dev(rest)
  const tool = tools[command]
  if (tool) return (await tool.run())(rest)
  if (!(command in roles)) {
    process.stderr.write(`bakery: unknown command ${JSON.stringify(command)}\n\n${usage}`)
    return 2
  }
  const role = command as Role
  let config: Config
  try {
    config = loadConfig()
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`bakery ${role}: ${error.message}\n`)
    return 78 // EX_CONFIG
  }
  const logger = createLogger(`bakery-${role}`, config.LOG_LEVEL)
  startTelemetry(`bakery-${role}`, logger, { traceRedis: config.BAKERY_TRACE_REDIS })
  await roles[role](config, logger)
  return -1 // keeps running until a signal stops it
}

/** Runs the three roles as child processes, as a cluster would, and stops them together. */
async function dev(_args: readonly string[]): Promise<number> {
  try {
    loadConfig()
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`bakery dev: ${error.message}\n`)
    return 78
  }
  const children = new Map<Role, ChildProcess>()
  // Once every role listens, `dev` says so in turn, with the reception's port.
  const listening = new Map<Role, Listening>()
  let stopping = false
  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true
    for (const child of children.values()) if (child.exitCode === null) child.kill(signal)
  }
  const exits = (Object.keys(roles) as Role[]).map((role) => {
    // Each child has its own process group, so a Ctrl-C reaches it once: forwarded from here.
    const child = spawn(process.execPath, [...process.execArgv, __filename, role], {
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
      detached: true,
      env: { ...process.env, NODE_OPTIONS: roleNodeOptions() },
    })
    children.set(role, child)
    child.on('message', (message) => {
      if (!isListening(message)) return
      listening.set(role, message)
      if (listening.size === children.size)
        announceListening('dev', { http: listening.get('reception')?.http })
    })
    return new Promise<number>((resolve) =>
      child.on('exit', (code, signal) => {
        if (!stopping) {
          process.stderr.write(
            `bakery dev: ${role} exited (${signal ?? code}); stopping the others\n`,
          )
          stopAll('SIGTERM')
        }
        resolve(code ?? 1)
      }),
    )
  })
  process.on('SIGINT', () => stopAll('SIGTERM'))
  process.on('SIGTERM', () => stopAll('SIGTERM'))
  process.on('exit', () => stopAll('SIGKILL'))
  const codes = await Promise.all(exits)
  return codes.every((code) => code === 0) ? 0 : 1
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(
      `bakery: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    )
    process.exit(1)
  },
)
