import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import {
  createVhost,
  dropNamespace,
  isolatedEnv,
  postOrder,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from './support'

const run = promisify(execFile)

/** `/readyz` of a role: its status and body. */
async function readiness(port: number): Promise<{ status: number; body: Record<string, string> }> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`)
  assert.equal(response.headers.get('x-content-type-options'), 'nosniff')
  return { status: response.status, body: (await response.json()) as Record<string, string> }
}

/** The value of `bakery_dependency_up{dependency=…}` in a role's /metrics. */
async function dependencyUp(port: number, dependency: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const match = new RegExp(
    `^bakery_dependency_up\\{dependency="${dependency}"\\} (\\S+)$`,
    'm',
  ).exec(text)
  return match ? Number(match[1]) : undefined
}

/**
 * A broker outage of the test's own: its vhost is deleted (the broker closes every connection in
 * it and refuses new ones) and then created again. The shared RabbitMQ keeps running.
 */
describe('readiness during a broker outage', () => {
  const namespace = uniqueNamespace('ready')
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>> | undefined

  after(async () => {
    await Promise.all(roles.map((role) => role.stop('SIGKILL')))
    await vhost?.drop()
    await dropNamespace(namespace)
  })

  it('the reception stays ready and takes orders; the baker is not ready; both report the broker', async () => {
    vhost = await createVhost('ready')
    const env = isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0' })
    const [reception, baker] = await Promise.all([
      startRole('reception', env),
      startRole('baker', env),
    ])
    roles.push(reception, baker)
    const receptionPort = reception.port!
    const bakerPort = baker.healthPort
    await waitFor(
      'both ready',
      async () =>
        (await readiness(receptionPort)).status === 200 &&
        (await readiness(bakerPort)).status === 200,
    )

    await vhost.drop()
    await waitFor(
      'the baker to notice the outage',
      async () => (await readiness(bakerPort)).status === 503,
    )
    const whileDown = await readiness(receptionPort)
    assert.equal(whileDown.status, 200, 'the reception can serve: its outbox holds the orders')
    assert.deepEqual(whileDown.body, { status: 'ready', redis: 'up', rabbitmq: 'down' })
    assert.deepEqual((await readiness(bakerPort)).body, {
      status: 'not ready',
      redis: 'up',
      rabbitmq: 'down',
    })
    assert.equal(await dependencyUp(receptionPort, 'rabbitmq'), 0)
    assert.equal(await dependencyUp(receptionPort, 'redis'), 1)
    assert.equal(await dependencyUp(bakerPort, 'rabbitmq'), 0)
    const accepted = await postOrder(`http://127.0.0.1:${receptionPort}`)

    // The same vhost again: both reconnect on their own and the order is baked.
    await run('rabbitmqctl', ['-q', 'add_vhost', vhost.name])
    await run('rabbitmqctl', ['-q', 'set_permissions', '-p', vhost.name, 'guest', '.*', '.*', '.*'])
    await waitFor(
      'the baker to be ready again',
      async () => (await readiness(bakerPort)).status === 200,
      { timeoutMs: 30_000 },
    )
    assert.equal(await dependencyUp(bakerPort, 'rabbitmq'), 1)
    assert.deepEqual((await readiness(receptionPort)).body, {
      status: 'ready',
      redis: 'up',
      rabbitmq: 'up',
    })
    assert.equal(await dependencyUp(receptionPort, 'rabbitmq'), 1)
    await waitFor(
      'the order accepted during the outage to be baked',
      async () => {
        const response = await fetch(`http://127.0.0.1:${receptionPort}/orders/${accepted}/events`)
        const body = (await response.json()) as { entries?: unknown[] }
        return (body.entries?.length ?? 0) >= 3
      },
      { timeoutMs: 30_000 },
    )
  })
})
