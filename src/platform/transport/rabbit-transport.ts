import { randomUUID } from 'node:crypto'
import type { ChannelModel, ConsumeMessage } from 'amqplib'
import {
  HandlerDispatchRejected,
  isClassHandler,
  type BusInstance,
  type CoreDependencies,
  type FunctionHandler,
  type Receiver,
  type Transport,
  type TransportMessage,
} from '@node-ts/bus-core'
import type { Command, Event, MessageAttributes } from '@node-ts/bus-messages'
import type { AnyMessageDefinition } from '../../messages'
import { BrokerUnavailable, PoisonMessage } from '../errors'
import type { Logger } from '../logger'
import { metrics } from '../metrics'
import { classicQueues, type QueuePolicy } from '../queue-types'
import { SENT_AT_HEADER, tracePublish, traceProcess } from '../tracing'
import type { Acknowledgements } from './acknowledgements'
import { ConnectionSupervisor } from './connection'
import { Consumer, type ConsumerSettings } from './consumer'
import { decodeDelivery } from './delivery'
import { FailedDeliveries } from './failures'
import { ConfirmedPublisher } from './publisher'
import { attemptOf, type RetryPolicy } from './settle-policy'
import { declareTopology, type Topology } from './topology'

export interface RabbitTransportOptions {
  /** The nodes of one cluster (or one broker): each process starts at a random one, then the next. */
  readonly brokers: readonly URL[]
  /** Classic queues unless said otherwise. */
  readonly queues?: QueuePolicy
  readonly topology: Topology
  readonly retry: RetryPolicy
  readonly logger: Logger
  /** The queue this process consumes, if any, and how many messages it holds at once. */
  readonly consume?: ConsumerSettings
}

type Handler = FunctionHandler<Command | Event>

/**
 * Bakery's RabbitMQ transport for @node-ts/bus-core. It keeps @node-ts/bus-rabbitmq's topology and
 * wire format (a durable fanout exchange per message `$name`, service queues bound to them, the
 * `attributes` / `stickyAttributes` headers as JSON, `correlationId` and `messageId` properties),
 * and fixes where that package loses or stalls messages: see docs/architecture.md. The parts: a
 * connection supervisor, a confirmed publisher, a consumer, and the settle policy (what becomes of
 * a message its handler failed on), which this class applies.
 */
export class RabbitTransport implements Transport<ConsumeMessage>, Receiver<ConsumeMessage> {
  private readonly log: Logger
  private readonly accepted: ReadonlyMap<string, AnyMessageDefinition>
  private readonly connection: ConnectionSupervisor
  private readonly publisher: ConfirmedPublisher
  private readonly consumer: Consumer | undefined
  private readonly failures: FailedDeliveries
  private bus: BusInstance | undefined
  private core: CoreDependencies | undefined
  /** bus-core's handlers of each message the queue takes, by `$name` (see `dispatch`). */
  private handlers: ReadonlyMap<string, readonly Handler[]> = new Map()

  constructor(private readonly options: RabbitTransportOptions) {
    this.log = options.logger.child({ component: 'rabbitmq' })
    const queue = options.topology.queues.find((q) => q.name === options.consume?.queue)
    if (options.consume && !queue)
      throw new Error(`queue ${options.consume.queue} is not in the topology`)
    this.accepted = new Map((queue?.messages ?? []).map((m) => [m.$name, m]))
    const drop = (error?: unknown) => this.connection.drop(error)
    this.publisher = new ConfirmedPublisher({
      unroutable: (channel, message) => {
        this.log.warn(
          { exchange: message.fields.exchange, routingKey: message.fields.routingKey },
          'RabbitMQ could not route a message; declaring the topology again',
        )
        return this.declare(channel)
      },
      failed: drop,
    })
    this.consumer =
      options.consume &&
      new Consumer(options.consume, (delivery, acks) => this.handle(delivery, acks), drop)
    this.failures = new FailedDeliveries(
      {
        queue: options.consume?.queue ?? '',
        deadLetterQueue: options.topology.deadLetterQueue,
        retry: options.retry,
      },
      (...args) => this.publishConfirmed(...args),
      this.log,
    )
    const name = `bakery ${options.consume?.queue ?? 'sender'} ${process.pid}`
    this.connection = new ConnectionSupervisor(options.brokers, name, this.log, {
      opened: (connection) => this.opened(connection),
      serving: async () => {
        if (this.bus && this.connection.state.kind === 'open')
          await this.consumer?.start(this.connection.state.connection)
      },
      lost: () => {
        this.publisher.detach()
        this.consumer?.lost()
      },
    })
  }

  /** Connected, with the whole topology declared (and consuming, where this process consumes). */
  get isReady(): boolean {
    return this.connection.state.kind === 'open'
  }

  /** Resolves once the transport is ready, or after `timeoutMs`; says which. */
  waitUntilReady(timeoutMs: number): Promise<boolean> {
    return this.connection.waitUntilOpen(timeoutMs)
  }

  prepare(core: CoreDependencies): void {
    this.core = core
  }

  async connect(): Promise<void> {
    this.connection.start()
    return Promise.resolve()
  }

  /**
   * Starts handing deliveries to the handlers registered with `bus` (withHandler); consuming
   * begins as soon as the broker is there.
   */
  startConsuming(bus: BusInstance): void {
    this.bus = bus
    this.handlers = this.registeredHandlers()
    const state = this.connection.state
    if (state.kind === 'open')
      void this.consumer?.start(state.connection).catch((error) => this.connection.drop(error))
  }

  /** Stops taking deliveries and waits for those in hand to be acknowledged or handed back. */
  async stopConsuming(): Promise<void> {
    this.bus = undefined
    await this.consumer?.stop()
  }

