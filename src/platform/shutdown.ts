/**
 * Work to do last, after a role stopped taking work: today, flushing the spans still buffered.
 * A registry rather than an import keeps the wiring free of the OpenTelemetry SDK.
 */
const hooks: (() => Promise<void>)[] = []

export function onShutdown(hook: () => Promise<void>): void {
  hooks.push(hook)
}

/** Runs every hook; one that fails does not keep the others from running. */
export async function runShutdownHooks(): Promise<void> {
  await Promise.allSettled(hooks.map((hook) => hook()))
}
