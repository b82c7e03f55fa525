// The three roles, run as processes in a namespace and vhost of their own with instant bakes, for
// the benches that watch them under a steady load (bench/tools/memory.ts, bench/tools/oncpu.ts).
import {
  createVhost,
  dropNamespace,
  isolatedEnv,
  receptionUrl,
  startRole,
  uniqueNamespace,
  type RoleProcess,
} from '../../harness'
import { startOtlpSink, tracingEnv } from '../otlp-sink'

export const ROLES = ['reception', 'baker', 'projector'] as const
export type Role = (typeof ROLES)[number]

export interface Roles {
  /** The reception's base URL. */
  readonly url: string
  readonly processes: readonly (readonly [Role, RoleProcess])[]
}

/**
 * Starts the roles with these NODE_OPTIONS (and, with `tracing`, every span exported to an OTLP
 * sink of the bench's own), runs `body`, then stops them and drops their data.
 */
export async function withRoles<T>(
  label: string,
  nodeOptions: string,
  body: (roles: Roles) => Promise<T>,
  { tracing = false }: { readonly tracing?: boolean } = {},
): Promise<T> {
  const namespace = uniqueNamespace(label)
  const vhost = await createVhost(label)
  const sink = tracing ? await startOtlpSink() : undefined
  const processes: [Role, RoleProcess][] = []
  try {
    const env = isolatedEnv(vhost.url, namespace, {
      BAKE_TIME_SCALE: '0',
      LOG_LEVEL: 'info',
      NODE_OPTIONS: nodeOptions,
      ...(sink ? tracingEnv(sink) : {}),
    })
    for (const name of ROLES) processes.push([name, await startRole(name, env)])
    return await body({ url: receptionUrl(processes[0]![1]), processes })
  } finally {
    await Promise.all(processes.map(([, role]) => role.stop()))
    await sink?.close()
    await dropNamespace(namespace)
    await vhost.drop()
  }
}
