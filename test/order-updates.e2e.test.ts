import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomOrderKey } from '../src/reception/orders'
import {
  createVhost,
  dropNamespace,
  postOrder,
  REDIS_URL,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
  receptionUrl,
} from './support'
import { SseClient } from './support/sse'

/**
 * GET /orders/:key/updates against real processes: two reception replicas, the projector, and a
 * baker that starts only once the streams are open, so that the order waits pending meanwhile.
 */
describe('order updates (Server-Sent Events)', () => {
  const namespace = uniqueNamespace('sse')
  const roles = new Set<RoleProcess>()
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let env: Record<string, string>

  const start = async (role: string) => {
    const process_ = await startRole(role, env)
    roles.add(process_)
    return process_
  }
  const stop = async (role: RoleProcess) => {
    roles.delete(role)
    return role.stop()
  }
  const baseOf = (reception: RoleProcess) => receptionUrl(reception)
  const getOrder = async (base: string, key: string) =>
    (await fetch(`${base}/orders/${key}`)).json() as Promise<Record<string, unknown>>

  before(async () => {
    vhost = await createVhost('sse')
    env = {
      AMQP_URL: vhost.url,
      REDIS_URL,
      BAKERY_NAMESPACE: namespace,
      PORT: '0',
      HEALTH_PORT: '0',
      BAKE_TIME_SCALE: '0.1',
      SSE_HEARTBEAT_MS: '200',
      OTEL_SDK_DISABLED: 'true',
    }
  })

  after(async () => {
    await Promise.all([...roles].map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('streams the state at once, then each change, across a reception restart, and closes when finished', async () => {
    const [receptionA, receptionB] = await Promise.all([
      start('reception'),
      start('reception'),
      start('projector'),
    ])
    const a = baseOf(receptionA)
    let b = baseOf(receptionB)
    const key = await postOrder(a, { customer: 'marge', pastry: 'croissant' })

    // Watched on the replica that took the order and on the other one.
    const onA = await SseClient.open(`${a}/orders/${key}/updates`)
    const onB = await SseClient.open(`${b}/orders/${key}/updates`)
    for (const client of [onA, onB]) {
      assert.equal(client.status, 200)
      assert.match(String(client.headers['content-type']), /^text\/event-stream/)
      assert.match(String(client.headers['cache-control']), /no-cache/)
      await waitFor('the current state', () => client.messages.length === 1)
      assert.equal(client.messages[0]!.id, '1')
      assert.deepEqual(JSON.parse(client.messages[0]!.data), await getOrder(a, key))
      assert.equal(JSON.parse(client.messages[0]!.data).status, 'pending')
    }
    await waitFor('a heartbeat while nothing changes', () => onB.comments >= 1, { timeoutMs: 5000 })

    // Reception B stops: its stream ends rather than holding the shutdown up.
    assert.equal(await stop(receptionB), 0, 'reception B exits 0 with a stream open')
    await waitFor("B's stream to end", () => onB.ended)
    const restarted = await start('reception')
    b = baseOf(restarted)

    // The client reconnects with the last id it has: nothing to repeat, so only heartbeats.
    const resumed = await SseClient.open(`${b}/orders/${key}/updates`, { 'last-event-id': '1' })
    assert.equal(resumed.status, 200)
    await waitFor('a heartbeat on the resumed stream', () => resumed.comments >= 1)
    assert.equal(resumed.messages.length, 0, 'what the client had is not sent again')

    await start('baker')
    for (const client of [onA, resumed]) {
      await waitFor('baking and finished, then the end', () => client.ended)
      const expected = client === onA ? ['1', '2', '3'] : ['2', '3']
      assert.deepEqual(
        client.messages.map((m) => m.id),
        expected,
      )
      assert.deepEqual(
        client.messages.map((m) => (JSON.parse(m.data) as { status: string }).status),
        expected.map((id) => ['pending', 'baking', 'finished'][Number(id) - 1]),
      )
    }
    const finished = await getOrder(a, key)
    assert.deepEqual(JSON.parse(onA.messages.at(-1)!.data), finished)

    // A client that has the finished order is told there is nothing more: 204 stops EventSource.
    const done = await fetch(`${b}/orders/${key}/updates`, { headers: { 'last-event-id': '3' } })
    assert.equal(done.status, 204)
    // A new client gets the finished order and the end of the stream.
    const late = await SseClient.open(`${b}/orders/${key}/updates`)
    await waitFor('the late stream to end', () => late.ended)
    assert.deepEqual(
      late.messages.map((m) => [m.id, JSON.parse(m.data) as unknown]),
      [['3', finished]],
    )
  })

  it('404 problem+json for an unknown or malformed key', async () => {
    const reception = [...roles].find((role) => /reception is attended/.test(role.output()))
    assert.ok(reception, 'a reception is running')
    for (const key of [randomOrderKey(), 'not-a-key']) {
      const response = await fetch(`${baseOf(reception)}/orders/${key}/updates`)
      assert.equal(response.status, 404)
      assert.match(String(response.headers.get('content-type')), /^application\/problem\+json/)
      const problem = (await response.json()) as { status: number; detail: string }
      assert.equal(problem.status, 404)
      assert.match(problem.detail, /no order with key/)
    }
  })
})
