import Koa, { type Context, type Next } from 'koa'
import Router, { type RouterMiddleware } from '@koa/router'
import { isRight } from 'fp-ts/lib/Either'
import { OrderKey } from '../messages'
import { OutboxFull } from '../platform/errors'
import { describeError, type Logger } from '../platform/logger'
import { asStoreUnavailable } from '../platform/redis'
import { metrics, metricsText } from '../platform/metrics'
import { readinessResponse, type Readiness } from '../platform/service'
import { markOrder } from '../platform/tracing'
import { readHistory } from '../projections/order-history'
import type { OrderView } from '../projections/order-view'
import {
  IDEMPOTENCY_KEY_PATTERN,
  openApiDocument,
  operations,
  routerPath,
  type OperationId,
  type OrderAccepted,
  type OrderHistoryBody,
  type ReadinessBody,
  type RootMessage,
} from './contract'
import { limitInFlight } from './in-flight'
import { decodeOrThrow, readJsonObject } from './json-body'
import type { OrderUpdates } from './order-feed'
import {
  findOrder,
  IdempotencyKeyReused,
  OrderRequest,
  placeOrder,
  placeOrderOnce,
  type OrdersDeps,
  type Placed,
} from './orders'
import { problemMiddleware, problems } from './problem'
import { serverSpan } from './server-span'
import { STOREFRONT_CSP, storefrontPage } from './storefront/page'
import { loadStorefrontScript } from './storefront/script'
import { storefrontStyles } from './storefront/styles'
import { StreamLimits, streamUpdates } from './updates'

export interface AppDeps extends OrdersDeps {
  readonly logger: Logger
  /** Whether the reception can serve (it needs Redis), and the broker's state. */
  readonly readiness: () => Readiness
  /** Order changes as Redis has them, for GET /orders/:key/updates. */
  readonly feed: OrderUpdates
  readonly settings: {
    /** SSE_HEARTBEAT_MS */
    readonly heartbeatMs: number
    /** IDEMPOTENCY_TTL_SECONDS */
    readonly idempotencyTtlSeconds: number
    /** JAEGER_UI_URL, where the storefront's trace links point. */
    readonly jaegerUi: URL
    /** MAX_REQUESTS_IN_FLIGHT */
    readonly maxRequestsInFlight: number
    /** SSE_MAX_STREAMS_PER_CLIENT */
    readonly maxStreamsPerClient: number
    /** SSE_MAX_STREAM_SECONDS */
    readonly maxStreamSeconds: number
  }
}

const idempotencyKeyPattern = new RegExp(IDEMPOTENCY_KEY_PATTERN)

