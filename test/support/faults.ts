import type { Redis } from 'ioredis'
import { keys } from '../../src/platform/keys'
import { RELAY_GROUP } from '../../src/platform/outbox-relay'
import { LIFE, type RoleProcess } from '.'

/**
 * Where the orders that have not finished are stuck, for a failure that explains itself: how many
 * events each has, what the outbox still holds, the broker's queues (as the caller reads them)
 * and each role's last warnings.
 */
export async function whereStuck(
  redis: Redis,
  namespace: string,
  roles: readonly RoleProcess[],
  accepted: readonly string[],
  brokerQueues: string,
): Promise<string> {
  const k = keys(namespace)
  const lengths = await Promise.all(accepted.map((order) => redis.xlen(k.orderStream(order))))
  const byEvents: Record<number, number> = {}
  for (const n of lengths.filter((n) => n < LIFE.length)) byEvents[n] = (byEvents[n] ?? 0) + 1
  const warnings = lastWarnings(roles, 5)
  const pending = JSON.stringify(await redis.xpending(k.partitions[0]!.outbox, RELAY_GROUP))
  return [
    `unfinished orders by number of events: ${JSON.stringify(byEvents)}`,
    `outbox: ${await redis.xlen(k.partitions[0]!.outbox)} entries, pending ${pending}`,
    `queues: ${brokerQueues}`,
    'last warnings:',
    ...warnings,
  ].join('\n')
}

/** The last `count` warnings and errors each role logged. */
export const lastWarnings = (roles: readonly RoleProcess[], count: number) =>
  roles.flatMap((role) =>
    role
      .output()
      .split('\n')
      .filter((line) => /"level":(40|50)/.test(line))
      .slice(-count),
  )
