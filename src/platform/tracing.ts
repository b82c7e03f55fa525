import {
  context,
  createContextKey,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Span,
  ProxyTracerProvider,
} from '@opentelemetry/api'
import { getRPCMetadata } from '@opentelemetry/core'
import type { ConsumeMessage } from 'amqplib'

/**
 * Bakery's own spans. The bus hops follow the OpenTelemetry messaging conventions: a
 * `send <exchange>` PRODUCER span around each publish, whose context travels in the message's
 * `attributes` header (per hop: bus-core does not copy plain attributes to the messages a handler
 * sends), and a `process <exchange>` CONSUMER span, its child, around each delivery's handling.
 * Only the API is used here: without a started SDK every span is a no-op. Attributes are built
 * only for spans that are recorded (`isRecording`): a trace the sampler dropped costs its
 * context, not its attributes.
 */

/**
 * Attribute names: the HTTP conventions', the messaging conventions' (incubating, so spelled out
 * here) and Bakery's.
 */
export const Attr = {
  messagingSystem: 'messaging.system',
  messagingSystemName: 'messaging.system.name',
  destination: 'messaging.destination.name',
  subscription: 'messaging.destination.subscription.name',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  bodySize: 'messaging.message.body.size',
  deliveryTag: 'messaging.rabbitmq.message.delivery_tag',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  errorType: 'error.type',
  httpMethod: 'http.request.method',
  httpRoute: 'http.route',
  httpStatus: 'http.response.status_code',
  urlPath: 'url.path',
  urlScheme: 'url.scheme',
  orderKey: 'bakery.order_key',
  attempt: 'bakery.delivery.attempt',
  pastry: 'bakery.pastry',
  mistake: 'bakery.mistake',
  bakeMs: 'bakery.bake_ms',
  timeOnQueueMs: 'bakery.time_on_queue_ms',
  timeToCompletionMs: 'bakery.time_to_completion_ms',
  orderStatus: 'bakery.order.status',
  appendedVersions: 'bakery.appended_versions',
  eventsFolded: 'bakery.events_folded',
  viewVersion: 'bakery.view.version',
} as const

export const SENT_AT_HEADER = 'x-bakery-sent-at'

const tracer = () => trace.getTracer('bakery')
const sentAtKey = createContextKey('bakery message sent at')

type AttributeValues = Record<string, string | number | boolean | undefined>

export interface PublishDetails {
  /** The exchange, which Bakery names after the message's `$name`. */
  readonly destination: string
  readonly messageId: string
  readonly correlationId: string | undefined
  readonly orderKey: string | undefined
  readonly bodySize: number
  readonly broker: URL
}

/**
 * Runs `publish` inside a `send <destination>` PRODUCER span. `publish` gets the message's
 * attributes with the span's context added (`traceparent`, `tracestate`): they go out in the
 * `attributes` header, where the consumer looks for them.
 */
export async function tracePublish<T>(
  details: PublishDetails,
  attributes: AttributeValues,
  publish: (attributes: AttributeValues) => Promise<T>,
): Promise<T> {
  // Without an SDK there is no span to make and no context to pass on.
  if (!tracesAreRecorded()) return publish(attributes)
  return tracer().startActiveSpan(
    `send ${details.destination}`,
    { kind: SpanKind.PRODUCER },
    (span) => {
      if (span.isRecording()) span.setAttributes(publishAttributes(details))
      const outgoing: AttributeValues = { ...attributes }
      propagation.inject(context.active(), outgoing)
      return endSpanAfter(span, () => publish(outgoing))
    },
  )
}

function publishAttributes(details: PublishDetails): Attributes {
  const attributes: Attributes = {
    ...messagingAttributes('send', details.destination, details.broker),
    [Attr.messageId]: details.messageId,
    [Attr.bodySize]: details.bodySize,
  }
  if (details.correlationId !== undefined) attributes[Attr.conversationId] = details.correlationId
  if (details.orderKey !== undefined) attributes[Attr.orderKey] = details.orderKey
  return attributes
}

export interface DeliveryDetails {
  readonly delivery: ConsumeMessage
  /** The queue the delivery came from. */
  readonly queue: string
  /** 1 for the first delivery, then one more for each retry. */
  readonly attempt: number
  readonly broker: URL
  /** What is worth recording of an error that `work` threw (bus-core wraps handler errors). */
  readonly cause: (error: unknown) => Error
}

/**
 * Runs `work` (the whole handling of one delivery) inside a `process <destination>` CONSUMER
 * span, the child of the `send` span whose context the `attributes` header carries. A failure is
 * recorded on the span and rethrown for the transport to retry or dead-letter the message.
 */
