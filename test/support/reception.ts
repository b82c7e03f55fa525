import pino from 'pino'
import { loadConfig } from '../../src/platform/config'
import { orderEventStore } from '../../src/wiring'
import { keys } from '../../src/platform/keys'
import type { AppDeps } from '../../src/reception/app'
import { OrderFeed } from '../../src/reception/order-feed'
import type { RedisClient } from '../../src/platform/redis'
import type { ScriptedRedis } from '../../src/platform/scripts'

/**
 * What createApp needs beyond the store: a feed of order changes reading `reader` (a connection
 * of its own, since it blocks; not started: call `feed.start()` to follow orders) and the
 * settings at their documented defaults.
 */
export function receptionExtras(
  reader: RedisClient,
  commands: ScriptedRedis,
  namespace: string,
  settings: Partial<AppDeps['settings']> = {},
): Pick<AppDeps, 'feed' | 'settings'> {
  const config = loadConfig({})
  return {
    feed: new OrderFeed({
      reader,
      log: keys(namespace).partitions[0]!.events,
      store: orderEventStore(commands, keys(namespace)),
      logger: pino({ level: 'silent' }),
    }),
    settings: {
      heartbeatMs: config.SSE_HEARTBEAT_MS,
      idempotencyTtlSeconds: config.IDEMPOTENCY_TTL_SECONDS,
      jaegerUi: config.JAEGER_UI_URL,
      maxRequestsInFlight: config.MAX_REQUESTS_IN_FLIGHT,
      maxStreamsPerClient: config.SSE_MAX_STREAMS_PER_CLIENT,
      maxStreamSeconds: config.SSE_MAX_STREAM_SECONDS,
      ...settings,
    },
  }
}
