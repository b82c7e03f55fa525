import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib'
import { Acknowledgements } from './acknowledgements'

export interface ConsumerSettings {
  readonly queue: string
  /** How many deliveries the broker hands this process before it acknowledges any. */
  readonly prefetch: number
}

/**
 * Consumes one queue by push (`basic.consume`) on a channel of its own, handing each delivery to
 * `handle` with the acknowledgements it settles through; keeps track of the deliveries in hand so
 * that a stop can wait for them.
 */
export class Consumer {
  private active: { channel: Channel; tag: string; acks: Acknowledgements } | undefined
  private readonly inFlight = new Set<Promise<void>>()

  constructor(
    readonly settings: ConsumerSettings,
    private readonly handle: (delivery: ConsumeMessage, acks: Acknowledgements) => Promise<void>,
    /** The channel failed, or the broker cancelled the consumer. */
    private readonly failed: (error?: unknown) => void,
  ) {}

  /** Starts consuming on `connection`, unless it already does. */
  async start(connection: ChannelModel): Promise<void> {
    if (this.active) return
    const channel = await connection.createChannel()
    channel.on('error', (error) => this.failed(error))
    channel.on('close', () => this.failed())
    await channel.prefetch(this.settings.prefetch)
    const acks = new Acknowledgements(channel)
    const { consumerTag } = await channel.consume(this.settings.queue, (delivery) => {
      if (delivery === null) return this.failed(new Error('the broker cancelled the consumer'))
      acks.delivered(delivery)
      const handling = this.handle(delivery, acks).finally(() => this.inFlight.delete(handling))
      this.inFlight.add(handling)
    })
    this.active = { channel, tag: consumerTag, acks }
  }

  /** Stops taking deliveries and waits for those in hand to be acknowledged or handed back. */
  async stop(): Promise<void> {
    const active = this.active
    this.active = undefined
    if (active) await active.channel.cancel(active.tag).catch(() => undefined)
    await Promise.allSettled([...this.inFlight])
    active?.acks.flush()
  }

  /** The connection is gone, and the channel with it. */
  lost(): void {
    this.active = undefined
  }
}
