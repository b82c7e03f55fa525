import type { ConsumeMessage, Options } from 'amqplib'
import type { TransportMessage } from '@node-ts/bus-core'
import type { Command, Event } from '@node-ts/bus-messages'
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { describeFieldErrors, type AnyMessageDefinition } from '../../messages'
import { PoisonMessage } from '../errors'

const AttributeMap = t.record(t.string, t.union([t.string, t.number, t.boolean]))
const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * A delivery as bus-core sees a message: its body decoded by the codec of its `$name` (one of
 * those `queue` takes), its context from the properties and the `attributes` /
 * `stickyAttributes` headers. Anything that can never be handled is a PoisonMessage, which says
 * what is wrong with it.
 */
export function decodeDelivery(
  raw: ConsumeMessage,
  accepted: ReadonlyMap<string, AnyMessageDefinition>,
  queue: string | undefined,
): TransportMessage<ConsumeMessage> {
  let text: string
  try {
    text = utf8.decode(raw.content)
  } catch {
    throw new PoisonMessage('the body is not valid UTF-8')
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new PoisonMessage('the body is not JSON')
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new PoisonMessage('the body is not a JSON object')
  const name = (body as { $name?: unknown }).$name
  if (typeof name !== 'string') throw new PoisonMessage('the body has no string $name')
  const definition = accepted.get(name)
  if (!definition) throw new PoisonMessage(`${name} is not a message that ${queue} handles`)
  const decoded = definition.codec.decode(body)
  if (isLeft(decoded))
    throw new PoisonMessage(
      `the body is not a valid ${name} v${definition.$version}: ${describeFieldErrors(decoded.left)}`,
    )
  const headers = raw.properties.headers ?? {}
  return {
    id: typeof raw.properties.messageId === 'string' ? raw.properties.messageId : undefined,
    raw,
    domainMessage: decoded.right as Command | Event,
    attributes: {
      correlationId:
        typeof raw.properties.correlationId === 'string' ? raw.properties.correlationId : undefined,
      attributes: parseAttributeHeader(headers, 'attributes'),
      stickyAttributes: parseAttributeHeader(headers, 'stickyAttributes'),
    },
  }
}

function parseAttributeHeader(
  headers: Record<string, unknown>,
  name: string,
): Record<string, string | number | boolean> {
  const value = headers[name]
  if (value === undefined || value === null) return {}
  const text = Buffer.isBuffer(value) ? value.toString('utf8') : value
  if (typeof text !== 'string') throw new PoisonMessage(`the ${name} header is not a JSON string`)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new PoisonMessage(`the ${name} header is not JSON`)
  }
  if (!AttributeMap.is(parsed) || Array.isArray(parsed))
    throw new PoisonMessage(`the ${name} header is not an object of strings, numbers and booleans`)
  return parsed
}

/** The properties a copy of a delivery keeps when it is forwarded (retried, dead-lettered). */
export function copyProperties(delivery: ConsumeMessage): Options.Publish {
  const p = delivery.properties
  return {
    correlationId: p.correlationId as string | undefined,
    messageId: p.messageId as string | undefined,
    type: p.type as string | undefined,
    timestamp: p.timestamp as number | undefined,
    appId: p.appId as string | undefined,
  }
}
