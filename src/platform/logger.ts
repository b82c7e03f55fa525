import pino, { type Logger } from 'pino'
import type { LoggerFactory } from '@node-ts/bus-core'

export type { Logger }

/** JSON lines for machines; colourful lines when a person watches a terminal. */
export function createLogger(name: string, level: string): Logger {
  const pretty = process.stdout.isTTY && canResolve('pino-pretty')
  return pino({
    name,
    level,
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { ignore: 'pid,hostname' } } }
      : {}),
  })
}

function canResolve(module: string): boolean {
  try {
    require.resolve(module)
    return true
  } catch {
    return false
  }
}

/**
 * bus-core logs every received message at info level, and every handler failure at error level
 * before the transport has decided what to do with it. Both are demoted to debug: the transport
 * logs the decision (retry or dead-letter) once, and a busy baker's log still reads.
 */
export function busLoggerFactory(logger: Logger): LoggerFactory {
  return (name) => {
    const child = logger.child({ component: name })
    return {
      trace: (message, meta) => child.trace(meta ?? {}, message),
      debug: (message, meta) => child.debug(meta ?? {}, message),
      info: (message, meta) => child.debug(meta ?? {}, message),
      warn: (message, meta) => child.warn(meta ?? {}, message),
      error: (message, meta) => child.debug(meta ?? {}, message),
      fatal: (message, meta) => child.fatal(meta ?? {}, message),
    }
  }
}