  async disconnect(): Promise<void> {
    await this.stopConsuming()
    await this.connection.close()
  }

  async publish<TEvent extends Event>(event: TEvent, attributes?: MessageAttributes) {
    await this.publishMessage(event, attributes)
  }

  async send<TCommand extends Command>(command: TCommand, attributes?: MessageAttributes) {
    await this.publishMessage(command, attributes)
  }

  async fail(message: TransportMessage<unknown>): Promise<void> {
    const raw = message.raw as ConsumeMessage
    await this.failures.deadLetter(raw, 'failed by its handler', attemptOf(raw.properties.headers))
  }

  /** Unused: Bakery consumes by push (`basic.consume`) through the Receiver interface. */
  async readNextMessage(): Promise<undefined> {
    return Promise.resolve(undefined)
  }

  /** Unused in receiver mode: the transport acknowledges once the handlers settled. */
  async deleteMessage(): Promise<void> {}

  /** Unused in receiver mode: failures are retried or dead-lettered by the transport itself. */
  async returnMessage(): Promise<void> {}

  /** Decodes a delivery; anything that can never be handled is a PoisonMessage. */
  async receive(raw: ConsumeMessage): Promise<TransportMessage<ConsumeMessage>> {
    return Promise.resolve(decodeDelivery(raw, this.accepted, this.options.consume?.queue))
  }

  /**
   * Hands a delivery to bus-core's handlers of its message, with the message and its context
   * (`correlationId`, `attributes`, `stickyAttributes`), as `bus.receive` would. `bus.receive`
   * itself is not used: per message it opens three async-local contexts, makes a logger and runs
   * a middleware chain, most of what the bus cost a message (docs/performance.md). Bakery's
   * handlers use none of it: they write to Redis, and the relay sends what they wrote.
   */
  async dispatch(raw: ConsumeMessage): Promise<void> {
    const { domainMessage, attributes } = decodeDelivery(
      raw,
      this.accepted,
      this.options.consume?.queue,
    )
    const handlers = this.handlers.get(domainMessage.$name) ?? []
    if (handlers.length === 0) throw new PoisonMessage(`no handler for ${domainMessage.$name}`)
    if (handlers.length === 1) return handlers[0]!(domainMessage, attributes)
    const results = await Promise.allSettled(
      handlers.map(async (handle) => handle(domainMessage, attributes)),
    )
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [unwrap(r.reason)] : []))
    if (failures.length > 0) throw new HandlerDispatchRejected(failures)
  }

  /** Looked up once: bus-core's registry makes a logger on every lookup. */
  private registeredHandlers(): Map<string, Handler[]> {
    const core = this.core
    if (!core) throw new Error('the transport was not prepared by bus-core')
    const found = new Map<string, Handler[]>()
    for (const name of this.accepted.keys()) {
      const handlers = core.handlerRegistry.get(core.loggerFactory, { $name: name })
      if (handlers.some(isClassHandler))
        throw new Error(`${name}: class handlers need a container, which Bakery does not use`)
      found.set(name, handlers as Handler[])
    }
    return found
  }

  private async opened(connection: ChannelModel): Promise<void> {
    const channel = await connection.createConfirmChannel()
    this.publisher.attach(channel)
    await this.declare(channel)
  }

  private declare(channel: Parameters<typeof declareTopology>[0]): Promise<void> {
    const { topology, queues, retry } = this.options
    const vhost = decodeURIComponent(this.connection.broker.pathname.slice(1)) || '/'
    return declareTopology(channel, topology, queues ?? classicQueues, retry, vhost)
  }

  private async publishMessage(
    message: Command | Event,
    attributes: MessageAttributes = { attributes: {}, stickyAttributes: {} },
  ): Promise<void> {
    const content = Buffer.from(JSON.stringify(message))
    const messageId = randomUUID()
    const span = {
      destination: message.$name,
      messageId,
      correlationId: attributes.correlationId,
      orderKey: attributes.correlationId,
      bodySize: content.length,
      broker: this.connection.broker,
    }
    await tracePublish(span, attributes.attributes, (traced) =>
      this.publishConfirmed(message.$name, '', content, {
        correlationId: attributes.correlationId,
        messageId,
        type: message.$name,
        timestamp: Math.floor(Date.now() / 1000),
        headers: {
          attributes: JSON.stringify(traced),
          stickyAttributes: JSON.stringify(attributes.stickyAttributes),
          [SENT_AT_HEADER]: Date.now(),
        },
      }),
    )
  }

  /** Publishes once the topology is declared: until then a message might find no queue. */
  private publishConfirmed(...args: Parameters<ConfirmedPublisher['publish']>): Promise<void> {
    if (!this.isReady) return Promise.reject(new BrokerUnavailable())
    return this.publisher.publish(...args)
  }

  private async handle(delivery: ConsumeMessage, acks: Acknowledgements): Promise<void> {
    try {
      const queue = this.options.consume?.queue ?? ''
      const attempt = attemptOf(delivery.properties.headers)
      const traced = { delivery, queue, attempt, broker: this.connection.broker, cause: unwrap }
      await traceProcess(traced, () => this.dispatch(delivery))
      acks.ack(delivery)
      metrics.messageHandled(delivery.properties.type)
    } catch (error) {
      await this.failures.settle(delivery, acks, unwrap(error))
    }
  }
}

/** bus-core wraps handler errors; the first one is what the transport acts on. */
function unwrap(error: unknown): Error {
  if (error instanceof HandlerDispatchRejected && error.rejections[0])
    return unwrap(error.rejections[0])
  return error instanceof Error ? error : new Error(String(error))
}
