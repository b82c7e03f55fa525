/** The original Bakery's model of baking: the pastry's name decides how long it takes. */

const FNV_OFFSET_BASIS = 0x811c9dc5
const FNV_PRIME = 0x01000193

/** FNV-1a, 32 bits, over the UTF-8 bytes of `text`. */
export function fnv1a32(text: string): number {
  let hash = FNV_OFFSET_BASIS
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte
    hash = Math.imul(hash, FNV_PRIME) >>> 0
  }
  return hash
}

/** One time in ten the baker makes a mistake and bakes the pastry again. */
export const MISTAKE_PROBABILITY = 0.1

export interface BakePlan {
  /** Time in the oven for one bake, in ms (before scaling). */
  readonly onceMs: number
  readonly mistake: boolean
  /** Time in the oven in all, in ms, after scaling. */
  readonly totalMs: number
}

/** `random` is a uniform draw in [0, 1); `scale` multiplies the original's times (0 = instant). */
export function planBake(pastry: string, random: number, scale: number): BakePlan {
  const onceMs = fnv1a32(pastry) % 100
  const mistake = random < MISTAKE_PROBABILITY
  return { onceMs, mistake, totalMs: Math.round(onceMs * (mistake ? 2 : 1) * scale) }
}
