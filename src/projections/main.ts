import { OrderBaked } from '../messages'
import { announceListening } from '../platform/announce'
import type { Config } from '../platform/config'
import type { Logger } from '../platform/logger'
import { replicationOf } from '../platform/redis'
import { exitOnSignal, handlerFor, startHealthServer, startService } from '../platform/service'
import { bakery, queues } from '../wiring'
import { projectOrder } from './projector'
import { ViewStore } from './view-store'

export async function runProjector(config: Config, logger: Logger): Promise<void> {
  const service = await startService({
    config,
    logger,
    domain: bakery,
    relay: false,
    consume: {
      queue: queues.projector,
      handlers: ({ redis, keys }) => {
        const deps = { views: new ViewStore(redis, keys, replicationOf(config)) }
        return [handlerFor(OrderBaked, (message) => projectOrder(deps, message))]
      },
    },
  })
  const health = await startHealthServer(config.HEALTH_PORT, service.readiness, logger)
  logger.info({ queue: queues.projector, prefetch: config.PREFETCH }, 'projector is folding events')
  announceListening('projector', { health: health.port })
  exitOnSignal(logger, config.SHUTDOWN_TIMEOUT_MS, async () => {
    await service.stop()
    health.close()
  })
}
