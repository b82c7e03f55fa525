import { setTimeout as sleep } from 'node:timers/promises'
import { diag, type Span } from '@opentelemetry/api'
import { getBooleanFromEnv, setGlobalErrorHandler } from '@opentelemetry/core'
import { NodeSDK } from '@opentelemetry/sdk-node'
import { KoaInstrumentation, KoaLayerType } from '@opentelemetry/instrumentation-koa'
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis'
import { describeError, type Logger } from './logger'
import { onShutdown } from './shutdown'
import { Attr } from './tracing'

/** How long a stopping role waits for its last spans to reach the collector. */
const FLUSH_TIMEOUT_MS = 3000

/**
 * Starts OpenTelemetry before any instrumented module loads. Export is configured only by the
 * standard OTEL_* variables (sdk-node picks the OTLP exporter for `http/protobuf`, `http/json`
 * or `grpc` from OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL); `serviceName` is only the default name.
 * Bakery exports traces: metrics and logs exporters stay off unless OTEL_METRICS_EXPORTER /
 * OTEL_LOGS_EXPORTER ask for them, so a plain Jaeger is all a developer needs.
 *
 * An order's trace is lean by default: the request, and a `send` and a `process` span per bus
 * message (docs/tracing.md). A span per Redis command (`traceRedis`, BAKERY_TRACE_REDIS) adds
 * about ten more per order, and their cost: it is for looking into Redis, on demand.
 */
export function startTelemetry(
  serviceName: string,
  logger: Logger,
  { traceRedis }: { readonly traceRedis: boolean },
): void {
  process.env.OTEL_SERVICE_NAME ??= serviceName
  process.env.OTEL_METRICS_EXPORTER ??= 'none'
  process.env.OTEL_LOGS_EXPORTER ??= 'none'
  // Instrumentations patch their modules as they are constructed, SDK or not: a disabled SDK
  // should cost nothing, so nothing is constructed.
  if (getBooleanFromEnv('OTEL_SDK_DISABLED')) return
  const sdk = new NodeSDK({
    // The request's SERVER span is the reception's own (src/reception/server-span.ts).
    instrumentations: [
      // The router's spans say which route ran; one span per plain middleware says little.
      new KoaInstrumentation({ ignoreLayersType: [KoaLayerType.MIDDLEWARE] }),
      ...(traceRedis
        ? [
            // Redis calls outside a trace (the relay polling the outbox) would each start one.
            new IORedisInstrumentation({
              requireParentSpan: true,
              dbStatementSerializer: describeRedisCommand,
              requestHook: (span, { cmdArgs }) => tagOrderKey(span, cmdArgs),
            }),
          ]
        : []),
    ],
  })
  sdk.start()
  setGlobalErrorHandler(reportOnce(logger))
  onShutdown(() =>
    Promise.race([sdk.shutdown(), sleep(FLUSH_TIMEOUT_MS, undefined, { ref: false })]),
  )
}

/**
 * The command and its keys, never the values: those carry customers' names. For a script that
 * is its SHA and its keys.
 */
function describeRedisCommand(name: string, args: readonly unknown[]): string {
  const keyCount = /^eval/i.test(name) && args.length >= 2 ? 2 + (Number(String(args[1])) || 0) : 1
  const shown = args.slice(0, keyCount).map((arg) => (Buffer.isBuffer(arg) ? '<bytes>' : arg))
  const hidden = args.length - shown.length
  return [name, ...shown.map(String), ...(hidden > 0 ? [`[${hidden} other arguments]`] : [])].join(
    ' ',
  )
}

const ORDER_KEY_ARG = /(?:^|:)([0-9a-f]{32})$/

/** A Redis call about one order (its stream, its view) carries the order's key. */
function tagOrderKey(span: Span, args: readonly unknown[]): void {
  for (const arg of args) {
    const match = typeof arg === 'string' ? ORDER_KEY_ARG.exec(arg) : null
    if (match?.[1]) {
      span.setAttribute(Attr.orderKey, match[1])
      return
    }
  }
}

/**
 * With no collector reachable every export fails; one line says so, the rest go to the OTel
 * diagnostic logger (silent unless OTEL_LOG_LEVEL is set), so the log stays readable.
 */
function reportOnce(logger: Logger): (error: unknown) => void {
  let reported = false
  return (error) => {
    const reason = describeError(error)
    if (reported) {
      diag.debug(`telemetry: ${reason}`)
      return
    }
    reported = true
    logger.warn(
      { reason },
      'cannot export traces (is an OTLP collector listening at OTEL_EXPORTER_OTLP_ENDPOINT?); ' +
        'spans are dropped until it is; further export errors are not logged',
    )
  }
}
