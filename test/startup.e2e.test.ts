import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { freePort, ROOT, startRole, uniqueNamespace, waitFor } from './support'

const bakery = join(ROOT, 'bin', 'bakery.js')

describe('starting a role', () => {
  it('stops at once on a bad setting, naming the variable', () => {
    const result = spawnSync(process.execPath, [bakery, 'reception'], {
      env: { ...process.env, PORT: 'eighty', BAKE_TIME_SCALE: 'fast' },
      encoding: 'utf8',
    })
    assert.equal(result.status, 78)
    assert.match(result.stderr, /PORT="eighty"/)
    assert.match(result.stderr, /BAKE_TIME_SCALE="fast"/)
  })

  it('says which broker it cannot reach, keeps retrying, and is not ready meanwhile', async () => {
    const [redisPort, healthPort] = await Promise.all([freePort(), freePort()])
    // A "broker" that hangs up on every connection: it counts the role's attempts.
    let attempts = 0
    const broker = createServer((socket) => {
      attempts += 1
      socket.destroy()
    })
    broker.listen(0, '127.0.0.1')
    await once(broker, 'listening')
    const amqpPort = (broker.address() as AddressInfo).port
    const baker = await startRole(
      'baker',
      {
        AMQP_URL: `amqp://guest:secret@127.0.0.1:${amqpPort}`,
        REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        BAKERY_NAMESPACE: uniqueNamespace('startup'),
        HEALTH_PORT: String(healthPort),
        OTEL_SDK_DISABLED: 'true',
      },
      { until: 'listening' },
    )
    try {
      await waitFor(
        'both complaints',
        () =>
          /cannot reach RabbitMQ/.test(baker.output()) && /cannot reach Redis/.test(baker.output()),
      )
      const output = baker.output()
      assert.match(
        output,
        new RegExp(`amqp://guest:\\*\\*\\*@127\\.0\\.0\\.1:${amqpPort}`),
        'names the URL, password masked',
      )
      assert.doesNotMatch(output, /secret/)
      assert.match(output, /rabbitmq-server/, 'says how to start it')
      assert.match(output, new RegExp(`redis://127\\.0\\.0\\.1:${redisPort}`))
      const ready = await fetch(`http://127.0.0.1:${healthPort}/readyz`)
      assert.equal(ready.status, 503)
      assert.equal((await fetch(`http://127.0.0.1:${healthPort}/healthz`)).status, 200)
      // Still retrying, with backoff, without a line per attempt.
      await waitFor('three more attempts', () => attempts >= 4)
      assert.equal(baker.child.exitCode, null, 'still running')
      assert.equal(baker.output().match(/cannot reach RabbitMQ/g)?.length, 1)
    } finally {
      broker.close()
      assert.equal(await baker.stop(), 0, 'exits 0 on SIGTERM even so')
    }
  })
})
