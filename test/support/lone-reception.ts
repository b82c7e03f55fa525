import { freePort, isolatedEnv, receptionUrl, startRole, type RoleProcess } from '.'

export interface LoneReception {
  readonly role: RoleProcess
  readonly port: number
  readonly base: string
}

/**
 * A reception of its own, with no broker at all (AMQP_URL is a closed port: it takes orders into
 * its outbox), in `namespace`, with `env` on top (a REDIS_URL of the test's own, say). Resolves
 * once /readyz answers 200.
 */
export async function startLoneReception(
  namespace: string,
  env: Record<string, string> = {},
): Promise<LoneReception> {
  const amqp = `amqp://guest:guest@127.0.0.1:${await freePort()}`
  const role = await startRole('reception', isolatedEnv(amqp, namespace, env), { until: 'ready' })
  return { role, port: role.port!, base: receptionUrl(role) }
}
