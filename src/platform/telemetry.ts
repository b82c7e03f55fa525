import { NodeSDK } from '@opentelemetry/sdk-node'
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http'
import { KoaInstrumentation } from '@opentelemetry/instrumentation-koa'
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis'

/**
 * Starts OpenTelemetry before any instrumented module loads. Everything about export is
 * configured by the standard OTEL_* variables; `serviceName` is only the default name.
 */
export function startTelemetry(serviceName: string): { shutdown: () => Promise<void> } {
  process.env.OTEL_SERVICE_NAME ??= serviceName
  const sdk = new NodeSDK({
    instrumentations: [
      new HttpInstrumentation(),
      new KoaInstrumentation(),
      new IORedisInstrumentation(),
    ],
  })
  sdk.start()
  return { shutdown: () => sdk.shutdown() }
}
