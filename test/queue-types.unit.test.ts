import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ConfigError, loadConfig } from '../src/platform/config'
import {
  deadLetterQueue,
  explainMismatch,
  retryQueue,
  workQueue,
  type QueuePolicy,
} from '../src/platform/queue-types'

const classic: QueuePolicy = { type: 'classic', deliveryLimit: 20 }
const quorum: QueuePolicy = { type: 'quorum', deliveryLimit: 5 }

describe('AMQP_URL', () => {
  const nodes = (value: string) => loadConfig({ AMQP_URL: value }).AMQP_URL.map((u) => u.href)

  it('is one broker by default', () => {
    assert.deepEqual(nodes('amqp://guest:guest@127.0.0.1:5672'), [
      'amqp://guest:guest@127.0.0.1:5672',
    ])
    assert.deepEqual(
      loadConfig({}).AMQP_URL.map((u) => u.href),
      ['amqp://guest:guest@127.0.0.1:5672'],
    )
  })

  it('names several nodes of one cluster; a node without credentials or vhost takes the first one’s', () => {
    assert.deepEqual(nodes('amqp://u:p@h1:5672/orders, amqp://h2:5673,amqp://h3/'), [
      'amqp://u:p@h1:5672/orders',
      'amqp://u:p@h2:5673/orders',
      'amqp://u:p@h3/orders',
    ])
    assert.deepEqual(nodes('amqp://u:p@h1,amqps://v:q@h2'), ['amqp://u:p@h1', 'amqps://v:q@h2'])
  })

  it('refuses two vhosts, another scheme, or an empty node, naming the variable', () => {
    for (const value of ['amqp://h1/a,amqp://h2/b', 'amqp://h1,http://h2', 'amqp://h1,,amqp://h2'])
      assert.throws(
        () => loadConfig({ AMQP_URL: value }),
        (error: unknown) => error instanceof ConfigError && /^AMQP_URL=/.test(error.problems[0]!),
        value,
      )
  })
})

describe('QUEUE_TYPE', () => {
  it('is classic unless set to quorum', () => {
    assert.equal(loadConfig({}).QUEUE_TYPE, 'classic')
    assert.equal(loadConfig({ QUEUE_TYPE: 'quorum' }).QUEUE_TYPE, 'quorum')
    assert.throws(() => loadConfig({ QUEUE_TYPE: 'mirrored' }), /QUEUE_TYPE="mirrored"/)
    assert.throws(() => loadConfig({ QUEUE_DELIVERY_LIMIT: '0' }), /QUEUE_DELIVERY_LIMIT="0"/)
  })

  it('classic queues are declared as they always were, so an existing broker accepts them', () => {
    assert.deepEqual(workQueue(classic, 'dl'), { durable: true })
    assert.deepEqual(deadLetterQueue(classic), { durable: true })
    assert.deepEqual(retryQueue(classic, 100, 'work'), {
      durable: true,
      arguments: {
        'x-message-ttl': 100,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': 'work',
      },
    })
  })

  it('quorum queues dead-letter at least once, and a work queue gives up on a message after the delivery limit', () => {
    const atLeastOnce = {
      'x-queue-type': 'quorum',
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish',
    }
    assert.deepEqual(workQueue(quorum, 'dl').arguments, {
      ...atLeastOnce,
      'x-delivery-limit': 5,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': 'dl',
    })
    assert.deepEqual(retryQueue(quorum, 100, 'work').arguments, {
      ...atLeastOnce,
      'x-message-ttl': 100,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': 'work',
    })
    assert.deepEqual(deadLetterQueue(quorum).arguments, { 'x-queue-type': 'quorum' })
  })
})

describe('a queue that exists with other arguments', () => {
  // What RabbitMQ 3.10 answers, through amqplib, when a declaration does not match the queue.
  const refusal = (detail: string) =>
    Object.assign(
      new Error(
        `Operation failed: QueueDeclare; 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - inequivalent arg ${detail}"`,
      ),
      { code: 406 },
    )

  it('of the other type: names the queue, its type, and both ways out', () => {
    const classicThere = refusal(
      "'x-dead-letter-exchange' for queue 'bakery.baker' in vhost 'shop': received the value '' of type 'longstr' but current is none",
    )
    assert.equal(
      explainMismatch('bakery.baker', 'shop', quorum, classicThere)?.message,
      'queue bakery.baker in vhost shop is a classic queue, but QUEUE_TYPE=quorum and RabbitMQ ' +
        "cannot change a queue's type: set QUEUE_TYPE=classic, or drain it and delete it " +
        '(rabbitmqctl delete_queue -p shop bakery.baker) so that it is declared anew',
    )
    const quorumThere = refusal(
      "'x-dead-letter-exchange' for queue 'bakery.baker' in vhost '/': received none but current is the value '' of type 'longstr'",
    )
    assert.match(
      explainMismatch('bakery.baker', '/', classic, quorumThere)?.message ?? '',
      /^queue bakery.baker in vhost \/ is a quorum queue, but QUEUE_TYPE=classic .* set QUEUE_TYPE=quorum/,
    )
  })

  it('of the same type with another setting: names the setting; other errors are not explained', () => {
    const limit = refusal(
      "'x-delivery-limit' for queue 'bakery.baker' in vhost '/': received the value '5' of type 'long' but current is the value '20' of type 'long'",
    )
    assert.match(
      explainMismatch('bakery.baker', '/', quorum, limit)?.message ?? '',
      /^queue bakery.baker in vhost \/ has another x-delivery-limit \(received the value '5' .* current is the value '20' of type 'long'\).*QUEUE_DELIVERY_LIMIT/,
    )
    assert.equal(explainMismatch('q', '/', quorum, new Error('connection closed')), undefined)
  })
})
