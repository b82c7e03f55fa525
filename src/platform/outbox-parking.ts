import type { Keys, PartitionKeys } from './keys'
import { compareStreamIds, fieldRecord } from './redis'
import type { ScriptedRedis } from './scripts'

/**
 * Outbox entries a relay cannot decode are parked, not published and not dropped: during a rolling
 * deploy an old relay meets messages a newer Bakery wrote, and such an entry may be an accepted
 * order's only PlaceOrder. A parked entry keeps the outbox entry's fields as they were, plus why,
 * when and from where it was parked; `bakery dead-letters` lists it and puts it back.
 */

/** Fields a parked entry has beside the outbox entry's own. */
export const ParkedField = {
  reason: 'parked-reason',
  at: 'parked-at',
  outboxId: 'outbox-id',
} as const

/** A parked entry's fields: the outbox entry's, then why, when and which entry it was. */
function parkedFields(
  outboxId: string,
  fields: Readonly<Record<string, string>>,
  reason: string,
  now = new Date(),
): string[] {
  const own = Object.entries(fields).filter(([name]) => !isParkingField(name))
  return [
    ...own.flat(),
    ParkedField.reason,
    reason,
    ParkedField.at,
    now.toISOString(),
    ParkedField.outboxId,
    outboxId,
  ]
}

/** Moves an outbox entry the relay of `group` holds to the parked stream, why and when with it. */
export async function park(
  redis: ScriptedRedis,
  keys: { readonly outbox: string; readonly parked: string; readonly group: string },
  outboxId: string,
  fields: Readonly<Record<string, string>>,
  reason: string,
): Promise<void> {
  await redis.bakeryPark(
    keys.outbox,
    keys.parked,
    keys.group,
    outboxId,
    ...parkedFields(outboxId, fields, reason),
  )
}

const isParkingField = (name: string) => (Object.values(ParkedField) as string[]).includes(name)

export interface ParkedEntry {
  /** Its id in the parked stream. */
  readonly id: string
  /** The message's `$name` if its text says, else its kind. */
  readonly name: string | undefined
  readonly reason: string | undefined
  readonly parkedAt: string | undefined
}

function describe(id: string, flat: readonly string[]): ParkedEntry {
  const fields = fieldRecord(flat)
  return {
    id,
    name: nameOf(fields.message) ?? fields.kind,
    reason: fields[ParkedField.reason],
    parkedAt: fields[ParkedField.at],
  }
}

function nameOf(message: string | undefined): string | undefined {
  try {
    const name: unknown = (JSON.parse(message ?? '') as { $name?: unknown } | null)?.$name
    return typeof name === 'string' ? name : undefined
  } catch {
    return undefined
  }
}

/** The oldest `limit` parked entries, of every partition. */
export async function listParked(
  redis: ScriptedRedis,
  keys: Keys,
  limit: number,
): Promise<ParkedEntry[]> {
  if (limit <= 0) return []
  const parked = await Promise.all(
    keys.partitions.map((partition) => redis.xrange(partition.parked, '-', '+', 'COUNT', limit)),
  )
  return parked
    .flat()
    .sort(([a], [b]) => compareStreamIds(a, b))
    .slice(0, limit)
    .map(([id, fields]) => describe(id, fields))
}

const BATCH = 100

/**
 * Puts parked entries back into the outbox as they were written, for a relay that can decode them
 * (one of the newer Bakery): all of them, a batch at a time, or those with the given ids. Each
 * goes back in one script, so an entry is in the outbox or parked, never in neither.
 */
export async function requeueParked(
  redis: ScriptedRedis,
  keys: Keys,
  choose: { readonly all: true } | { readonly ids: readonly string[] },
  onRequeued: (entry: ParkedEntry) => void,
): Promise<{ readonly requeued: number; readonly found: ReadonlySet<string> }> {
  const found = new Set<string>()
  const putBack = async ({ outbox, parked }: PartitionKeys, entries: [string, string[]][]) => {
    for (const [id, flat] of entries) {
      const own = Object.entries(fieldRecord(flat)).filter(([name]) => !isParkingField(name))
      await redis.bakeryUnpark(outbox, parked, id, ...own.flat())
      found.add(id)
      onRequeued(describe(id, flat))
    }
  }
  // Stream ids only: anything else (a message id of the dead-letter queue) is not asked here.
  const ids = 'ids' in choose ? choose.ids.filter((id) => /^\d+-\d+$/.test(id)) : []
  for (const partition of keys.partitions) {
    if ('ids' in choose) {
      for (const id of ids) await putBack(partition, await redis.xrange(partition.parked, id, id))
      continue
    }
    for (;;) {
      const batch = await redis.xrange(partition.parked, '-', '+', 'COUNT', BATCH)
      if (batch.length === 0) break
      await putBack(partition, batch)
    }
  }
  return { requeued: found.size, found }
}
