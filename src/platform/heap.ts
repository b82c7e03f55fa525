/**
 * The V8 heap every role runs with, wherever it runs: `bakery dev`, the bench and the cluster
 * (k8s/settings.yaml sets the same NODE_OPTIONS; a unit test keeps the two equal).
 *
 * Left to itself, Node sizes the heap from the memory it sees, and both answers are poor: on a big
 * machine an old generation of gigabytes, mostly garbage; in a container of 512Mi, semi-spaces so
 * small that short-lived objects (a request, a delivery awaiting its confirm) are promoted. So the
 * container's old generation, and a young generation between the two. What each choice cost and
 * saved is measured in docs/performance.md (*Memory*, and *The heap, once more*).
 */
export const ROLE_NODE_OPTIONS = '--max-old-space-size=256 --max-semi-space-size=8'

/** NODE_OPTIONS for a role's process: Bakery's heap, then this process's own NODE_OPTIONS. */
export function roleNodeOptions(): string {
  // The last occurrence of a V8 flag wins, so a developer's own flags stay in force.
  const own = process.env.NODE_OPTIONS
  return own ? `${ROLE_NODE_OPTIONS} ${own}` : ROLE_NODE_OPTIONS
}
