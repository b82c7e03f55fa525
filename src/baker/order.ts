import {
  assertNever,
  BakingStarted,
  OrderBaked,
  timestamp,
  type OrderEvent,
  type OrderKey,
  type Timestamp,
} from '../messages'

/** An order as the baker sees it: folded from its events. */
export type OrderState =
  | { readonly status: 'none' }
  | {
      readonly status: 'pending' | 'baking' | 'finished'
      readonly orderKey: OrderKey
      readonly pastry: string
      readonly orderTime: Timestamp
    }

export const initialState: OrderState = { status: 'none' }

/** What the baker may decide to do with an order. Time and chance are passed in, never read. */
export type BakerCommand =
  | { readonly type: 'StartBaking'; readonly at: Date }
  | {
      readonly type: 'FinishBaking'
      readonly at: Date
      readonly bakeMs: number
      readonly mistake: boolean
    }

/** A command that can never succeed on this order: retrying it would not help. */
export class InvalidTransition extends Error {
  override readonly name = 'InvalidTransition'
}

export function evolve(state: OrderState, event: OrderEvent): OrderState {
  switch (event.$name) {
    case 'bakery/order-placed':
      return {
        status: 'pending',
        orderKey: event.orderKey,
        pastry: event.pastry,
        orderTime: event.orderTime,
      }
    case 'bakery/baking-started':
      return state.status === 'none' ? state : { ...state, status: 'baking' }
    case 'bakery/order-baked':
      return state.status === 'none' ? state : { ...state, status: 'finished' }
    default:
      return assertNever(event)
  }
}

/**
 * Decides which events a command produces. A command that was already carried out produces no
 * events, which is what makes redelivered messages harmless.
 */
export function decide(command: BakerCommand, state: OrderState): OrderEvent[] {
  if (state.status === 'none') throw new InvalidTransition('there is no such order')
  switch (command.type) {
    case 'StartBaking':
      return state.status === 'pending'
        ? [BakingStarted.create({ orderKey: state.orderKey, startedAt: timestamp(command.at) })]
        : []
    case 'FinishBaking':
      if (state.status === 'pending')
        throw new InvalidTransition(`order ${state.orderKey} is not in the oven yet`)
      return state.status === 'baking'
        ? [
            OrderBaked.create({
              orderKey: state.orderKey,
              bakedAt: timestamp(command.at),
              bakeMs: command.bakeMs as OrderBaked['bakeMs'],
              mistake: command.mistake,
            }),
          ]
        : []
    default:
      return assertNever(command)
  }
}
