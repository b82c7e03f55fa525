import { setTimeout as sleep } from 'node:timers/promises'
import amqp, { type ChannelModel } from 'amqplib'
import { delayAfter, reconnecting } from '../backoff'
import { redact } from '../config'
import { QueueMismatch } from '../queue-types'
import { describeError, type Logger } from '../logger'
import { coalesceWrites } from './coalesce-writes'

/** Where the supervisor is: trying a node, serving on one, or stopped for good. */
export type ConnectionState =
  | { readonly kind: 'connecting' }
  | { readonly kind: 'open'; readonly connection: ChannelModel }
  | { readonly kind: 'closed' }

export interface ConnectionHooks {
  /** Readies a new connection (channels, topology); a throw drops it and tries the next node. */
  readonly opened: (connection: ChannelModel) => Promise<void>
  /** Runs once the connection is open and ready (consuming starts here); a throw drops it. */
  readonly serving: () => Promise<void>
  /** The connection is gone: whatever was made on it is dead. */
  readonly lost: () => void
}

/**
 * Keeps one connection to a RabbitMQ cluster: connects, and on any loss starts over on the next
 * node. A node that is gone costs one refused connection; only a whole round of failed nodes
 * waits, backing off. Each process starts at a random node, which spreads the roles over the
 * cluster.
 */
export class ConnectionSupervisor {
  private current: ConnectionState = { kind: 'connecting' }
  /** The connection being readied or open; closed to drop it. */
  private connection: ChannelModel | undefined
  private node: number
  private running: Promise<void> | undefined
  private wake: (() => void) | undefined
  private readonly openWaiters = new Set<() => void>()

  constructor(
    private readonly brokers: readonly URL[],
    /** The connection's name in the management UI. */
    private readonly name: string,
    private readonly log: Logger,
    private readonly hooks: ConnectionHooks,
  ) {
    if (brokers.length === 0) throw new Error('no RabbitMQ node to connect to')
    this.node = Math.floor(Math.random() * brokers.length)
  }

  get state(): ConnectionState {
    return this.current
  }

  /** The node connected to, or tried next. */
  get broker(): URL {
    return this.brokers[this.node]!
  }

  /** Starts connecting in the background: a role must run (and say why it waits) without a broker. */
  start(): void {
    this.running ??= this.run()
  }

  /** Resolves once open, or after `timeoutMs`; says which. */
  async waitUntilOpen(timeoutMs: number): Promise<boolean> {
    if (this.isOpen()) return true
    let done: () => void = () => {}
    const open = new Promise<void>((resolve) => (done = resolve))
    this.openWaiters.add(done)
    await Promise.race([open, sleep(timeoutMs, undefined, { ref: false })])
    this.openWaiters.delete(done)
    return this.isOpen()
  }

  // A method, not a comparison inline: the state changes while a caller awaits.
  private isOpen(): boolean {
    return this.current.kind === 'open'
  }

  /** Drops the connection (a channel failed); the supervisor connects again. */
  drop(error?: unknown): void {
    if (this.current.kind === 'closed' || !this.connection) return
    if (error) this.log.warn({ err: error }, 'RabbitMQ channel failed; reconnecting')
    void this.connection.close().catch(() => undefined)
  }

  /** Closes the connection for good and waits for the supervisor to stop. */
  async close(): Promise<void> {
    this.current = { kind: 'closed' }
    await this.connection?.close().catch(() => undefined)
    this.wake?.()
    await this.running
  }

  private get closing(): boolean {
    return this.current.kind === 'closed'
  }

  private async run(): Promise<void> {
    let failures = 0
    while (!this.closing) {
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
        if (!this.closing) this.current = { kind: 'connecting' }
        this.connection = undefined
        this.hooks.lost()
      }
      this.node = (this.node + 1) % this.brokers.length
      const rounds = Math.floor(failures / this.brokers.length)
      if (!this.closing && failures > 0 && failures % this.brokers.length === 0)
        await this.pause(delayAfter(reconnecting, rounds))
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
      clientProperties: { connection_name: this.name },
    })
    this.connection = connection
    coalesceWrites(connection)
    connection.on('error', (error) => this.log.warn({ err: error }, 'RabbitMQ connection error'))
    await this.hooks.opened(connection)
    if (this.closing) return
    this.current = { kind: 'open', connection }
    await this.hooks.serving()
    for (const waiter of this.openWaiters) waiter()
    this.log.info({ url: redact(this.broker) }, 'connected to RabbitMQ, topology declared')
  }
}
