import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { runEvents } from '../src/tools/events'
import { randomOrderKey } from '../src/reception/orders'
import { dropNamespace, uniqueNamespace, waitFor } from './support'
import { bakery, captureIo, lifecycle, record, seedOrders } from './support/replay'

const namespace = uniqueNamespace('events')
const b = bakery(namespace)

interface Line {
  id: string
  order: string
  version: number
  type: string
}
const lines = (text: string): Line[] =>
  text
    .trimEnd()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Line)

describe('bakery events', () => {
  after(async () => {
    b.close()
    await dropNamespace(namespace)
  })

  it('prints a slice of the log, filtered by order, type, stream id and limit', async () => {
    const [first, second] = await seedOrders(b, 2)
    const all = captureIo(namespace)
    assert.equal(await runEvents(['--json'], all), 0)
    const log = lines(all.out())
    assert.equal(log.length, 6)

    const byOrder = captureIo(namespace)
    assert.equal(await runEvents(['--order', second!, '--json'], byOrder), 0)
    assert.deepEqual(
      lines(byOrder.out()).map((e) => [e.order, e.version]),
      [
        [second, 1],
        [second, 2],
        [second, 3],
      ],
    )

    const byType = captureIo(namespace)
    assert.equal(await runEvents(['--type', 'order-baked', '--json'], byType), 0)
    assert.deepEqual(
      lines(byType.out()).map((e) => e.order),
      [first, second],
    )

    const range = captureIo(namespace)
    assert.equal(
      await runEvents(['--from', log[1]!.id, '--to', log[3]!.id, '--limit', '2', '--json'], range),
      0,
    )
    assert.deepEqual(
      lines(range.out()).map((e) => e.id),
      [log[1]!.id, log[2]!.id],
    )

    const table = captureIo(namespace, { tty: true })
    assert.equal(await runEvents(['--type', 'bakery/order-placed'], table), 0)
    const rows = table.out().trimEnd().split('\n')
    assert.match(rows[0]!, /^ID\s+RECORDED AT\s+ORDER\s+V\s+EVENT\s+WHAT HAPPENED$/)
    assert.match(
      rows[1]!,
      new RegExp(`${first}\\s+1\\s+bakery/order-placed\\s+homer ordered la bombe$`),
    )
    assert.equal(rows.length, 3)
  })

  it('--follow shows an event appended after it started, until interrupted', async () => {
    const controller = new AbortController()
    const io = captureIo(namespace, { signal: controller.signal })
    const following = runEvents(['--follow', '--from', '1s', '--json'], io)
    // Once it is blocked on the tail of the log, place an order.
    await waitFor('the follower blocked on the log', async () =>
      String(await b.redis.client('LIST'))
        .split('\n')
        .some((client) => client.includes('name=bakery-events') && client.includes('cmd=xread')),
    )
    const order = randomOrderKey()
    await record(b, lifecycle.placed(order, 'lisa', 'eclair'))
    const seen = await waitFor('the new event to be printed', () =>
      lines(io.out()).find((e) => e.order === order),
    )
    assert.equal(seen.type, 'bakery/order-placed')
    controller.abort()
    assert.equal(await following, 0)
  })
})
