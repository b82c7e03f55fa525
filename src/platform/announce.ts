/**
 * What a role tells the process that started it once it listens, when that process gave it an
 * IPC channel (`spawn` with an `'ipc'` stdio entry, as Bakery's test and bench harness do, or a
 * supervisor such as PM2 with `wait_ready`). A supervisor that started a role on port 0 learns
 * the port from here instead of reading the log.
 */
export interface Listening {
  readonly bakery: 'listening'
  readonly role: string
  /** The reception's HTTP port: the API, /healthz, /readyz and /metrics. */
  readonly http?: number
  /** A consumer's health port: /healthz, /readyz and /metrics. */
  readonly health?: number
}

export function announceListening(role: string, ports: Pick<Listening, 'http' | 'health'>): void {
  if (!process.send) return
  const message: Listening = { bakery: 'listening', role, ...ports }
  // A supervisor that went away is not the role's problem.
  process.send(message, undefined, {}, () => undefined)
  // The channel must not keep the process alive once its work is done.
  process.channel?.unref()
}

export const isListening = (message: unknown): message is Listening =>
  typeof message === 'object' &&
  message !== null &&
  (message as { bakery?: unknown }).bakery === 'listening'
