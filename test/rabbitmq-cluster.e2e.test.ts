import { after, afterEach, before, describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { runReplay } from '../src/tools/replay'
import { queues } from '../src/wiring'
import {
  dropNamespace,
  startRole,
  uniqueNamespace,
  waitFor,
  countFinished,
  driveOrders,
  orderKeysIn,
  orderProblems,
  REDIS_URL,
  receptionUrl,
} from './support'
import { whereStuck } from './support/faults'
import { startRabbitCluster, type RabbitCluster, type RabbitNode } from './support/rabbitmq-cluster'
import { captureIo } from './support/replay'

/**
 * The whole pipeline on quorum queues over a three-node RabbitMQ cluster of the test's own, under
 * a steady load, losing the node that leads `bakery.baker`: in order (`rabbitmqctl stop`), then
 * without a word (kill -9). Nothing accepted is lost, nothing is done twice.
 */
describe('quorum queues on a three-node cluster that loses a node', { timeout: 240_000 }, () => {
  const redis = new Redis(REDIS_URL)
  let cluster: RabbitCluster | undefined
  const cleanups: (() => Promise<unknown>)[] = []

  before(async () => {
    cluster = await startRabbitCluster(3)
  })
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })
  after(async () => {
    redis.disconnect()
    await cluster?.close()
    assert.deepEqual(await cluster?.leftovers(), [], 'no node of the cluster is left running')
  })

  /** The three roles in a vhost of the cluster and a namespace of their own. */
  const bakery = async (label: string) => {
    const c = cluster!
    // Every running node becomes a member of the queues declared now: bring back one lost before.
    for (const node of c.nodes) if (!node.isRunning()) await node.start()
    const vhost = uniqueNamespace(label)
    const namespace = uniqueNamespace(label)
    cleanups.push(() => dropNamespace(namespace))
    const env = {
      AMQP_URL: await c.addVhost(vhost),
      REDIS_URL,
      BAKERY_NAMESPACE: namespace,
      QUEUE_TYPE: 'quorum',
      PORT: '0',
      HEALTH_PORT: '0',
      OTEL_SDK_DISABLED: 'true',
      BAKE_TIME_SCALE: '0.2',
    }
    const roles = await Promise.all(
      ['reception', 'baker', 'projector'].map((role) => startRole(role, env)),
    )
    for (const role of roles) cleanups.push(() => role.stop())
    return { vhost, namespace, roles, base: receptionUrl(roles[0]!) }
  }

  const survives = async (t: TestContext, lose: (leader: RabbitNode) => Promise<void>) => {
    const c = cluster!
    const { vhost, namespace, roles, base } = await bakery(
      t.name.includes('kill') ? 'kill' : 'stop',
    )
    const started = Date.now()
    // A steady, modest load: at most 40 orders a second.
    const load = driveOrders(base, 2, 50)
    const finished = () => countFinished(redis, namespace, load.accepted)
    const explained = <T>(waiting: Promise<T>) =>
      waiting.catch(async (error: Error) => {
        throw new Error(
          `${error.message}\n${await whereStuck(redis, namespace, roles, load.accepted, await cluster!.queueCounts(vhost))}`,
        )
      })
    const leader = await (async () => {
      try {
        await waitFor('some orders to finish', async () => (await finished()) >= 20, {
          timeoutMs: 30_000,
        })
        const leader = await c.leaderOf(vhost, queues.baker)
        const lostAt = Date.now()
        await lose(leader)
        const before = await finished()
        // Roles that were connected to the lost node come back on a survivor; the queues go on.
        await explained(
          waitFor(
            'orders to finish after the loss',
            async () => (await finished()) >= before + 30,
            {
              timeoutMs: 60_000,
              intervalMs: 250,
            },
          ),
        )
        t.diagnostic(
          `${leader.name} lost ${lostAt - started} ms into the load; 30 more orders finished ${Date.now() - lostAt} ms after`,
        )
        return leader
      } finally {
        await load.stop()
      }
    })()
    assert.deepEqual(load.refused, [], 'the reception refused nothing')
    assert.notEqual((await c.leaderOf(vhost, queues.baker)).name, leader.name, 'a new leader')
    const moved = roles.filter((role) => /lost the connection to RabbitMQ/.test(role.output()))
    assert.ok(moved.length >= 1, 'the role that declared the queues was connected to their leader')
    for (const role of moved)
      assert.ok(
        (role.output().match(/connected to RabbitMQ, topology declared/g)?.length ?? 0) >= 2,
      )

    await explained(
      waitFor(
        `all ${load.accepted.length} accepted orders to finish`,
        async () => (await finished()) === load.accepted.length,
        { timeoutMs: 60_000, intervalMs: 250 },
      ),
    )
    const stored = await orderKeysIn(redis, namespace)
    assert.equal(stored.length, load.accepted.length, 'one stored order per 202')
    await waitFor(
      'each order placed, started and baked once; the read model the fold',
      async () => {
        const problems = await orderProblems(redis, namespace, stored)
        if (problems.length > 0) throw new Error(problems.slice(0, 3).join('\n'))
        return true
      },
    )
    const io = captureIo(namespace)
    assert.equal(await runReplay(['--verify'], io), 0, io.out() + io.err())
    assert.match(io.out(), /0 differences, 0 entries skipped/)
    assert.ok(
      roles.every((role) => role.child.exitCode === null),
      'no role was restarted',
    )
    t.diagnostic(
      `${load.accepted.length} orders accepted, each finished once; ${moved.length} role(s) moved to a survivor`,
    )
  }

  it('stopping the node that leads bakery.baker', (t) => survives(t, (node) => node.stop()))

  it('kill -9 of the node that leads bakery.baker', (t) => survives(t, (node) => node.kill()))
})
