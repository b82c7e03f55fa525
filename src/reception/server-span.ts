import type { Context, Next } from 'koa'
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Span,
} from '@opentelemetry/api'
import { RPCType, setRPCMetadata } from '@opentelemetry/core'
import { Attr, tracesAreRecorded } from '../platform/tracing'

/** Probes and scrapes, not work: tracing them would bury the orders' traces. */
const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

/** The methods the HTTP conventions name as they are; any other is `_OTHER`. */
const KNOWN_METHODS = new Set([
  'CONNECT',
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
])

/**
 * The reception's SERVER span for each request, the root of an order's trace (or the child of
 * the caller's `traceparent`). It carries the HTTP conventions' required attributes and no more:
 * the method, the path and scheme, then the route and the status code. `http.route` comes from
 * the router, so the span is named `POST /orders`, never after an order's key. Koa's router span
 * (`@opentelemetry/instrumentation-koa`) hangs under it.
 *
 * Bakery makes this span itself rather than through `@opentelemetry/instrumentation-http`, which
 * wraps every request's and response's emitters and sets a dozen more attributes: that was most
 * of what tracing added to a request (docs/performance.md). The span ends when the response is
 * done, so an update stream's span lasts as long as the stream.
 */
export async function serverSpan(ctx: Context, next: Next): Promise<void> {
  if (!tracesAreRecorded() || UNTRACED_PATHS.has(ctx.path)) {
    await next()
    return
  }
  const parent = propagation.extract(ROOT_CONTEXT, ctx.headers)
  const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : '_OTHER'
  const span = trace.getTracer('bakery').startSpan(method, { kind: SpanKind.SERVER }, parent)
  if (span.isRecording())
    span.setAttributes({
      [Attr.httpMethod]: method,
      [Attr.urlPath]: ctx.path,
      [Attr.urlScheme]: ctx.protocol,
    })
  ctx.set('traceresponse', traceResponse(span))
  ctx.res.once('close', () => endServerSpan(span, ctx, method))
  // The RPC metadata is how Koa's instrumentation and `markOrder` find the server span.
  const active = setRPCMetadata(trace.setSpan(parent, span), { type: RPCType.HTTP, span })
  await context.with(active, next)
}

function endServerSpan(span: Span, ctx: Context, method: string): void {
  const status = ctx.res.statusCode
  const route = (ctx as { _matchedRoute?: unknown })._matchedRoute
  if (typeof route === 'string') {
    span.updateName(`${method} ${route}`)
    span.setAttribute(Attr.httpRoute, route)
  }
  span.setAttribute(Attr.httpStatus, status)
  if (status >= 500) {
    span.setAttribute(Attr.errorType, String(status))
    span.setStatus({ code: SpanStatusCode.ERROR })
  }
  span.end()
}

/**
 * W3C Trace Context Level 2's `traceresponse` header, `00-<trace id>-<server span id>-<flags>`:
 * every traced response says which trace it belongs to.
 */
function traceResponse(span: Span): string {
  const { traceId, spanId, traceFlags } = span.spanContext()
  return `00-${traceId}-${spanId}-${(traceFlags & TraceFlags.SAMPLED) !== 0 ? '01' : '00'}`
}
