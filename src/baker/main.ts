import { PlaceOrder } from '../messages'
import { announceListening } from '../platform/announce'
import type { Config } from '../platform/config'
import type { Logger } from '../platform/logger'
import { exitOnSignal, handlerFor, startHealthServer, startService } from '../platform/service'
import { bakery, queues } from '../wiring'
import { bake } from './baker'
import { Sweeper } from './sweeper'

export async function runBaker(config: Config, logger: Logger): Promise<void> {
  const service = await startService({
    config,
    logger,
    domain: bakery,
    relay: true,
    consume: {
      queue: queues.baker,
      handlers: ({ store }) => [
        handlerFor(PlaceOrder, async (command) => {
          const deps = {
            store,
            bakeTimeScale: config.BAKE_TIME_SCALE,
            now: () => new Date(),
            random: Math.random,
          }
          await bake(deps, command)
        }),
      ],
    },
  })
  const sweeper = new Sweeper({
    redis: service.redis,
    store: service.store,
    logger,
    stuckAfterMs: config.STUCK_ORDER_AFTER_MS,
  })
  sweeper.start()
  const health = await startHealthServer(config.HEALTH_PORT, service.readiness, logger)
  logger.info({ queue: queues.baker, prefetch: config.PREFETCH }, 'baker is at the oven')
  announceListening('baker', { health: health.port })
  exitOnSignal(logger, config.SHUTDOWN_TIMEOUT_MS, async () => {
    await sweeper.stop()
    await service.stop()
    health.close()
  })
}
