import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { announceListening } from '../platform/announce'
import type { Config } from '../platform/config'
import type { Logger } from '../platform/logger'
import { connectRedis } from '../platform/redis'
import { exitOnSignal, startService } from '../platform/service'
import { bakery } from '../wiring'
import { ViewStore } from '../projections/view-store'
import { createApp } from './app'
import { answerClientError } from './client-error'
import { OrderFeed, type OrderUpdates } from './order-feed'
import { randomOrderKey } from './orders'

export async function runReception(config: Config, logger: Logger): Promise<void> {
  const service = await startService({ config, logger, domain: bakery, relay: true })
  // One blocking connection per partition serves every update stream of this reception (see
  // order-feed.ts); an order's watchers go to its partition's feed.
  const { partitions } = service.keys
  const feeds = partitions.map((partition) => {
    const name = partitions.length === 1 ? 'order-updates' : `order-updates-p${partition.index}`
    return new OrderFeed({
      reader: connectRedis(config, logger, { failFast: false, name }),
      log: partition.events,
      store: service.store,
      logger,
    })
  })
  for (const partitionFeed of feeds) partitionFeed.start()
  const feed: OrderUpdates = {
    subscribe: (orderKey, version, subscriber) =>
      feeds[service.keys.of(orderKey).index]!.subscribe(orderKey, version, subscriber),
  }
  const app = createApp({
    store: service.store,
    views: new ViewStore(service.redis, service.keys),
    now: () => new Date(),
    newOrderKey: randomOrderKey,
    outboxLimit: config.OUTBOX_MAX_DEPTH,
    logger,
    readiness: service.readiness,
    feed,
    settings: {
      heartbeatMs: config.SSE_HEARTBEAT_MS,
      idempotencyTtlSeconds: config.IDEMPOTENCY_TTL_SECONDS,
      jaegerUi: config.JAEGER_UI_URL,
      maxRequestsInFlight: config.MAX_REQUESTS_IN_FLIGHT,
      maxStreamsPerClient: config.SSE_MAX_STREAMS_PER_CLIENT,
      maxStreamSeconds: config.SSE_MAX_STREAM_SECONDS,
    },
  })
  // Clients that send slowly (slowloris) or idle on a kept-alive connection are cut off; Node
  // checks these timeouts every connectionsCheckingInterval, by default only every 30 s.
  const handle = app.callback()
  const server = createServer(
    {
      headersTimeout: config.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: config.HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: config.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(1000, config.HTTP_HEADERS_TIMEOUT_MS),
    },
    (req, res) => void handle(req, res),
  )
  server.listen(config.PORT)
  server.on('clientError', answerClientError)
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  logger.info({ port }, `reception is attended at http://127.0.0.1:${port}/`)
  announceListening('reception', { http: port })
  exitOnSignal(logger, config.SHUTDOWN_TIMEOUT_MS, async () => {
    // Stop taking requests, let those in hand finish, then stop relaying and disconnect. Update
    // streams end at once: their clients reconnect, with Last-Event-ID, to another replica.
    const closed = new Promise((resolve) => server.close(resolve))
    server.closeIdleConnections()
    await Promise.all(feeds.map((partitionFeed) => partitionFeed.stop()))
    await closed
    await service.stop()
  })
}
