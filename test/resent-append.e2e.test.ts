import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import {
  dropNamespace,
  postOrder,
  REDIS_URL,
  uniqueNamespace,
  type RoleProcess,
  orderKeysIn,
} from './support'
import { startLoneReception } from './support/lone-reception'
import { TcpProxy } from './support/tcp-proxy'

/**
 * The reception's append reaches Redis and is written, but the connection breaks before the reply
 * comes back. ioredis resends the command after it reconnects: the resent append must be taken for
 * what it is, the same append, and the client told its order was placed.
 */
describe('an append whose reply was lost', () => {
  const namespace = uniqueNamespace('resent')
  const k = keys(namespace)
  const redis = new Redis(REDIS_URL)
  let proxy: TcpProxy
  let reception: RoleProcess
  let base: string

  before(async () => {
    proxy = await TcpProxy.start(Number(new URL(REDIS_URL).port || 6379))
    // No broker at all: the outbox keeps every entry, so the test can count them.
    ;({ role: reception, base } = await startLoneReception(namespace, { REDIS_URL: proxy.url }))
    // The append script is loaded, so the cut command is the append itself, not a NOSCRIPT retry.
    await postOrder(base)
    const once = await fetch(`${base}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': `warm-${namespace}` },
      body: JSON.stringify({ customer: 'homer', pastry: 'la bombe' }),
    })
    assert.equal(once.status, 202)
  })

  after(async () => {
    await reception?.stop('SIGKILL')
    await proxy?.close()
    await dropNamespace(namespace)
    redis.disconnect()
  })

  const placeWithReplyLost = async (headers: Record<string, string> = {}) => {
    const outboxBefore = await redis.xlen(k.partitions[0]!.outbox)
    const ordersBefore = await orderKeysIn(redis, namespace)
    // EVALSHA, or EVAL where ioredis sends the script itself (after a reconnect).
    const cut = proxy.cutReplyTo('eval')
    const response = await fetch(`${base}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ customer: 'homer', pastry: 'la bombe' }),
    })
    await cut
    const body = (await response.json()) as { orderKey?: string }
    const stored = (await orderKeysIn(redis, namespace)).filter((o) => !ordersBefore.includes(o))
    return {
      response,
      body,
      stored,
      outboxAdded: (await redis.xlen(k.partitions[0]!.outbox)) - outboxBefore,
    }
  }

  it('answers 202 for the order it stored, once', async () => {
    const perOrder =
      (await redis.xlen(k.partitions[0]!.outbox)) / (await orderKeysIn(redis, namespace)).length
    const { response, body, stored, outboxAdded } = await placeWithReplyLost()
    assert.equal(stored.length, 1, 'the append was written once')
    assert.equal(response.status, 202, `answered ${response.status}: ${JSON.stringify(body)}`)
    assert.equal(body.orderKey, stored[0])
    assert.equal(await redis.xlen(k.orderStream(stored[0]!)), 1, 'one OrderPlaced')
    assert.equal(outboxAdded, perOrder, 'its outbox entries once')
    const got = await fetch(`${base}/orders/${body.orderKey}`)
    assert.equal(got.status, 200)
  })

  it('with an Idempotency-Key: 202 as a first placement, not a replay', async () => {
    const { response, body, stored } = await placeWithReplyLost({
      'idempotency-key': `resent-${namespace}`,
    })
    assert.equal(stored.length, 1)
    assert.equal(response.status, 202, `answered ${response.status}: ${JSON.stringify(body)}`)
    assert.equal(body.orderKey, stored[0])
    assert.equal(response.headers.get('idempotent-replayed'), null, 'nothing was placed before')
  })
})
