import * as t from 'io-ts'
import { OrderEvent, OrderKey } from '../messages'
import { OrderView } from '../projections/order-view'
import { toJsonSchema, type Json, type JsonSchema } from './json-schema'
import { OrderRequest } from './orders'

/**
 * The reception's HTTP contract. Every body it answers has an io-ts codec here (or beside the
 * domain it comes from); the routes annotate their bodies with these types, so a change to one is
 * a compile error until the other follows, and `/openapi.json` is generated from the codecs.
 */

export const RootMessage = t.exact(t.type({ message: t.string }))
export type RootMessage = t.TypeOf<typeof RootMessage>

export const OrderAccepted = t.exact(t.type({ orderKey: OrderKey }))
export type OrderAccepted = t.TypeOf<typeof OrderAccepted>

const HistoryEntry = t.exact(
  t.type({
    version: t.number,
    type: t.keyof({
      'bakery/order-placed': null,
      'bakery/baking-started': null,
      'bakery/order-baked': null,
    }),
    recordedAt: t.string,
    sincePreviousMs: t.union([t.number, t.null]),
    traceId: t.union([t.string, t.null]),
    streamId: t.string,
    event: OrderEvent,
  }),
)
export const OrderHistoryBody = t.exact(
  t.type({
    orderKey: t.string,
    entries: t.readonlyArray(HistoryEntry),
    skipped: t.readonlyArray(t.exact(t.type({ streamId: t.string, reason: t.string }))),
  }),
)
export type OrderHistoryBody = t.TypeOf<typeof OrderHistoryBody>

export const Liveness = t.exact(t.type({ status: t.literal('alive') }))
const DependencyState = t.keyof({ up: null, down: null })
export const Readiness = t.exact(
  t.type({
    status: t.keyof({ ready: null, 'not ready': null }),
    redis: DependencyState,
    rabbitmq: DependencyState,
  }),
)
export type ReadinessBody = t.TypeOf<typeof Readiness>

/** RFC 9457 problem details, as problem.ts writes them. */
export const ProblemDetails = t.intersection([
  t.type({ type: t.string, title: t.string, status: t.number, detail: t.string }),
  t.partial({
    instance: t.string,
    /** On a 500: the trace of the request, to find it in Jaeger and in the log (when traced). */
    traceId: t.string,
    errors: t.readonlyArray(t.exact(t.type({ path: t.string, message: t.string }))),
  }),
])

/** `Idempotency-Key`: what a client may send (see placeOrder). */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x21-\\x7e]{1,255}$'

