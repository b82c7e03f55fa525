import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import {
  createVhost,
  freePort,
  listeningPort,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from './support'
import { countFinished, driveOrders, orderKeysIn, orderProblems } from './support/faults'

/** A Redis of the test's own, with an append-only file, so it can be stopped and started. */
class OwnRedis {
  private process: ChildProcess | undefined
  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(): Promise<OwnRedis> {
    const redis = new OwnRedis(await freePort(), await mkdtemp(join(tmpdir(), 'bakery-redis-')))
    await redis.up()
    return redis
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async up(): Promise<void> {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) return
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--appendonly', 'yes']
    const child = spawn('redis-server', [...args, '--dir', this.dir, '--save', ''], {
      stdio: 'ignore',
    })
    this.process = child
    await waitFor(`redis-server on ${this.port}`, async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode}`)
      const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null })
      probe.on('error', () => undefined)
      try {
        await probe.connect()
        return (await probe.ping()) === 'PONG'
      } finally {
        probe.disconnect()
      }
    })
  }

  /** SIGTERM: Redis flushes its append-only file and exits, as on a restart. */
  async down(): Promise<void> {
    const child = this.process
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }

  async remove(): Promise<void> {
    await this.down()
    await rm(this.dir, { recursive: true, force: true })
  }
}

describe('Redis restarting', () => {
  let redisServer: OwnRedis
  let client: Redis
  let vhost: Awaited<ReturnType<typeof createVhost>>
  const roles: RoleProcess[] = []
  const namespace = uniqueNamespace('redis-restart')

  before(async () => {
    redisServer = await OwnRedis.start()
    client = new Redis(redisServer.url)
    client.on('error', () => undefined)
    vhost = await createVhost('redis-restart')
  })

  after(async () => {
    await Promise.all(roles.map((role) => role.stop('SIGKILL')))
    client?.disconnect()
    await redisServer?.remove()
    await vhost?.drop()
  })

  it('POST answers 503 problem+json while it is down; afterwards no accepted order is lost', async () => {
    const env = {
      AMQP_URL: vhost.url,
      REDIS_URL: redisServer.url,
      BAKERY_NAMESPACE: namespace,
      PORT: '0',
      HEALTH_PORT: '0',
      OTEL_SDK_DISABLED: 'true',
      BAKE_TIME_SCALE: '0.2',
    }
    roles.push(
      ...(await Promise.all(['reception', 'baker', 'projector'].map((r) => startRole(r, env)))),
    )
    const base = `http://127.0.0.1:${listeningPort(roles[0]!)}`
    const load = driveOrders(base, 4)
    let whileDown: Response | undefined
    try {
      await waitFor('orders to be accepted', () => load.accepted.length >= 50)
      await redisServer.down()
      const acceptedBefore = load.accepted.length
      whileDown = await fetch(`${base}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ customer: 'homer', pastry: 'donut' }),
      })
      await waitFor('the load to be refused', () => load.refused.length >= 20)
      await redisServer.up()
      await waitFor(
        'orders to be accepted again',
        () => load.accepted.length >= acceptedBefore + 50,
        {
          timeoutMs: 30_000,
        },
      )
    } finally {
      await load.stop()
      await redisServer.up().catch(() => undefined)
    }

    assert.equal(whileDown.status, 503)
    assert.match(whileDown.headers.get('content-type') ?? '', /^application\/problem\+json/)
    assert.equal(whileDown.headers.get('retry-after'), '1')
    const problem = (await whileDown.json()) as { status: number; title: string }
    assert.equal(problem.status, 503)
    assert.equal(problem.title, 'Service Unavailable')
    for (const { status, type } of load.refused) {
      assert.equal(status, 503)
      assert.match(type ?? '', /^application\/problem\+json/)
    }
    assert.ok(
      roles.every((role) => role.child.exitCode === null),
      'no role was restarted',
    )
    // Each role reconnects on its own backoff, which may end after the reception's.
    for (const role of roles)
      await waitFor('every role to log that Redis is back', () =>
        /Redis is back/.test(role.output()),
      )

    await waitFor(
      'every accepted order to finish',
      async () => (await countFinished(client, namespace, load.accepted)) === load.accepted.length,
      { timeoutMs: 45_000, intervalMs: 250 },
    )
    // A request cut off mid-append may have stored its order though it was answered 503: every
    // stored order, accepted or not, must finish exactly once.
    const stored = await orderKeysIn(client, namespace)
    assert.ok(load.accepted.every((order) => stored.includes(order)))
    await waitFor('every stored order to finish and be folded', async () => {
      const problems = await orderProblems(client, namespace, stored)
      if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
      return true
    })
  })
})
