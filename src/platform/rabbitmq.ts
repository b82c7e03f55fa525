import { randomUUID } from 'node:crypto'
import { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import amqp, {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type Message,
  type Options,
} from 'amqplib'
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
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { describeFieldErrors, type AnyMessageDefinition } from '../messages'
import { redact } from './config'
import { describeError, type Logger } from './logger'
import { metrics } from './metrics'
import {
  classicQueues,
  deadLetterQueue,
  explainMismatch,
  QueueMismatch,
  retryQueue,
  workQueue,
  type QueuePolicy,
} from './queue-types'
import { SENT_AT_HEADER, tracePublish, traceProcess } from './tracing'

/**
 * Bakery's RabbitMQ transport for @node-ts/bus-core. It keeps @node-ts/bus-rabbitmq's topology and
 * wire format (a durable fanout exchange per message `$name`, service queues bound to them, the
 * `attributes` / `stickyAttributes` headers as JSON, `correlationId` and `messageId` properties),
 * and fixes where that package loses or stalls messages: see docs/architecture.md.
 */

export interface QueueSpec {
  readonly name: string
  readonly messages: readonly AnyMessageDefinition[]
}

export interface Topology {
  readonly queues: readonly QueueSpec[]
  readonly deadLetterQueue: string
}

export interface RetryPolicy {
  readonly maxAttempts: number
  readonly initialDelayMs: number
  readonly maxDelayMs: number
}

/** Delay before attempt `attempt + 1`, after `attempt` attempts failed. */
export function retryDelay(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.initialDelayMs * 2 ** (attempt - 1), policy.maxDelayMs)
}

export const retryQueueName = (queue: string, delayMs: number) => `${queue}.retry.${delayMs}ms`

/** Headers Bakery adds to a message it retries or dead-letters. */
export const Headers = {
  attempt: 'x-bakery-attempt',
  reason: 'x-bakery-reason',
  queue: 'x-bakery-queue',
  failedAt: 'x-bakery-failed-at',
} as const

/** A message that can never be handled: dead-lettered at once, never retried. */
export class PoisonMessage extends Error {
  override readonly name = 'PoisonMessage'
}

/** Thrown by a handler when retrying cannot help (the data is wrong, not the world). */
export class PermanentFailure extends Error {
  override readonly name: string = 'PermanentFailure'
}

/** The broker returned a mandatory publish: no queue is bound to take it. */
export class Unroutable extends Error {
  override readonly name = 'Unroutable'
  constructor(exchange: string, routingKey: string) {
    super(
      `RabbitMQ could not route a message to ${exchange ? `exchange ${exchange}` : `queue ${routingKey}`}: no queue is bound`,
    )
  }
}

export class BrokerUnavailable extends Error {
  override readonly name = 'BrokerUnavailable'
  constructor() {
    super('not connected to RabbitMQ')
  }
}

export interface RabbitTransportOptions {
  /** The nodes of one cluster (or one broker): each process starts at a random one, then the next. */
  readonly brokers: readonly URL[]
  /** Classic queues unless said otherwise. */
  readonly queues?: QueuePolicy
  readonly topology: Topology
  readonly retry: RetryPolicy
  readonly logger: Logger
  /** The queue this process consumes, if any, and how many messages it holds at once. */
  readonly consume?: { readonly queue: string; readonly prefetch: number }
}

const AttributeMap = t.record(t.string, t.union([t.string, t.number, t.boolean]))

type Handler = FunctionHandler<Command | Event>
const utf8 = new TextDecoder('utf-8', { fatal: true })

