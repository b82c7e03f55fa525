import Koa from 'koa'
import Router from '@koa/router'
import { isRight } from 'fp-ts/lib/Either'
import { OrderKey } from '../messages'
import type { Logger } from '../platform/logger'
import { markOrder } from '../platform/tracing'
import { readHistory } from '../projections/order-history'
import { decodeOrThrow, readJsonObject } from './json-body'
import { findOrder, OrderRequest, placeOrder, type OrdersDeps } from './orders'
import { problemMiddleware, problems } from './problem'

export interface AppDeps extends OrdersDeps {
  readonly logger: Logger
  /** Connected to Redis and RabbitMQ, topology declared. */
  readonly isReady: () => boolean
}

/** The reception's HTTP API. Each route: decode, call the domain, map the result. */
export function createApp(deps: AppDeps): Koa {
  const router = new Router()

  router.get('/', (ctx) => {
    ctx.body = { message: 'reception is attended' }
  })

  router.post('/orders', async (ctx) => {
    const request = decodeOrThrow(OrderRequest, await readJsonObject(ctx))
    const orderKey = await unavailableOnError(deps, () => placeOrder(deps, request))
    markOrder(orderKey)
    ctx.status = 202
    ctx.set('location', `/orders/${orderKey}`)
    ctx.body = { orderKey }
  })

  router.get('/orders/:key', async (ctx) => {
    const key = OrderKey.decode(ctx.params.key)
    if (isRight(key)) markOrder(key.right)
    const view = isRight(key)
      ? await unavailableOnError(deps, () => findOrder(deps, key.right))
      : undefined
    if (!view)
      throw problems.notFound(
        `there is no order with key ${JSON.stringify(ctx.params.key)}; order keys are 32 lowercase hex digits, as POST /orders returned`,
      )
    ctx.body = view
  })

  router.get('/orders/:key/events', async (ctx) => {
    const key = OrderKey.decode(ctx.params.key)
    const history = isRight(key)
      ? await unavailableOnError(deps, () => readHistory(deps.store, key.right))
      : undefined
    if (!history || (history.entries.length === 0 && history.skipped.length === 0))
      throw problems.notFound(`there is no order with key ${JSON.stringify(ctx.params.key)}`)
    ctx.body = history
  })

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'alive' }
  })

  router.get('/readyz', (ctx) => {
    const ready = deps.isReady()
    ctx.status = ready ? 200 : 503
    ctx.body = { status: ready ? 'ready' : 'not ready' }
  })

  const app = new Koa()
  app.use(problemMiddleware(deps.logger))
  app.use(router.routes())
  app.use(router.allowedMethods())
  // Koa would log errors to stderr a second time; the problem middleware already did.
  app.silent = true
  return app
}

/** Redis being away is not the client's fault, nor a bug: 503, and the client may try again. */
async function unavailableOnError<T>(deps: AppDeps, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    deps.logger.error({ err: error }, 'the event store is unavailable')
    throw problems.unavailable('orders cannot be reached right now; try again shortly')
  }
}