/** The reception's HTTP API. Each route: decode, call the domain, map the result. */
export function createApp(deps: AppDeps): Koa {
  const router = new Router()

  const page = storefrontPage(deps.settings.jaegerUi)
  const script = loadStorefrontScript()
  const updates = {
    ...deps,
    heartbeatMs: deps.settings.heartbeatMs,
    limits: new StreamLimits(
      deps.settings.maxStreamsPerClient,
      deps.settings.maxStreamSeconds * 1000,
    ),
  }
  const contract = JSON.stringify(openApiDocument())

  // Every documented operation, by its operationId in the contract: the compiler holds the two
  // together, and the router takes its paths from the contract.
  const handlers: Record<OperationId, RouterMiddleware> = {
    // API clients (curl's */*, application/json) get the original's JSON; browsers get the page.
    greet: (ctx) => {
      ctx.vary('accept')
      if (ctx.accepts('json', 'html') === 'html') {
        ctx.set('content-security-policy', STOREFRONT_CSP)
        ctx.type = 'html'
        ctx.body = page
        return
      }
      ctx.body = { message: 'reception is attended' } satisfies RootMessage
    },
    placeOrder: async (ctx) => {
      const idempotencyKey = idempotencyKeyOf(ctx)
      const request = decodeOrThrow(OrderRequest, await readJsonObject(ctx))
      const placed = await unavailableOnError(
        deps,
        (): Promise<Placed> =>
          idempotencyKey === undefined
            ? placeOrder(deps, request).then((orderKey) => ({ orderKey, replayed: false }))
            : placeOrderOnce(deps, request, {
                key: idempotencyKey,
                ttlSeconds: deps.settings.idempotencyTtlSeconds,
              }).catch((error: unknown) => {
                throw error instanceof IdempotencyKeyReused
                  ? problems.idempotencyKeyReused()
                  : error
              }),
      )
      markOrder(placed.orderKey)
      if (placed.replayed) ctx.set('idempotent-replayed', 'true')
      else metrics.orderAccepted()
      ctx.status = 202
      ctx.set('location', `/orders/${placed.orderKey}`)
      ctx.body = { orderKey: placed.orderKey } satisfies OrderAccepted
    },

    getOrder: async (ctx) => {
      const key = OrderKey.decode(ctx.params.key)
      if (isRight(key)) markOrder(key.right)
      const view = isRight(key)
        ? await unavailableOnError(deps, () => findOrder(deps, key.right))
        : undefined
      if (!view) throw problems.noSuchOrder(ctx.params.key)
      ctx.body = view satisfies OrderView
    },

    getOrderEvents: async (ctx) => {
      const key = OrderKey.decode(ctx.params.key)
      const history = isRight(key)
        ? await unavailableOnError(deps, () => readHistory(deps.store, key.right))
        : undefined
      if (!history || (history.entries.length === 0 && history.skipped.length === 0))
        throw problems.noSuchOrder(ctx.params.key)
      ctx.body = history satisfies OrderHistoryBody
    },

    followOrder: async (ctx) => {
      const key = OrderKey.decode(ctx.params.key)
      if (isRight(key)) markOrder(key.right)
      const found =
        isRight(key) &&
        (await unavailableOnError(deps, () => streamUpdates(ctx, updates, key.right)))
      if (!found) throw problems.noSuchOrder(ctx.params.key)
    },

    openApi: (ctx) => {
      ctx.type = 'application/json'
      ctx.body = contract
    },

    metrics: async (ctx) => {
      const { contentType, body } = await metricsText()
      ctx.type = contentType
      ctx.body = body
    },

    liveness: (ctx) => {
      ctx.body = { status: 'alive' }
    },

    readiness: (ctx) => {
      const [status, body] = readinessResponse(deps.readiness())
      ctx.status = status
      ctx.body = body satisfies ReadinessBody
    },
  }
  for (const [id, { method, path }] of Object.entries(operations))
    router[method](routerPath(path), handlers[id as OperationId])
  // The storefront page's own assets: not API, so not in the contract.
  router.get('/storefront.js', (ctx) => {
    ctx.type = 'text/javascript; charset=utf-8'
    ctx.body = script
  })
  router.get('/storefront.css', (ctx) => {
    ctx.type = 'text/css; charset=utf-8'
    ctx.body = storefrontStyles
  })

  const app = new Koa()
  app.use(serverSpan)
  app.use(noSniff)
  app.use(requestMetrics)
  app.use(problemMiddleware(deps.logger))
  app.use(limitInFlight(deps.settings.maxRequestsInFlight))
  app.use(router.routes())
  app.use(router.allowedMethods())
  // Koa would log errors to stderr a second time; the problem middleware already did.
  app.silent = true
  return app
}

/**
 * Redis that cannot answer now is not the client's fault, nor a bug: 503, and the client may try
 * again. Only that, and a full outbox, are.
 */
async function unavailableOnError<T>(deps: AppDeps, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    if (error instanceof OutboxFull)
      throw problems.unavailable(
        'the reception has a backlog of orders still to pass on to the bakers; try again shortly',
      )
    const unavailable = asStoreUnavailable(error)
    // Anything else (a malformed stored entry, a bug) is not cured by retrying: the problem
    // middleware answers it 500 and logs it with its trace.
    if (!unavailable) throw error
    // One short line per refused request: the outage itself is announced by the connection.
    deps.logger.warn(
      { reason: describeError(unavailable.cause) },
      'answered 503: the event store is unavailable',
    )
    throw problems.unavailable('orders cannot be reached right now; try again shortly')
  }
}

/** `Idempotency-Key`, if sent; a malformed one is the client's mistake, said at once. */
function idempotencyKeyOf(ctx: Context): string | undefined {
  if (!('idempotency-key' in ctx.headers)) return undefined
  const key = ctx.get('idempotency-key')
  if (!idempotencyKeyPattern.test(key))
    throw problems.badRequest(
      'the Idempotency-Key header must be 1 to 255 visible ASCII characters (a UUID will do)',
    )
  return key
}

/** Browsers must take every body as the type it is sent with, never guess a riskier one. */
async function noSniff(ctx: Context, next: Next): Promise<void> {
  ctx.set('x-content-type-options', 'nosniff')
  await next()
}

/**
 * Times each request until its response is done (for an update stream, until it closes), by the
 * route that matched, so that order keys do not become label values.
 */
async function requestMetrics(ctx: Context, next: Next): Promise<void> {
  const started = performance.now()
  let recorded = false
  const record = () => {
    if (recorded) return
    recorded = true
    const route = (ctx as { _matchedRoute?: unknown })._matchedRoute
    metrics.httpRequest(
      ctx.method,
      typeof route === 'string' ? route : 'unmatched',
      ctx.status,
      performance.now() - started,
    )
  }
  ctx.res.once('finish', record)
  ctx.res.once('close', record)
  await next()
}
