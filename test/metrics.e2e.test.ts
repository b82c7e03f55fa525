import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import amqp from 'amqplib'
import {
  createVhost,
  isolatedEnv,
  dropNamespace,
  postOrder,
  startRole,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
  receptionUrl,
} from './support'

/** One sample of a Prometheus text exposition; 0 when the series does not exist yet. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const found = new Map(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    )
    if (Object.entries(labels).every(([k, v]) => found.get(k) === v)) return Number(match[3])
  }
  return 0
}

describe('/metrics on every role', () => {
  const namespace = uniqueNamespace('metrics')
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let reception = ''
  let baker = ''
  let projector = ''
  const scrape = async (base: string) => {
    const response = await fetch(`${base}/metrics`)
    assert.equal(response.status, 200)
    assert.match(String(response.headers.get('content-type')), /^text\/plain; version=0\.0\.4/)
    return response.text()
  }

  before(async () => {
    vhost = await createVhost('metrics')
    const env = isolatedEnv(vhost.url, namespace, { BAKE_TIME_SCALE: '0.1' })
    const started = await Promise.all([
      startRole('reception', env),
      startRole('baker', env),
      startRole('projector', env),
    ])
    roles.push(...started)
    reception = receptionUrl(started[0])
    baker = `http://127.0.0.1:${started[1].healthPort}`
    projector = `http://127.0.0.1:${started[2].healthPort}`
  })

  after(async () => {
    await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('counts orders, messages, bake times and lags as orders go through', async () => {
    const keys = await Promise.all(
      ['croissant', 'éclair', 'la bombe'].map((pastry) =>
        postOrder(reception, { customer: 'edna', pastry }),
      ),
    )
    await waitFor('the orders to be finished and projected', async () => {
      const statuses = await Promise.all(
        keys.map(async (key) => {
          const order = (await (await fetch(`${reception}/orders/${key}`)).json()) as {
            status: string
          }
          return order.status
        }),
      )
      const projected = sample(await scrape(projector), 'bakery_messages_handled_total', {
        message_type: 'bakery/order-baked',
      })
      return statuses.every((s) => s === 'finished') && projected === 3
    })

    const r = await scrape(reception)
    assert.equal(sample(r, 'bakery_orders_accepted_total'), 3)
    assert.equal(
      sample(r, 'bakery_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/orders',
        status: '202',
      }),
      3,
    )
    assert.ok(
      sample(r, 'bakery_http_request_duration_seconds_count', {
        method: 'GET',
        route: '/orders/:key',
        status: '200',
      }) >= 3,
    )
    assert.ok(sample(r, 'process_cpu_seconds_total') > 0, 'process metrics too')

    const b = await scrape(baker)
    assert.equal(sample(b, 'bakery_orders_finished_total'), 3)
    assert.equal(sample(b, 'bakery_bake_duration_seconds_count'), 3)
    assert.equal(sample(b, 'bakery_order_to_finished_seconds_count'), 3)
    assert.ok(sample(b, 'bakery_order_to_finished_seconds_sum') > 0)
    assert.equal(
      sample(b, 'bakery_messages_handled_total', { message_type: 'bakery/place-order' }),
      3,
    )
    // The reception's and the baker's relays share one outbox: PlaceOrder and OrderBaked for
    // each order (the other events stay in the log), counted once acknowledged.
    await waitFor('the relays to count six messages', async () => {
      const relayed = await Promise.all(
        [reception, baker].map(async (base) =>
          sample(await scrape(base), 'bakery_outbox_relay_lag_seconds_count'),
        ),
      )
      return relayed[0]! + relayed[1]! === 6
    })

    const p = await scrape(projector)
    assert.equal(
      sample(p, 'bakery_messages_handled_total', { message_type: 'bakery/order-baked' }),
      3,
    )
    for (const type of ['bakery/order-placed', 'bakery/baking-started'])
      assert.equal(sample(p, 'bakery_messages_handled_total', { message_type: type }), 0, type)
    // A view is written only when it moves forward: at least once per order.
    assert.ok(sample(p, 'bakery_projector_lag_seconds_count') >= 3)
  })

  it('counts a message that fails and is dead-lettered, by its type', async () => {
    const labels = { message_type: 'bakery/order-baked' }
    const before_ = await scrape(projector)
    const connection = await amqp.connect(vhost.url)
    try {
      const channel = await connection.createConfirmChannel()
      // A message no handler can ever take: dead-lettered at once.
      channel.publish('bakery/order-baked', '', Buffer.from('{"$name":"bakery/order-baked"}'), {
        type: 'bakery/order-baked',
        persistent: true,
      })
      await channel.waitForConfirms()
    } finally {
      await connection.close()
    }
    await waitFor('the dead-letter to be counted', async () => {
      const text = await scrape(projector)
      return (
        sample(text, 'bakery_messages_dead_lettered_total', labels) ===
          sample(before_, 'bakery_messages_dead_lettered_total', labels) + 1 &&
        sample(text, 'bakery_messages_failed_total', labels) ===
          sample(before_, 'bakery_messages_failed_total', labels) + 1
      )
    })
  })
})
