import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { liveGeneration } from '../src/projections/generations'
import { replayReadModel, type RebuildOptions } from '../src/projections/rebuild'
import { runReplay } from '../src/tools/replay'
import { captureIo, namespaceFactory, seedOrders, type Bakery } from './support/replay'

/**
 * `bakery replay` must never swap in a partial read model, whatever happens to its lock, and must
 * not leave generations behind. Each test runs in a namespace of its own against the real Redis.
 */
const namespaces = namespaceFactory()
after(namespaces.cleanUp)
/** A fresh namespace, and a second connection to it for what another process would do. */
function fresh(label: string) {
  const made = namespaces.fresh(label)
  return { ...made, other: namespaces.open(made.namespace) }
}

const quiet = (
  batchSize: number,
  onProgress: (read: number) => void | Promise<void> = () => undefined,
) => ({ batchSize, cacheSize: 10_000, onSkip: () => undefined, onProgress }) as RebuildOptions

/** --verify's summary line: how the live read model differs from the log. */
async function differences(namespace: string): Promise<string> {
  const io = captureIo(namespace)
  await runReplay(['--verify'], io)
  return io.out().trimEnd().split('\n').at(-1) ?? ''
}

/** The generations that have read-model keys. */
async function generations(b: Bakery): Promise<number[]> {
  const found = new Set<number>()
  for (const key of await b.redis.keys(`${b.keys.partitions[0]!.viewPrefix}*`)) {
    const rest = key.slice(b.keys.partitions[0]!.viewPrefix.length)
    found.add(/^\d+:/.test(rest) ? Number(rest.split(':')[0]) : 0)
  }
  return [...found].sort((x, y) => x - y)
}

describe('bakery replay under a lost lock', () => {
  it('a replay whose lock was taken over stops at its next renewal and swaps nothing in', async () => {
    const { b, other } = fresh('fence-taken')
    await seedOrders(b, 600)
    let stolen = false
    const replay = replayReadModel(b.redis, b.keys, b.store, b.views, {
      // Renewed every 100 ms.
      lockTtlMs: 300,
      ...quiet(10, async () => {
        if (stolen) return
        stolen = true
        // The lock expires while this replay stalls for longer than its time to live, and
        // someone else takes it; the stall spans at least one renewal.
        await other.redis.set(b.keys.replayLock, 'someone-else')
        await new Promise((resolve) => setTimeout(resolve, 300))
      }),
    })
    await assert.rejects(replay, /lost its lock: it expired or another replay took it/)
    assert.equal(
      await liveGeneration(b.redis, b.keys.partitions[0]!),
      0,
      'the live generation did not move',
    )
    assert.equal(await b.redis.get(b.keys.replayLock), 'someone-else', 'the new holder keeps it')
  })

  it('a second replay cannot make the first swap in a generation it emptied', async () => {
    const { namespace, b, other } = fresh('fence-second')
    await seedOrders(b, 1500)
    let calls = 0
    let second: Promise<unknown> | undefined
    const first = replayReadModel(
      b.redis,
      b.keys,
      b.store,
      b.views,
      quiet(50, () => {
        calls += 1
        if (calls !== 3) return
        // The first replay's lock expires; a second one starts, clears what it finds of the
        // next generation, and crashes after its first batch.
        second = (async () => {
          await other.redis.del(b.keys.replayLock)
          await replayReadModel(
            other.redis,
            other.keys,
            other.store,
            other.views,
            quiet(10, () => {
              throw new Error('crashed')
            }),
          )
        })()
        second.catch(() => undefined)
      }),
    )
    const outcome = await first.then(
      () => 'swapped',
      (error: Error) => error.message,
    )
    await assert.rejects(second!, /crashed/)
    const verify = await differences(namespace)
    assert.match(verify, / 0 differences/, `the first replay ended with "${outcome}":\n${verify}`)
  })

  it('cleans the generations an interrupted replay left behind on the next run', async () => {
    const { namespace, b } = fresh('fence-leftover')
    const orders = await seedOrders(b, 20)
    assert.equal(await runReplay([], captureIo(namespace)), 0)
    assert.deepEqual(await generations(b), [1])
    // A replay that crashed after its swap: generation 2 is live, 1 is still there; and one that
    // crashed while building generation 7.
    for (const order of orders) {
      const view = await b.redis.hgetall(b.keys.view(order, 1))
      await b.redis.hset(b.keys.view(order, 2), view)
      await b.redis.hset(b.keys.view(order, 7), view)
    }
    await b.redis.set(b.keys.partitions[0]!.viewGeneration, 2)
    assert.deepEqual(await generations(b), [1, 2, 7])

    const io = captureIo(namespace)
    assert.equal(await runReplay([], io), 0, io.err())
    const live = await liveGeneration(b.redis, b.keys.partitions[0]!)
    assert.deepEqual(await generations(b), [live], 'only the live generation is left')
    assert.match(await differences(namespace), / 0 differences/)
  })
})