export class RabbitTransport implements Transport<ConsumeMessage>, Receiver<ConsumeMessage> {
  private readonly log: Logger
  private readonly accepted: ReadonlyMap<string, AnyMessageDefinition>
  private connection: ChannelModel | undefined
  private publisher: ConfirmChannel | undefined
  private consumer: { channel: Channel; tag: string; acks: Acknowledgements } | undefined
  private bus: BusInstance | undefined
  private core: CoreDependencies | undefined
  /** bus-core's handlers of each message the queue takes, by `$name` (see `dispatch`). */
  private handlers: ReadonlyMap<string, readonly Handler[]> = new Map()
  private connected = false
  private closing = false
  private running: Promise<void> | undefined
  private wake: (() => void) | undefined
  private readonly inFlight = new Set<Promise<void>>()
  private readonly readyWaiters = new Set<() => void>()
  /** Message ids of publishes the broker returned (it acks them too; they failed all the same). */
  private readonly returned = new Set<string>()
  private redeclaring: Promise<void> | undefined
  /** The node connected to, or tried next. A random start spreads the roles over the cluster. */
  private node: number
  private broker: URL

  constructor(private readonly options: RabbitTransportOptions) {
    this.log = options.logger.child({ component: 'rabbitmq' })
    if (options.brokers.length === 0) throw new Error('no RabbitMQ node to connect to')
    this.node = Math.floor(Math.random() * options.brokers.length)
    this.broker = options.brokers[this.node]!
    const queue = options.topology.queues.find((q) => q.name === options.consume?.queue)
    if (options.consume && !queue)
      throw new Error(`queue ${options.consume.queue} is not in the topology`)
    this.accepted = new Map((queue?.messages ?? []).map((m) => [m.$name, m]))
  }

  /** Connected, with the whole topology declared (and consuming, where this process consumes). */
  get isReady(): boolean {
    return this.connected
  }

