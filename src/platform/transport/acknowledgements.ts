import type { Channel, ConsumeMessage } from 'amqplib'

/**
 * Acknowledges a consumer channel's deliveries in as few frames as the broker allows. Handlers
 * finish out of order, so the acks of one turn of the event loop go out together: one `multiple`
 * ack for the run of settled deliveries from the oldest one still outstanding, and single acks
 * for those settled behind a delivery still in hand. A `multiple` ack never covers a delivery
 * that is still being handled.
 */
export class Acknowledgements {
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
