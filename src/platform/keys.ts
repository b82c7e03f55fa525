/**
 * Every Redis key of one Bakery shares the hash tag `{namespace}`, so the append script, which
 * touches an order stream, the global log and the outbox at once, stays in one Redis Cluster slot.
 */
export interface Keys {
  readonly orderStream: (orderKey: string) => string
  readonly view: (orderKey: string) => string
  readonly events: string
  readonly outbox: string
}

export function keys(namespace: string): Keys {
  const tag = `{${namespace}}`
  return {
    orderStream: (orderKey) => `${tag}:order:${orderKey}`,
    view: (orderKey) => `${tag}:view:${orderKey}`,
    events: `${tag}:events`,
    outbox: `${tag}:outbox`,
  }
}