export async function traceProcess(
  details: DeliveryDetails,
  work: () => Promise<void>,
): Promise<void> {
  if (!tracesAreRecorded()) return work()
  const { properties, fields } = details.delivery
  // Retries come back through the default exchange; `type` still names the original one.
  const destination = typeof properties.type === 'string' ? properties.type : fields.exchange
  const headers: Record<string, unknown> = properties.headers ?? {}
  let parent = propagation.extract(ROOT_CONTEXT, carrierOf(headers.attributes))
  const sentAt = headers[SENT_AT_HEADER]
  if (typeof sentAt === 'number' && Number.isFinite(sentAt))
    parent = parent.setValue(sentAtKey, sentAt)
  await tracer().startActiveSpan(
    `process ${destination}`,
    { kind: SpanKind.CONSUMER },
    parent,
    (span) => {
      if (span.isRecording()) span.setAttributes(processAttributes(details, destination))
      return endSpanAfter(span, work, details.cause)
    },
  )
}

function processAttributes(
  { delivery, queue, attempt, broker }: DeliveryDetails,
  destination: string,
): Attributes {
  const { properties, fields } = delivery
  const attributes: Attributes = {
    ...messagingAttributes('process', destination, broker),
    [Attr.subscription]: queue,
    [Attr.bodySize]: delivery.content.length,
    [Attr.deliveryTag]: fields.deliveryTag,
    [Attr.attempt]: attempt,
  }
  if (typeof properties.messageId === 'string') attributes[Attr.messageId] = properties.messageId
  if (typeof properties.correlationId === 'string')
    attributes[Attr.conversationId] = properties.correlationId
  return attributes
}

/** When the message being handled was published (ms since the epoch), if its sender said. */
export function messageSentAt(): number | undefined {
  const value = context.active().getValue(sentAtKey)
  return typeof value === 'number' ? value : undefined
}

/**
 * Adds attributes to the active span (for a handler, the `process` span of its message); they
 * are built only if that span is recorded.
 */
export function annotate(attributes: () => Attributes): void {
  const span = trace.getActiveSpan()
  if (span?.isRecording()) span.setAttributes(attributes())
}

/** Ends `span` once `work` settles; a failure (as `cause` tells it) is recorded first, and rethrown. */
async function endSpanAfter<T>(
  span: Span,
  work: () => Promise<T>,
  cause: (error: unknown) => unknown = (error) => error,
): Promise<T> {
  try {
    return await work()
  } catch (error) {
    recordFailure(span, cause(error))
    throw error
  } finally {
    span.end()
  }
}

/**
 * Tags the active span with the order it is about (a request's, or a message's correlation id),
 * and the HTTP server span around it too, so that searching Jaeger for `bakery.order_key=<key>`
 * finds the trace's root.
 */
export function markOrder(orderKey: string): void {
  annotate(() => ({ [Attr.orderKey]: orderKey }))
  const server = getRPCMetadata(context.active())?.span
  if (server?.isRecording()) server.setAttribute(Attr.orderKey, orderKey)
}

/** An error on its span: the exception event, `error.type`, and the error status. */
export function recordFailure(span: Span, error: unknown): void {
  const failure = error instanceof Error ? error : new Error(String(error))
  span.recordException(failure)
  span.setAttribute(Attr.errorType, failure.name)
  span.setStatus({ code: SpanStatusCode.ERROR, message: `${failure.name}: ${failure.message}` })
}

/** The attributes every span of one operation on one destination shares, built once each. */
const sharedAttributes = new Map<string, Attributes>()

function messagingAttributes(
  operation: 'send' | 'process',
  destination: string,
  broker: URL,
): Attributes {
  // A handful of destinations and one broker: reading a URL's parts showed in the profiles.
  const key = `${operation} ${destination} ${broker.href}`
  let shared = sharedAttributes.get(key)
  if (!shared) {
    shared = {
      [Attr.messagingSystem]: 'rabbitmq',
      [Attr.messagingSystemName]: 'rabbitmq',
      [Attr.destination]: destination,
      [Attr.operationType]: operation,
      [Attr.operationName]: operation,
      [Attr.serverAddress]: broker.hostname,
      [Attr.serverPort]: Number(broker.port || (broker.protocol === 'amqps:' ? 5671 : 5672)),
    }
    sharedAttributes.set(key, shared)
  }
  return shared
}

/** The string entries of an `attributes` header; anything unreadable is no context at all. */
function carrierOf(header: unknown): Record<string, string> {
  const text = Buffer.isBuffer(header) ? header.toString('utf8') : header
  if (typeof text !== 'string') return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return {}
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {}
  const carrier: Record<string, string> = {}
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>))
    if (typeof value === 'string') carrier[key] = value
  return carrier
}

/** What the global tracer provider delegates to while no SDK is registered. */
const NO_SDK = new ProxyTracerProvider().getDelegate()

/**
 * Whether an SDK records spans in this process. Without one the API is a no-op, and optimisations
 * that would blur which span a call belongs to (Redis auto-pipelining) are free to run.
 */
export function tracesAreRecorded(): boolean {
  const provider = trace.getTracerProvider()
  return provider instanceof ProxyTracerProvider && provider.getDelegate() !== NO_SDK
}
