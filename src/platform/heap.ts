/**
 * The V8 heap every role runs with, wherever it runs: `bakery dev`, the bench and the cluster
 * (k8s/settings.yaml sets the same NODE_OPTIONS; a unit test keeps the two equal).
 *
 * Left to itself, Node sizes the heap from the memory it sees, and both answers are poor:
 * - On a machine with 24 GB, the old generation may reach 4 GB, and V8 then lets it grow to up to
 *   4 times what survived the last full collection (1.3–2 times when the limit is under 2 GB).
 *   A role keeps about 20 MB live and sits at 130–170 MB RSS, most of it garbage.
 * - In a container limited to 512Mi, the old generation gets 256 MB, but each semi-space of the
 *   young generation only 1 MB, against 16 MB outside. Short-lived objects (a request, a
 *   delivery awaiting its confirm) then outlive their scavenge and are promoted: more CPU, and a
 *   slower tail.
 * So the heap is set: the container's old generation, and a young generation between the two.
 * Semi-spaces of 8 MB, not 16, since a role allocates less per order (two bus messages instead of
 * four): 11–18 MB less RSS per role for no CPU that two pairs of bench runs could see
 * (docs/performance.md, *The heap, once more*). On a big machine that costs 6–10 % more CPU than Node's own heap,
 * for the full collections it runs more often; in the container it saves 5 % of CPU against the
 * heap Node would pick there (docs/performance.md, *Memory*).
 */
export const ROLE_NODE_OPTIONS = '--max-old-space-size=256 --max-semi-space-size=8'

/** NODE_OPTIONS for a role's process: Bakery's heap, then this process's own NODE_OPTIONS. */
export function roleNodeOptions(): string {
  // The last occurrence of a V8 flag wins, so a developer's own flags stay in force.
  const own = process.env.NODE_OPTIONS
  return own ? `${ROLE_NODE_OPTIONS} ${own}` : ROLE_NODE_OPTIONS
}
