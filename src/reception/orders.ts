import { createHash, randomBytes } from 'node:crypto'
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { Name, OrderKey, OrderPlaced, PlaceOrder, timestamp } from '../messages'
import type { OrderEventStore } from '../wiring'
import type { OutboxMessage } from '../platform/event-store'
import { evolveView, foldView, type OrderView } from '../projections/order-view'
import type { ViewStore } from '../projections/view-store'

/** What a client sends to place an order. Unknown fields are dropped, never stored. */
export const OrderRequest = t.exact(t.type({ customer: Name, pastry: Name }))
export type OrderRequest = t.TypeOf<typeof OrderRequest>

export interface OrdersDeps {
  readonly store: OrderEventStore
  readonly views: ViewStore
  readonly now: () => Date
  readonly newOrderKey: () => OrderKey
  /** OUTBOX_MAX_DEPTH: no new order while the outbox holds this many entries (0 or absent: none). */
  readonly outboxLimit?: number
}

/** 128 random bits: never derived from the order, so two orders never share a key. */
export function randomOrderKey(): OrderKey {
  return randomBytes(16).toString('hex') as OrderKey
}

/** Asks that a retried POST place the order once: the client's `Idempotency-Key`. */
export interface Idempotency {
  readonly key: string
  /** How long the key is remembered. */
  readonly ttlSeconds: number
}

export interface Placed {
  readonly orderKey: OrderKey
  /** An earlier request with the same Idempotency-Key placed it; nothing new was placed. */
  readonly replayed: boolean
}

/** The Idempotency-Key was used for another order (another customer or pastry). */
export class IdempotencyKeyReused extends Error {
  override readonly name = 'IdempotencyKeyReused'
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/**
 * Records the order and, in the same atomic write, the PlaceOrder command for the baker and the
 * order's pending view. Once this resolves the order exists and can be read, and the outbox relay
 * will deliver the command.
 */
export async function placeOrder(deps: OrdersDeps, request: OrderRequest): Promise<OrderKey> {
  const { orderKey, events, outbox, view } = newOrder(deps, request)
  await deps.store.append(orderKey, 0, events, outbox, { outboxLimit: deps.outboxLimit ?? 0, view })
  return orderKey
}

/**
 * placeOrder for a request that carries an Idempotency-Key. The key is claimed in the same atomic
 * write as the order, so of any number of concurrent requests with one key exactly one places an
 * order; the others answer its key, or IdempotencyKeyReused if they ask for another order.
 */
export async function placeOrderOnce(
  deps: OrdersDeps,
  request: OrderRequest,
  idempotency: Idempotency,
): Promise<Placed> {
  // The claim and the order are written in one script, so they must share a partition: the
  // claim's is the key's, and the order takes a key that falls in it (P tries on average).
  const digest = sha256(idempotency.key)
  const partition = deps.store.keys.of(digest)
  let newKey = deps.newOrderKey()
  while (deps.store.keys.of(newKey) !== partition) newKey = deps.newOrderKey()
  const { orderKey, events, outbox, view } = newOrder(deps, request, newKey)
  // The request as decoded (trimmed), so a retry that differs only in spacing is the same order.
  const fingerprint = sha256(JSON.stringify([request.customer, request.pastry]))
  const claim = {
    key: partition.idempotency(digest),
    value: `${fingerprint} ${orderKey}`,
    ttlSeconds: idempotency.ttlSeconds,
  }
  const result = await deps.store.appendOnce(claim, orderKey, 0, events, outbox, {
    outboxLimit: deps.outboxLimit ?? 0,
    view,
  })
  if (result.appended) return { orderKey, replayed: false }
  const [claimedFor, claimedKey] = result.claimedBy.split(' ')
  const earlier = OrderKey.decode(claimedKey)
  if (claimedFor !== fingerprint || isLeft(earlier)) throw new IdempotencyKeyReused()
  return { orderKey: earlier.right, replayed: true }
}

/** OrderPlaced for the log, PlaceOrder for the baker, and the view the order starts with. */
function newOrder(deps: OrdersDeps, request: OrderRequest, orderKey = deps.newOrderKey()) {
  const order = { orderKey, ...request, orderTime: timestamp(deps.now()) }
  const placed = OrderPlaced.create(order)
  const outbox: OutboxMessage[] = [{ kind: 'command', message: PlaceOrder.create(order) }]
  return { orderKey, events: [placed], outbox, view: evolveView(undefined, placed) }
}

/**
 * The order as the read model has it, unless the read model is behind the order's stream: then
 * folded from the stream. So an order is visible from the moment its 202 was sent, and what a
 * client sees never goes backwards.
 */
export async function findOrder(
  deps: OrdersDeps,
  orderKey: OrderKey,
): Promise<OrderView | undefined> {
  const { stored, behind } = await deps.views.withTail(orderKey)
  return behind.length === 0 ? stored?.view : foldView(behind, stored)?.view
}
