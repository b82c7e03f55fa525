import pino, { type DestinationStream, type Logger } from 'pino'
import { isSpanContextValid, trace } from '@opentelemetry/api'
import type { LoggerFactory } from '@node-ts/bus-core'

export type { Logger }

/** What an error says, for a log line or a message to a person: its message, or the value itself. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * JSON lines for machines; colourful lines when a person watches a terminal. A line written
 * inside a trace carries its `trace_id` and `span_id`, so Jaeger and the log tell one story.
 */
export function createLogger(name: string, level: string, destination?: DestinationStream): Logger {
  const pretty = !destination && process.stdout.isTTY && canResolve('pino-pretty')
  const options = {
    name,
    level,
    mixin: traceFields,
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { ignore: 'pid,hostname' } } }
      : {}),
  }
  return destination ? pino(options, destination) : pino(options)
}

/** The active span's ids (OpenTelemetry's log data model names), or nothing outside a trace. */
export function traceFields(): { trace_id?: string; span_id?: string; trace_flags?: string } {
  const context = trace.getActiveSpan()?.spanContext()
  if (!context || !isSpanContextValid(context)) return {}
  return {
    trace_id: context.traceId,
    span_id: context.spanId,
    trace_flags: `0${context.traceFlags.toString(16)}`,
  }
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
  // bus-core asks for its handler registry's logger once per message: one child per name.
  const byName = new Map<string, ReturnType<LoggerFactory>>()
  return (name) => {
    const known = byName.get(name)
    if (known) return known
    const child = logger.child({ component: name })
    const busLogger: ReturnType<LoggerFactory> = {
      trace: (message, meta) => child.trace(meta ?? {}, message),
      debug: (message, meta) => child.debug(meta ?? {}, message),
      info: (message, meta) => child.debug(meta ?? {}, message),
      warn: (message, meta) => child.warn(meta ?? {}, message),
      error: (message, meta) => child.debug(meta ?? {}, message),
      fatal: (message, meta) => child.fatal(meta ?? {}, message),
    }
    byName.set(name, busLogger)
    return busLogger
  }
}