const json = (schema: Json) => ({ 'application/json': { schema } })
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` })
const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: ref('Problem') } },
})
const orderKeyParameter = {
  name: 'key',
  in: 'path',
  required: true,
  description: 'The `orderKey` POST /orders answered.',
  schema: ref('OrderKey'),
}
const unavailable = problem(
  'Service Unavailable: Redis cannot be reached; retry after `Retry-After` seconds.',
)

const schemas: Record<string, JsonSchema> = {
  OrderKey: toJsonSchema(OrderKey, { closed: true }),
  OrderRequest: toJsonSchema(OrderRequest, { closed: false }),
  OrderAccepted: toJsonSchema(OrderAccepted, { closed: true }),
  OrderView: toJsonSchema(OrderView, { closed: true }),
  OrderHistory: toJsonSchema(OrderHistoryBody, { closed: true }),
  RootMessage: toJsonSchema(RootMessage, { closed: true }),
  Liveness: toJsonSchema(Liveness, { closed: true }),
  Readiness: toJsonSchema(Readiness, { closed: true }),
  Problem: toJsonSchema(ProblemDetails, { closed: false }),
}

/**
 * Every operation of the reception's API, by operationId: where it is, what it takes and what it
 * answers. The router registers one handler per entry (src/reception/app.ts, checked by the
 * compiler) and the OpenAPI document's `paths` are built from it, so the two cannot drift apart.
 */
export const operations = {
  greet: {
    method: 'get',
    path: '/',
    summary: 'Says the reception is attended (JSON), or serves the storefront page (HTML).',
    responses: {
      '200': {
        description: 'JSON for API clients; the storefront for `Accept: text/html`.',
        content: {
          'application/json': { schema: ref('RootMessage') },
          'text/html': { schema: { type: 'string' } },
        },
      },
    },
  },
  placeOrder: {
    method: 'post',
    path: '/orders',
    summary: 'Places an order; the baker takes it from there.',
    parameters: [
      {
        name: 'Idempotency-Key',
        in: 'header',
        required: false,
        description:
          'Makes retries safe: the same key with the same body answers the same orderKey ' +
          'and places nothing new; with another body, 422. Remembered for ' +
          'IDEMPOTENCY_TTL_SECONDS (default a day).',
        schema: { type: 'string', pattern: IDEMPOTENCY_KEY_PATTERN },
      },
    ],
    requestBody: { required: true, content: json(ref('OrderRequest')) },
    responses: {
      '202': {
        description:
          'Accepted; the order is pending, and GET /orders/{key} answers it from now on.',
        headers: {
          Location: { schema: { type: 'string' }, description: 'The order: /orders/{key}.' },
          'Idempotent-Replayed': {
            schema: { const: 'true' },
            description: 'Present when this answers a retry with the same Idempotency-Key.',
          },
        },
        content: json(ref('OrderAccepted')),
      },
      '400': problem(
        'Bad Request (the body is not a JSON object, or the Idempotency-Key is malformed) ' +
          'or Invalid Order (`errors` names each field by its JSON Pointer).',
      ),
      '413': problem('Content Too Large: the body is over 16 KiB.'),
      '415': problem('Unsupported Media Type: send application/json in UTF-8.'),
      '422': problem('Unprocessable Content: the Idempotency-Key was used for another order.'),
      '503': unavailable,
    },
  },
  getOrder: {
    method: 'get',
    path: '/orders/{key}',
    summary:
      'The order as it is now: its read-model view, with any events of its log the view ' +
      'has not folded yet (the read model is written when the order is placed and when ' +
      'it is baked; in between, this still says baking).',
    parameters: [orderKeyParameter],
    responses: {
      '200': { description: 'The order.', content: json(ref('OrderView')) },
      '404': problem('Not Found: no order has this key.'),
      '503': unavailable,
    },
  },
  getOrderEvents: {
    method: 'get',
    path: '/orders/{key}/events',
    summary: "The order's history, oldest first, with the trace id of each event.",
    parameters: [orderKeyParameter],
    responses: {
      '200': { description: 'The history.', content: json(ref('OrderHistory')) },
      '404': problem('Not Found: no order has this key.'),
      '503': unavailable,
    },
  },
  followOrder: {
    method: 'get',
    path: '/orders/{key}/updates',
    summary: 'Server-Sent Events: the order at once, then each change; closes once it is finished.',
    description:
      'Each event has `id` = the order version and `data` = the order as GET /orders/{key} ' +
      'answers it (schema OrderView). Comment lines are sent every SSE_HEARTBEAT_MS.',
    parameters: [
      orderKeyParameter,
      {
        name: 'Last-Event-ID',
        in: 'header',
        required: false,
        description: 'The last id received: the stream resumes after it.',
        schema: { type: 'string', pattern: '^[0-9]+$' },
      },
    ],
    responses: {
      '200': {
        description: 'The stream.',
        content: {
          'text/event-stream': { schema: { type: 'string' } },
        },
      },
      '204': {
        description: 'Last-Event-ID is the finished order: nothing more will come.',
      },
      '404': problem('Not Found: no order has this key.'),
      '429': problem(
        'Too Many Requests: this client address has SSE_MAX_STREAMS_PER_CLIENT streams open.',
      ),
      '503': unavailable,
    },
  },
  liveness: {
    method: 'get',
    path: '/healthz',
    summary: 'The process is alive.',
    responses: { '200': { description: 'Alive.', content: json(ref('Liveness')) } },
  },
  readiness: {
    method: 'get',
    path: '/readyz',
    summary:
      'Can serve: connected to Redis (the reception accepts orders while RabbitMQ is away); the body tells each dependency.',
    responses: {
      '200': { description: 'Ready.', content: json(ref('Readiness')) },
      '503': { description: 'Not ready.', content: json(ref('Readiness')) },
    },
  },
  metrics: {
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics (text exposition format).',
    responses: {
      '200': {
        description: 'Metrics.',
        content: { 'text/plain': { schema: { type: 'string' } } },
      },
    },
  },
  openApi: {
    method: 'get',
    path: '/openapi.json',
    summary: 'This document.',
    responses: {
      '200': { description: 'OpenAPI 3.1.', content: json({ type: 'object' }) },
    },
  },
} satisfies Record<string, Operation>

export type OperationId = keyof typeof operations

interface Operation {
  readonly method: 'get' | 'post'
  /** OpenAPI's form, `{key}` for a parameter. */
  readonly path: string
  readonly summary: string
  readonly description?: string
  readonly parameters?: readonly Json[]
  readonly requestBody?: Json
  readonly responses: Record<string, Json>
}

/** An OpenAPI path as the router writes it: `/orders/{key}` -> `/orders/:key`. */
export const routerPath = (path: string) => path.replace(/\{(\w+)\}/g, ':$1')

/** The OpenAPI 3.1 document served at `/openapi.json`. */
export function openApiDocument(): Json {
  const paths: Record<string, Record<string, Json>> = {}
  for (const [operationId, { method, path, ...operation }] of Object.entries(operations))
    (paths[path] ??= {})[method] = { operationId, ...operation }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Bakery reception',
      version: '1.0.0',
      description:
        'Order pastries and follow them from pending to baking to finished. Every error is ' +
        'application/problem+json (RFC 9457); a method a path does not support is 405 with Allow.',
    },
    paths,
    components: { schemas },
  }
}
