import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/**
 * Bakery's Prometheus metrics, served as `/metrics` by every role. One registry per process; the
 * code that does the work calls the thin hooks below and knows nothing of Prometheus.
 */
const registry = new Registry()
collectDefaultMetrics({ register: registry })

/** Seconds; from a few milliseconds (an instant bake) to a minute (a backed-up queue). */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

const ordersAccepted = new Counter({
  name: 'bakery_orders_accepted_total',
  help: 'Orders the reception accepted (202), not counting idempotent replays.',
  registers: [registry],
})
const ordersFinished = new Counter({
  name: 'bakery_orders_finished_total',
  help: 'Orders a baker took out of the oven.',
  registers: [registry],
})
const bakeDuration = new Histogram({
  name: 'bakery_bake_duration_seconds',
  help: 'Time in the oven, including a second bake after a mistake.',
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5],
  registers: [registry],
})
const orderToFinished = new Histogram({
  name: 'bakery_order_to_finished_seconds',
  help: 'Time from the order being accepted to it being finished.',
  buckets: LATENCY_BUCKETS,
  registers: [registry],
})
const messageLabels = ['message_type'] as const
const messagesHandled = new Counter({
  name: 'bakery_messages_handled_total',
  help: 'Deliveries handled successfully, by message type.',
  labelNames: messageLabels,
  registers: [registry],
})
const messagesFailed = new Counter({
  name: 'bakery_messages_failed_total',
  help: 'Deliveries whose handling failed (each failed attempt), by message type.',
  labelNames: messageLabels,
  registers: [registry],
})
const messagesDeadLettered = new Counter({
  name: 'bakery_messages_dead_lettered_total',
  help: 'Messages moved to the dead-letter queue, by message type.',
  labelNames: messageLabels,
  registers: [registry],
})
const relayLag = new Histogram({
  name: 'bakery_outbox_relay_lag_seconds',
  help: 'Time from a message being written to the outbox to the broker confirming its publish.',
  buckets: LATENCY_BUCKETS,
  registers: [registry],
})
const projectorLag = new Histogram({
  name: 'bakery_projector_lag_seconds',
  help: 'Time from an event being recorded to the read model showing it.',
  buckets: LATENCY_BUCKETS,
  registers: [registry],
})
const httpDuration = new Histogram({
  name: 'bakery_http_request_duration_seconds',
  help: 'HTTP requests by method, route and status; an update stream counts until it closes.',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
})
const requestsInFlight = new Gauge({
  name: 'bakery_http_requests_in_flight',
  help: 'Requests the reception is working on (MAX_REQUESTS_IN_FLIGHT caps it).',
  registers: [registry],
})
const updateStreams = new Gauge({
  name: 'bakery_order_update_streams',
  help: 'Open GET /orders/:key/updates streams on this reception.',
  registers: [registry],
})

/** Reads each dependency's state at scrape time, from the probe the role registered. */
let dependencyProbe: () => Record<string, boolean> = () => ({})
new Gauge({
  name: 'bakery_dependency_up',
  help: 'Whether this process is connected to a dependency (redis, rabbitmq): 1 up, 0 down.',
  labelNames: ['dependency'] as const,
  registers: [registry],
  collect() {
    this.reset()
    for (const [dependency, up] of Object.entries(dependencyProbe()))
      this.set({ dependency }, up ? 1 : 0)
  },
})

const seconds = (ms: number) => Math.max(0, ms) / 1000
const typeOf = (messageType: unknown) =>
  typeof messageType === 'string' && messageType !== '' ? messageType : 'unknown'

export const metrics = {
  orderAccepted: (): void => ordersAccepted.inc(),
  /** An order came out of the oven after `bakeMs`; it was accepted at `orderTime`. */
  orderFinished: (orderTime: string, bakeMs: number, now = Date.now()): void => {
    ordersFinished.inc()
    bakeDuration.observe(seconds(bakeMs))
    const ordered = Date.parse(orderTime)
    if (Number.isFinite(ordered)) orderToFinished.observe(seconds(now - ordered))
  },
  messageHandled: (messageType: unknown): void =>
    messagesHandled.inc({ message_type: typeOf(messageType) }),
  messageFailed: (messageType: unknown): void =>
    messagesFailed.inc({ message_type: typeOf(messageType) }),
  messageDeadLettered: (messageType: unknown): void =>
    messagesDeadLettered.inc({ message_type: typeOf(messageType) }),
  /** An outbox entry was confirmed by the broker; its stream id starts with its write time (ms). */
  relayed: (outboxEntryId: string, now = Date.now()): void => {
    const written = Number(outboxEntryId.split('-')[0])
    if (Number.isFinite(written)) relayLag.observe(seconds(now - written))
  },
  /** The read model now shows an event recorded at `recordedAt`. */
  projected: (recordedAt: string, now = Date.now()): void => {
    const recorded = Date.parse(recordedAt)
    if (Number.isFinite(recorded)) projectorLag.observe(seconds(now - recorded))
  },
  httpRequest: (method: string, route: string, status: number, ms: number): void =>
    httpDuration.observe({ method, route, status: String(status) }, seconds(ms)),
  /** `probe` tells, at each scrape, which dependencies are connected. */
  reportDependencies: (probe: () => Record<string, boolean>): void => {
    dependencyProbe = probe
  },
  requestsInFlight: (count: number): void => requestsInFlight.set(count),
  updateStreamOpened: (): void => updateStreams.inc(),
  updateStreamClosed: (): void => updateStreams.dec(),
}

/** The Prometheus text exposition of every metric of this process. */
export async function metricsText(): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() }
}
