import { createServer } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AddressInfo } from 'node:net'
import { Bus, type BusInstance } from '@node-ts/bus-core'
import type { MessageAttributes } from '@node-ts/bus-messages'
import type { AnyMessageDefinition, MessageOf } from '../messages'
import type { Config } from './config'
import { EventStore } from './event-store'
import type { EventCodec } from './stored-events'
import { keys, type Keys } from './keys'
import { busLoggerFactory, type Logger } from './logger'
import { metrics, metricsText } from './metrics'
import { OutboxRelay } from './outbox-relay'
import { RabbitTransport, type Topology } from './transport'
import { connectRedis, replicationOf } from './redis'
import { claimPartitionLayout, PartitionMismatch } from './partition-layout'
import { delayAfter, reconnecting } from './backoff'
import { runShutdownHooks } from './shutdown'
import { markOrder } from './tracing'
import type { ScriptedRedis } from './scripts'

export interface MessageHandler<D extends AnyMessageDefinition = AnyMessageDefinition> {
  readonly message: D
  readonly handle: (message: MessageOf<D>, attributes: MessageAttributes) => Promise<void>
}

export const handlerFor = <D extends AnyMessageDefinition>(
  message: D,
  handle: (message: MessageOf<D>, attributes: MessageAttributes) => Promise<void>,
): MessageHandler => ({ message, handle: handle as MessageHandler['handle'] })

/** What the event store holds: a domain event, known by its `$name`. */
type Event = { readonly $name: string }

/**
 * What a domain gives the platform: its queues and messages, which of a message's fields
 * correlates it, and the events its log holds.
 */
export interface Domain<E extends Event> {
  readonly topology: Topology
  readonly correlationIdOf: (message: object) => string | undefined
  readonly events: EventCodec<E>
}

export interface ServiceOptions<E extends Event> {
  readonly config: Config
  readonly logger: Logger
  readonly domain: Domain<E>
  /** The queue this role consumes and its handlers; none for a role that only sends. */
  readonly consume?: {
    readonly queue: string
    readonly handlers: (persistence: Persistence<E>) => readonly MessageHandler[]
  }
  /** Whether this role relays the outbox to the bus. */
  readonly relay: boolean
}

/** What a role's handlers read and write with: its Redis connection, its keys, its event store. */
export interface Persistence<E extends Event = Event> {
  readonly redis: ScriptedRedis
  readonly keys: Keys
  readonly store: EventStore<E>
}

/** Whether a role can serve, and the state of each dependency, as `/readyz` reports it. */
export interface Readiness {
  readonly ready: boolean
  readonly redis: 'up' | 'down'
  /** Connected with the topology declared. */
  readonly rabbitmq: 'up' | 'down'
}

/** The platform every role stands on: Redis, the event store, the bus and the outbox relay. */
export interface Service<E extends Event = Event> extends Persistence<E> {
  readonly bus: BusInstance
  readonly transport: RabbitTransport
  /**
   * Ready means "can serve". A consumer needs Redis and RabbitMQ; a role that only sends (the
   * reception) needs Redis alone: while the broker is away its outbox holds what it accepts.
   * Neither is ready before its BAKERY_PARTITIONS was checked against the store.
   */
  readonly readiness: () => Readiness
  /** Stops taking work, finishes or hands back what is in hand, closes connections. */
  readonly stop: () => Promise<void>
}

