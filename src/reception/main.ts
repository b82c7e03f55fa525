import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { Config } from '../platform/config'
import type { Logger } from '../platform/logger'
import { exitOnSignal, startService } from '../platform/service'
import { ViewStore } from '../projections/view-store'
import { createApp } from './app'
import { randomOrderKey } from './orders'

export async function runReception(config: Config, logger: Logger): Promise<void> {
  const service = await startService({ config, logger, relay: true })
  const app = createApp({
    store: service.store,
    views: new ViewStore(service.redis, service.keys),
    now: () => new Date(),
    newOrderKey: randomOrderKey,
    logger,
    isReady: service.isReady,
  })
  const server = app.listen(config.PORT)
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  logger.info({ port }, `reception is attended at http://127.0.0.1:${port}/`)
  exitOnSignal(logger, config.SHUTDOWN_TIMEOUT_MS, async () => {
    // Stop taking requests, let those in hand finish, then stop relaying and disconnect.
    const closed = new Promise((resolve) => server.close(resolve))
    server.closeIdleConnections()
    await closed
    await service.stop()
  })
}
