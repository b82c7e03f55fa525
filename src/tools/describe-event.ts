import { assertNever, type OrderEvent } from '../messages'

/** One line of what an event says, for a person: `bakery history` and `bakery events` show it. */
export function describeEvent(event: OrderEvent): string {
  switch (event.$name) {
    case 'bakery/order-placed':
      return `${event.customer} ordered ${event.pastry}`
    case 'bakery/baking-started':
      return 'a baker started baking'
    case 'bakery/order-baked':
      return `baked in ${event.bakeMs} ms${event.mistake ? ', baked twice after a mistake' : ''}`
    default:
      return assertNever(event)
  }
}
