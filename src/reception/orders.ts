import { randomBytes } from 'node:crypto'
import * as t from 'io-ts'
import { Name, OrderPlaced, PlaceOrder, timestamp, type OrderKey } from '../messages'
import type { EventStore } from '../platform/event-store'
import { foldView, type OrderView } from '../projections/order-view'
import type { ViewStore } from '../projections/view-store'

/** What a client sends to place an order. Unknown fields are dropped, never stored. */
export const OrderRequest = t.exact(t.type({ customer: Name, pastry: Name }))
export type OrderRequest = t.TypeOf<typeof OrderRequest>

export interface OrdersDeps {
  readonly store: EventStore
  readonly views: ViewStore
  readonly now: () => Date
  readonly newOrderKey: () => OrderKey
}

/** 128 random bits: never derived from the order, so two orders never share a key. */
export const randomOrderKey = (): OrderKey => randomBytes(16).toString('hex') as OrderKey

/**
 * Records the order and, in the same atomic write, the PlaceOrder command for the baker. Once
 * this resolves the order exists, and the outbox relay will deliver the command.
 */
export async function placeOrder(deps: OrdersDeps, request: OrderRequest): Promise<OrderKey> {
  const orderKey = deps.newOrderKey()
  const order = { orderKey, ...request, orderTime: timestamp(deps.now()) }
  await deps.store.append(
    orderKey,
    0,
    [OrderPlaced.create(order)],
    [
      { kind: 'command', message: PlaceOrder.create(order) },
      { kind: 'event', message: OrderPlaced.create(order) },
    ],
  )
  return orderKey
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
  const [stored, version] = await Promise.all([
    deps.views.get(orderKey),
    deps.store.version(orderKey),
  ])
  if (stored && stored.version >= version) return stored.view
  if (version === 0) return undefined
  return foldView(await deps.store.read(orderKey))?.view
}
