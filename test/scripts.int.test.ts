import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { keys } from '../src/platform/keys'
import { withScripts } from '../src/platform/scripts'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, REDIS_URL, uniqueNamespace } from './support'

const namespace = uniqueNamespace('scripts')
const partition = keys(namespace).partitions[0]!
const clients: Redis[] = []
const EVERY_SCRIPT = [
  'bakeryAcquireReplay',
  'bakeryAppend',
  'bakeryAppendOnce',
  'bakeryClaimResend',
  'bakeryCommitSegment',
  'bakeryDropOrderStream',
  'bakeryFlipGeneration',
  'bakeryGetView',
  'bakeryGetViewWithTail',
  'bakeryPark',
  'bakeryRenewLock',
  'bakerySaveView',
  'bakeryUnpark',
]

/** A client that records each script defined on it, as Redis will be given it. */
function recordingClient() {
  const redis = new Redis(REDIS_URL)
  clients.push(redis)
  const defined: { name: string; lua: string; numberOfKeys?: number }[] = []
  const define = redis.defineCommand.bind(redis)
  redis.defineCommand = (name, definition) => {
    defined.push({ name, ...definition })
    define(name, definition)
  }
  return { redis, defined }
}

after(async () => {
  await dropNamespace(namespace)
  for (const redis of clients) redis.disconnect()
})

describe('the script registry', () => {
  it('defines every script on a client once, however many callers ask for them', () => {
    const { redis, defined } = recordingClient()
    const scripted = withScripts(redis)
    assert.equal(withScripts(redis), scripted, 'the same client, typed')
    withScripts(redis)

    const names = defined.map((d) => d.name)
    assert.deepEqual([...new Set(names)], names, 'no script defined twice')
    assert.deepEqual(names.toSorted(), EVERY_SCRIPT)
    for (const { name, numberOfKeys } of defined) {
      assert.ok(numberOfKeys !== undefined && numberOfKeys > 0, `${name} declares its keys`)
      assert.equal(typeof (redis as unknown as Record<string, unknown>)[name], 'function')
    }

    const other = recordingClient()
    withScripts(other.redis)
    assert.deepEqual(
      other.defined.map((d) => d.name),
      names,
      'each client has its own',
    )
  })

  it('holds only Lua that Redis compiles, the rarely run scripts included', async () => {
    const { redis, defined } = recordingClient()
    withScripts(redis)
    for (const { name, lua } of defined) {
      const sha = (await redis.script('LOAD', lua)) as string
      assert.match(sha, /^[0-9a-f]{40}$/, name)
    }
  })

  it('hands out typed calls that run on the client and in its pipelines', async () => {
    const redis = withScripts(recordingClient().redis)
    const { viewGeneration, viewPrefix } = partition
    const orderKey = randomOrderKey()

    assert.equal(
      await redis.bakerySaveView(viewGeneration, viewPrefix, orderKey, 2, 'status', 'baking'),
      1,
    )
    const [older, read] = (await redis
      .pipeline()
      .bakerySaveView(viewGeneration, viewPrefix, orderKey, 1, 'status', 'pending')
      .bakeryGetView(viewGeneration, viewPrefix, orderKey)
      .exec())!
    assert.deepEqual(older, [null, 0], 'an older view is not saved')
    assert.deepEqual(read, [null, ['version', '2', 'status', 'baking']])
    assert.equal(await redis.hget(partition.view(orderKey), 'status'), 'baking')
  })
})