  /** Resolves once the transport is ready, or after `timeoutMs`; says which. */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    if (this.connected) return true
    let done: () => void = () => {}
    const ready = new Promise<void>((resolve) => (done = resolve))
    this.readyWaiters.add(done)
    const timer = sleep(timeoutMs, undefined, { ref: false })
    await Promise.race([ready, timer])
    this.readyWaiters.delete(done)
    return this.connected
  }

  prepare(core: CoreDependencies): void {
    this.core = core
  }

  /** Starts connecting in the background: a role must run (and say why it waits) without a broker. */
  async connect(): Promise<void> {
    this.running ??= this.run()
    return Promise.resolve()
  }

  /**
   * Starts handing deliveries to the handlers registered with `bus` (withHandler); consuming
   * begins as soon as the broker is there.
   */
  startConsuming(bus: BusInstance): void {
    this.bus = bus
    this.handlers = this.registeredHandlers()
    if (this.connected) void this.consume().catch((error) => this.dropConnection(error))
  }

  /** Stops taking deliveries and waits for those in hand to be acknowledged or handed back. */
  async stopConsuming(): Promise<void> {
    this.bus = undefined
    const consumer = this.consumer
    this.consumer = undefined
    if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => undefined)
    await Promise.allSettled([...this.inFlight])
    consumer?.acks.flush()
  }

  async disconnect(): Promise<void> {
    this.closing = true
    await this.stopConsuming()
    await this.connection?.close().catch(() => undefined)
    this.wake?.()
    await this.running
  }

  async publish<TEvent extends Event>(
    event: TEvent,
    attributes?: MessageAttributes,
  ): Promise<void> {
    await this.publishMessage(event, attributes)
  }

  async send<TCommand extends Command>(
    command: TCommand,
    attributes?: MessageAttributes,
  ): Promise<void> {
    await this.publishMessage(command, attributes)
  }

  async fail(message: TransportMessage<unknown>): Promise<void> {
    const raw = message.raw as ConsumeMessage
    await this.deadLetter(raw, 'failed by its handler', this.attemptOf(raw))
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
    return Promise.resolve(this.decode(raw))
  }

  /**
   * Hands a delivery to bus-core's handlers of its message, with the message and its context
   * (`correlationId`, `attributes`, `stickyAttributes`), as `bus.receive` would. `bus.receive`
   * itself is not used: per message it opens three async-local contexts, makes a logger and runs
   * a middleware chain, most of what the bus cost a message (docs/performance.md). Bakery's
   * handlers use none of it: they write to Redis, and the relay sends what they wrote.
   */
  async dispatch(raw: ConsumeMessage): Promise<void> {
    const { domainMessage, attributes } = this.decode(raw)
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

  private decode(raw: ConsumeMessage): TransportMessage<ConsumeMessage> {
    let text: string
    try {
      text = utf8.decode(raw.content)
    } catch {
      throw new PoisonMessage('the body is not valid UTF-8')
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      throw new PoisonMessage('the body is not JSON')
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw new PoisonMessage('the body is not a JSON object')
    const name = (body as { $name?: unknown }).$name
    if (typeof name !== 'string') throw new PoisonMessage('the body has no string $name')
    const definition = this.accepted.get(name)
    if (!definition)
      throw new PoisonMessage(
        `${name} is not a message that ${this.options.consume?.queue} handles`,
      )
    const decoded = definition.codec.decode(body)
    if (isLeft(decoded))
      throw new PoisonMessage(
        `the body is not a valid ${name} v${definition.$version}: ${describeFieldErrors(decoded.left)}`,
      )
    const headers = raw.properties.headers ?? {}
    return {
      id: typeof raw.properties.messageId === 'string' ? raw.properties.messageId : undefined,
      raw,
      domainMessage: decoded.right as Command | Event,
      attributes: {
        correlationId:
          typeof raw.properties.correlationId === 'string'
            ? raw.properties.correlationId
            : undefined,
        attributes: parseAttributeHeader(headers, 'attributes'),
        stickyAttributes: parseAttributeHeader(headers, 'stickyAttributes'),
      },
    }
  }

  private async publishMessage(
    message: Command | Event,
    attributes: MessageAttributes = { attributes: {}, stickyAttributes: {} },
  ): Promise<void> {
    const content = Buffer.from(JSON.stringify(message))
    const messageId = randomUUID()
    const orderKey = (message as { orderKey?: unknown }).orderKey
    const span = {
      destination: message.$name,
      messageId,
      correlationId: attributes.correlationId,
      orderKey: typeof orderKey === 'string' ? orderKey : undefined,
      bodySize: content.length,
      broker: this.broker,
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

  /**
   * Publishes a persistent message and resolves only once the broker confirmed it into a queue.
   * It is mandatory: a message no queue is bound to take comes back (`basic.return`, before its
   * ack) and the publish fails, so the caller keeps it; without that, a deleted queue or binding
   * would make the broker confirm and drop it.
   */
  private publishConfirmed(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Promise<void> {
    const channel = this.publisher
    if (!channel || !this.connected) return Promise.reject(new BrokerUnavailable())
    const messageId = typeof options.messageId === 'string' ? options.messageId : randomUUID()
    return new Promise((resolve, reject) => {
      channel.publish(
        exchange,
        routingKey,
        content,
        {
          ...options,
          messageId,
          mandatory: true,
          persistent: true,
          contentType: 'application/json',
        },
        (error) => {
          if (!error) {
            if (this.returned.delete(messageId)) reject(new Unroutable(exchange, routingKey))
            else resolve()
            return
          }
          const failure = error instanceof Error ? error : new Error(String(error))
          reject(failure)
          // amqplib's word for a basic.nack; a channel that closed says 'channel closed'.
          if (failure.message === 'message nacked') this.refused(channel)
        },
      )
    })
  }

  /** A returned publish: someone deleted a queue or a binding, so the topology is declared again. */
  private onReturn(channel: ConfirmChannel, message: Message): void {
    const { messageId } = message.properties as { messageId?: unknown }
    if (typeof messageId === 'string') this.returned.add(messageId)
    if (this.redeclaring) return
    this.log.warn(
      { exchange: message.fields.exchange, routingKey: message.fields.routingKey },
      'RabbitMQ could not route a message; declaring the topology again',
    )
    this.redeclaring = this.declare(channel)
      .catch((error: unknown) => this.dropConnection(error))
      .finally(() => (this.redeclaring = undefined))
  }

  /**
   * A channel on which the broker refused a publish is replaced. A quorum queue refuses every
   * publish of a channel that first published while the queue was changing leader: that channel
   * keeps asking the old leader, which is gone (seen on RabbitMQ 3.10 with `reject-publish`).
   */
  private refused(channel: ConfirmChannel): void {
    if (channel === this.publisher)
      this.dropConnection(new Error('RabbitMQ refused a publish; starting afresh'))
  }

  /**
   * Connects, declares, consumes, and on any loss starts over on the next node: a node that is
   * gone costs one refused connection, and only a whole round of failed nodes waits, backing off.
   */
  private async run(): Promise<void> {
    const { brokers } = this.options
    let failures = 0
    while (!this.closing) {
      this.broker = brokers[this.node]!
      try {
        await this.open()
        if (failures > 0) this.log.info({ url: redact(this.broker) }, 'RabbitMQ is back')
        failures = 0
        await new Promise<void>((resolve) => {
          this.connection?.once('close', () => resolve())
          this.wake = resolve
        })
        if (!this.closing) this.log.warn('lost the connection to RabbitMQ; reconnecting')
      } catch (error) {
        if (this.closing) break
        failures += 1
        if (failures === 1 || failures % 20 === 0)
          this.log.error(
            error instanceof QueueMismatch
              ? `${error.message} - retrying`
              : `cannot reach RabbitMQ at ${redact(this.broker)} (${describeError(error)}); ` +
                  'is it running? (rabbitmq-server -detached) - retrying',
          )
        await this.connection?.close().catch(() => undefined)
      } finally {
        this.connected = false
        this.returned.clear()
        this.publisher = undefined
        this.consumer = undefined
        this.connection = undefined
      }
      this.node = (this.node + 1) % brokers.length
      const round = Math.floor(failures / brokers.length)
      if (!this.closing && failures > 0 && failures % brokers.length === 0)
        await this.pause(Math.min(100 * 2 ** round, 5000))
    }
  }

  private async pause(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  private async open(): Promise<void> {
    const connection = await amqp.connect(this.broker.href, {
      noDelay: true,
      // A node that is gone without a word (a lost machine) must not hold up trying the next.
      timeout: 5000,
      clientProperties: {
        connection_name: `bakery ${this.options.consume?.queue ?? 'sender'} ${process.pid}`,
      },
    })
    this.connection = connection
    coalesceWrites(connection)
    connection.on('error', (error) => this.log.warn({ err: error }, 'RabbitMQ connection error'))
    const publisher = await connection.createConfirmChannel()
    publisher.on('error', (error) => this.dropConnection(error))
    publisher.on('close', () => this.dropConnection())
    publisher.on('return', (message: Message) => this.onReturn(publisher, message))
    await this.declare(publisher)
    this.publisher = publisher
    this.connected = true
    if (this.bus) await this.consume()
    for (const waiter of this.readyWaiters) waiter()
    this.log.info({ url: redact(this.broker) }, 'connected to RabbitMQ, topology declared')
  }

  /** Every side declares the whole topology, so a message sent before its consumer ran is kept. */
  private async declare(channel: Channel): Promise<void> {
    const { queues, deadLetterQueue: deadLetters } = this.options.topology
    const policy = this.options.queues ?? classicQueues
    const assert = async (queue: string, options: Options.AssertQueue) => {
      try {
        await channel.assertQueue(queue, options)
      } catch (error) {
        const vhost = decodeURIComponent(this.broker.pathname.slice(1)) || '/'
        throw explainMismatch(queue, vhost, policy, error) ?? error
      }
    }
    await assert(deadLetters, deadLetterQueue(policy))
    for (const queue of queues) {
      await assert(queue.name, workQueue(policy, deadLetters))
      for (const message of queue.messages) {
        await channel.assertExchange(message.$name, 'fanout', { durable: true })
        await channel.bindQueue(queue.name, message.$name, '')
      }
      for (const delay of this.retryDelays())
        await assert(retryQueueName(queue.name, delay), retryQueue(policy, delay, queue.name))
    }
  }

  private retryDelays(): number[] {
    const delays = new Set<number>()
    for (let attempt = 1; attempt < this.options.retry.maxAttempts; attempt++)
      delays.add(retryDelay(this.options.retry, attempt))
    return [...delays]
  }

  private async consume(): Promise<void> {
    const { connection, bus } = this
    const settings = this.options.consume
    if (!connection || !bus || !settings || this.consumer) return
    const channel = await connection.createChannel()
    channel.on('error', (error) => this.dropConnection(error))
    channel.on('close', () => this.dropConnection())
    await channel.prefetch(settings.prefetch)
    const acks = new Acknowledgements(channel)
    const { consumerTag } = await channel.consume(settings.queue, (delivery) => {
      if (delivery === null)
        return this.dropConnection(new Error('the broker cancelled the consumer'))
      acks.delivered(delivery)
      const handling = this.handle(acks, delivery).finally(() => this.inFlight.delete(handling))
      this.inFlight.add(handling)
    })
    this.consumer = { channel, tag: consumerTag, acks }
  }

  private dropConnection(error?: unknown): void {
    if (this.closing || !this.connection) return
    if (error) this.log.warn({ err: error }, 'RabbitMQ channel failed; reconnecting')
    void this.connection.close().catch(() => undefined)
  }

  private async handle(acks: Acknowledgements, delivery: ConsumeMessage): Promise<void> {
    try {
      const queue = this.options.consume?.queue ?? ''
      const attempt = this.attemptOf(delivery)
      const traced = { delivery, queue, attempt, broker: this.broker, cause: unwrap }
      await traceProcess(traced, () => this.dispatch(delivery))
      acks.ack(delivery)
      metrics.messageHandled(delivery.properties.type)
    } catch (error) {
      await this.settleFailure(acks, delivery, unwrap(error))
    }
  }

  private async settleFailure(
    acks: Acknowledgements,
    delivery: ConsumeMessage,
    error: Error,
  ): Promise<void> {
    const attempt = this.attemptOf(delivery)
    const reason = `${error.name}: ${error.message}`
    metrics.messageFailed(delivery.properties.type)
    try {
      if (error instanceof PoisonMessage || error instanceof PermanentFailure) {
        await this.deadLetter(delivery, reason, attempt)
      } else if (attempt >= this.options.retry.maxAttempts) {
        await this.deadLetter(delivery, `gave up after ${attempt} attempts: ${reason}`, attempt)
      } else {
        const delay = retryDelay(this.options.retry, attempt)
        await this.forward(delivery, retryQueueName(this.options.consume!.queue, delay), {
          [Headers.attempt]: attempt + 1,
          [Headers.reason]: reason,
        })
        this.log.warn(
          { err: error, attempt, retryInMs: delay, messageType: delivery.properties.type },
          'handler failed; will retry',
        )
      }
      acks.ack(delivery)
    } catch (settleError) {
      // Neither retried nor dead-lettered: hand the message back so that it is not lost.
      this.log.warn({ err: settleError }, 'could not retry or dead-letter a message; returning it')
      await sleep(1000)
      acks.requeue(delivery)
    }
  }

  private async deadLetter(
    delivery: ConsumeMessage,
    reason: string,
    attempt: number,
  ): Promise<void> {
    const queue = this.options.consume?.queue ?? ''
    await this.forward(delivery, this.options.topology.deadLetterQueue, {
      [Headers.reason]: reason,
      [Headers.queue]: queue,
      [Headers.failedAt]: new Date().toISOString(),
      [Headers.attempt]: attempt,
    })
    metrics.messageDeadLettered(delivery.properties.type)
    this.log.error(
      {
        reason,
        queue,
        messageType: delivery.properties.type,
        messageId: delivery.properties.messageId,
      },
      'message dead-lettered',
    )
  }

  /** Publishes a copy of the delivery straight to `queue`, its headers amended. */
  private forward(
    delivery: ConsumeMessage,
    queue: string,
    headers: Record<string, unknown>,
  ): Promise<void> {
    return this.publishConfirmed('', queue, delivery.content, {
      ...copyProperties(delivery),
      headers: { ...delivery.properties.headers, ...headers },
    })
  }

  private attemptOf(delivery: ConsumeMessage): number {
    const value: unknown = delivery.properties.headers?.[Headers.attempt]
    return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 ? value : 1
  }
}

/**
 * Acknowledges a consumer channel's deliveries in as few frames as the broker allows. Handlers
 * finish out of order, so the acks of one turn of the event loop go out together: one `multiple`
 * ack for the run of settled deliveries from the oldest one still outstanding, and single acks
 * for those settled behind a delivery still in hand. A `multiple` ack never covers a delivery
 * that is still being handled.
 */
class Acknowledgements {
  /** Deliveries not yet acknowledged nor handed back, oldest (lowest tag) first. */
  private readonly outstanding: ConsumeMessage[] = []
  private readonly settled = new Set<ConsumeMessage>()
  private scheduled = false

  constructor(private readonly channel: Channel) {}

  delivered(delivery: ConsumeMessage): void {
    this.outstanding.push(delivery)
  }

  ack(delivery: ConsumeMessage): void {
    this.settled.add(delivery)
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  /** Hands a delivery back to the queue at once. */
  requeue(delivery: ConsumeMessage): void {
    this.forget(delivery)
    this.send(() => this.channel.nack(delivery, false, true))
  }

  flush(): void {
    this.scheduled = false
    let run = 0
    while (run < this.outstanding.length && this.settled.has(this.outstanding[run]!)) {
      this.settled.delete(this.outstanding[run]!)
      run++
    }
    if (run > 0) {
      const newest = this.outstanding[run - 1]!
      this.outstanding.splice(0, run)
      this.send(() => this.channel.ack(newest, true))
    }
    for (const delivery of this.settled) {
      this.forget(delivery)
      this.send(() => this.channel.ack(delivery))
    }
    this.settled.clear()
  }

  private forget(delivery: ConsumeMessage): void {
    const at = this.outstanding.indexOf(delivery)
    if (at >= 0) this.outstanding.splice(at, 1)
  }

  private send(frame: () => void): void {
    try {
      frame()
    } catch {
      // The channel is gone: the broker hands its unacknowledged deliveries out again.
    }
  }
}

/**
 * amqplib writes every frame to the socket on its own, a syscall per publish and per ack: the
 * largest self time of the consuming roles (docs/performance.md). Corked until the end of the
 * tick, the frames written in one tick leave in one writev, the same bytes in the same order.
 */
function coalesceWrites(model: ChannelModel): void {
  const socket: unknown = (model.connection as { stream?: unknown }).stream
  if (!(socket instanceof Socket)) return
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean
  let corked = false
  const uncork = () => {
    corked = false
    socket.uncork()
  }
  socket.write = (...args: unknown[]) => {
    if (!corked) {
      corked = true
      socket.cork()
      process.nextTick(uncork)
    }
    return write(...args)
  }
}

function parseAttributeHeader(
  headers: Record<string, unknown>,
  name: string,
): Record<string, string | number | boolean> {
  const value = headers[name]
  if (value === undefined || value === null) return {}
  const text = Buffer.isBuffer(value) ? value.toString('utf8') : value
  if (typeof text !== 'string') throw new PoisonMessage(`the ${name} header is not a JSON string`)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new PoisonMessage(`the ${name} header is not JSON`)
  }
  if (!AttributeMap.is(parsed) || Array.isArray(parsed))
    throw new PoisonMessage(`the ${name} header is not an object of strings, numbers and booleans`)
  return parsed
}

function copyProperties(delivery: ConsumeMessage): Options.Publish {
  const p = delivery.properties
  return {
    correlationId: p.correlationId as string | undefined,
    messageId: p.messageId as string | undefined,
    type: p.type as string | undefined,
    timestamp: p.timestamp as number | undefined,
    appId: p.appId as string | undefined,
  }
}

/** bus-core wraps handler errors; the first one is what the transport acts on. */
function unwrap(error: unknown): Error {
  if (error instanceof HandlerDispatchRejected && error.rejections[0])
    return unwrap(error.rejections[0])
  return error instanceof Error ? error : new Error(String(error))
}
