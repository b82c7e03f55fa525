import { randomUUID } from 'node:crypto'
import type { ConfirmChannel, Message, Options } from 'amqplib'
import { BrokerUnavailable, Unroutable } from '../errors'

export interface PublisherEvents {
  /**
   * A publish came back unroutable (its own publish fails with Unroutable either way): declare
   * the topology again on `channel`, say. Not called again while the last call is pending.
   */
  readonly unroutable: (channel: ConfirmChannel, message: Message) => Promise<void>
  /** The channel failed or the broker refused a publish on it: start afresh. */
  readonly failed: (error?: unknown) => void
}

/**
 * Confirmed, persistent, mandatory publishing on one confirm channel (replaced with each
 * connection). A publish resolves only once the broker confirmed it into a queue.
 */
export class ConfirmedPublisher {
  private channel: ConfirmChannel | undefined
  /** Message ids of publishes the broker returned (it acks them too; they failed all the same). */
  private readonly returned = new Set<string>()
  private redeclaring: Promise<void> | undefined

  constructor(private readonly events: PublisherEvents) {}

  /** Publishes on `channel` from now on, until `detach`. */
  attach(channel: ConfirmChannel): void {
    channel.on('error', (error) => this.events.failed(error))
    channel.on('close', () => this.events.failed())
    channel.on('return', (message: Message) => this.onReturn(channel, message))
    this.channel = channel
  }

  /** The connection is gone: nothing can be published until the next `attach`. */
  detach(): void {
    this.channel = undefined
    this.returned.clear()
  }

  /**
   * Publishes a persistent message and resolves only once the broker confirmed it into a queue.
   * It is mandatory: a message no queue is bound to take comes back (`basic.return`, before its
   * ack) and the publish fails, so the caller keeps it; without that, a deleted queue or binding
   * would make the broker confirm and drop it.
   */
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Promise<void> {
    const channel = this.channel
    if (!channel) return Promise.reject(new BrokerUnavailable())
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

  /** A returned publish: someone deleted a queue or a binding. */
  private onReturn(channel: ConfirmChannel, message: Message): void {
    const { messageId } = message.properties as { messageId?: unknown }
    if (typeof messageId === 'string') this.returned.add(messageId)
    if (this.redeclaring) return
    this.redeclaring = this.events
      .unroutable(channel, message)
      .catch((error: unknown) => this.events.failed(error))
      .finally(() => (this.redeclaring = undefined))
  }

  /**
   * A channel on which the broker refused a publish is replaced. A quorum queue refuses every
   * publish of a channel that first published while the queue was changing leader: that channel
   * keeps asking the old leader, which is gone (seen on RabbitMQ 3.10 with `reject-publish`).
   */
  private refused(channel: ConfirmChannel): void {
    if (channel === this.channel)
      this.events.failed(new Error('RabbitMQ refused a publish; starting afresh'))
  }
}