export async function startService<E extends Event>({
  config,
  logger,
  domain: { topology, correlationIdOf, events },
  consume,
  relay,
}: ServiceOptions<E>): Promise<Service<E>> {
  const redisKeys = keys(config.BAKERY_NAMESPACE, config.BAKERY_PARTITIONS)
  // Consumers hold commands while Redis is away (the message waits); the reception fails fast.
  // Its commands answer requests: a stalled Redis must not hold them, so they time out.
  const redis = connectRedis(config, logger, {
    failFast: !consume,
    name: 'commands',
    ...(consume ? {} : { commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS }),
  })
  let stopped = false
  let layoutChecked = false
  void keepCheckingLayout(redis, redisKeys, logger, () => stopped).then(
    () => (layoutChecked = true),
  )
  const store = new EventStore(redis, redisKeys, events, undefined, replicationOf(config))
  const transport = new RabbitTransport({
    brokers: config.AMQP_URL,
    queues: { type: config.QUEUE_TYPE, deliveryLimit: config.QUEUE_DELIVERY_LIMIT },
    topology,
    logger,
    retry: {
      maxAttempts: config.RETRY_MAX_ATTEMPTS,
      backoff: { initialMs: config.RETRY_INITIAL_DELAY_MS, maxMs: config.RETRY_MAX_DELAY_MS },
    },
    ...(consume ? { consume: { queue: consume.queue, prefetch: config.PREFETCH } } : {}),
  })
  let configuration = Bus.configure()
    .withTransport(transport)
    .withLogger(busLoggerFactory(logger))
    .withConcurrency(config.PREFETCH)
  if (consume) {
    configuration = configuration.withReceiver(transport)
    for (const { message, handle } of consume.handlers({ redis, keys: redisKeys, store }))
      configuration = configuration.withHandler({
        messageType: message.Class,
        messageHandler: (received, attributes) => {
          const orderKey = correlationIdOf(received)
          if (orderKey !== undefined) markOrder(orderKey)
          return handle(received, attributes)
        },
      })
  } else {
    configuration = configuration.asSendOnly()
  }
  const bus = configuration.build()
  await bus.initialize()
  if (consume) transport.startConsuming(bus)

  // A relay per partition, each on a connection of its own: a blocking read holds its connection.
  const messages = topology.queues.flatMap((queue) => queue.messages)
  const relays = (relay ? redisKeys.partitions : []).map(
    (partition) =>
      new OutboxRelay({
        redis: connectRedis(config, logger, {
          failFast: false,
          name: redisKeys.partitions.length === 1 ? 'relay' : `relay-p${partition.index}`,
        }),
        outboxKey: partition.outbox,
        parkedKey: partition.parked,
        bus,
        messages,
        correlationIdOf,
        logger,
        claimAfterMs: config.RELAY_CLAIM_AFTER_MS,
      }),
  )
  for (const outboxRelay of relays) outboxRelay.start()

  const readiness = (): Readiness => {
    const redisUp = redis.status === 'ready'
    const brokerUp = transport.isReady
    return {
      ready: layoutChecked && redisUp && (brokerUp || !consume),
      redis: redisUp ? 'up' : 'down',
      rabbitmq: brokerUp ? 'up' : 'down',
    }
  }
  metrics.reportDependencies(() => {
    const state = readiness()
    return { redis: state.redis === 'up', rabbitmq: state.rabbitmq === 'up' }
  })

  return {
    redis,
    keys: redisKeys,
    store,
    bus,
    transport,
    readiness,
    stop: async () => {
      stopped = true
      await transport.stopConsuming()
      await Promise.all(relays.map((outboxRelay) => outboxRelay.stop()))
      await bus.dispose()
      // QUIT would wait in the offline queue for a Redis that is away.
      if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect())
      else redis.disconnect()
    },
  }
}

/**
 * Checks BAKERY_PARTITIONS against the store once Redis answers; a role started with the wrong
 * number stops at once with the reason (exit 78, as for any bad setting). Until the check passed
 * the role is not ready, so no Service sends it work meanwhile.
 */
async function keepCheckingLayout(
  redis: ScriptedRedis,
  redisKeys: Keys,
  logger: Logger,
  stopped: () => boolean,
): Promise<void> {
  for (let attempt = 1; !stopped(); attempt++) {
    try {
      await claimPartitionLayout(redis, redisKeys)
      return
    } catch (error) {
      if (error instanceof PartitionMismatch) {
        logger.fatal(error.message)
        process.exit(78)
      }
      await sleep(delayAfter(reconnecting, attempt))
    }
  }
}

/** Runs `stop` on SIGTERM or SIGINT, then exits: 0 if it finished in time, 1 if not. */
export function exitOnSignal(logger: Logger, timeoutMs: number, stop: () => Promise<void>): void {
  let stopping = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn(`${signal} again: exiting now`)
      process.exit(1)
    }
    stopping = true
    logger.info(`${signal}: stopping (at most ${timeoutMs} ms)`)
    const timer = setTimeout(() => {
      logger.error('in-flight work did not finish in time; exiting anyway')
      process.exit(1)
    }, timeoutMs)
    timer.unref()
    // Then the last spans, which tell how the stop went.
    stop()
      .finally(() => runShutdownHooks())
      .then(
        () => {
          logger.info('stopped')
          process.exit(0)
        },
        (error: unknown) => {
          logger.error({ err: error }, 'stopping failed')
          process.exit(1)
        },
      )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
}

/** `/healthz`, `/readyz` and `/metrics` for roles without an HTTP API of their own. */
export async function startHealthServer(
  port: number,
  readiness: () => Readiness,
  logger: Logger,
): Promise<{ readonly port: number; readonly close: () => void }> {
  const server = createServer((req, res) => {
    const path = req.url?.split('?')[0]
    if (path === '/metrics') {
      metricsText().then(
        ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        (error: unknown) => {
          logger.error({ err: error }, 'cannot collect metrics')
          res.writeHead(500).end()
        },
      )
      return
    }
    const [status, body] =
      path === '/healthz'
        ? [200, { status: 'alive' }]
        : path === '/readyz'
          ? readinessResponse(readiness())
          : [404, { title: 'Not Found', status: 404 }]
    res
      .writeHead(status, {
        'content-type': 'application/json',
        'x-content-type-options': 'nosniff',
      })
      .end(JSON.stringify(body))
  })
  await new Promise<void>((resolve) => server.listen(port, resolve))
  const listening = (server.address() as AddressInfo).port
  logger.info({ port: listening }, 'health endpoints listening')
  return { port: listening, close: () => server.close() }
}

/** The status and body of `/readyz`: 503 when the role cannot serve, and each dependency's state. */
export function readinessResponse({
  ready,
  redis,
  rabbitmq,
}: Readiness): [
  status: number,
  body: Omit<Readiness, 'ready'> & { status: 'ready' | 'not ready' },
] {
  return [ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', redis, rabbitmq }]
}
