import { PlaceOrder } from '../messages'
import type { Config } from '../platform/config'
import type { Logger } from '../platform/logger'
import { exitOnSignal, handlerFor, startHealthServer, startService } from '../platform/service'
import { queues } from '../platform/topology'
import { bake } from './baker'

export async function runBaker(config: Config, logger: Logger): Promise<void> {
  const service = await startService({
    config,
    logger,
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
  const health = await startHealthServer(config.HEALTH_PORT, service.readiness, logger)
  logger.info({ queue: queues.baker, prefetch: config.PREFETCH }, 'baker is at the oven')
  exitOnSignal(logger, config.SHUTDOWN_TIMEOUT_MS, async () => {
    await service.stop()
    health.close()
  })
}
