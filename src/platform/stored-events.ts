import { context, propagation } from '@opentelemetry/api'
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { PathReporter } from 'io-ts/lib/PathReporter'
import { NonNegativeInt, Timestamp } from '../messages'
import { MalformedEntry } from './errors'
import { fieldRecord } from './redis'

/** Decodes the events a log holds: an io-ts codec of the domain's event union. */
export type EventCodec<E> = t.Decoder<unknown, E>

/** W3C trace context headers (`traceparent`, `tracestate`), as a propagator writes them. */
export type TraceCarrier = Record<string, string>

export interface StoredEvent<E> {
  /** Position in the order's stream, from 1. */
  readonly version: number
  readonly recordedAt: Timestamp
  readonly event: E
  readonly trace: TraceCarrier
  /** The entry's id in the stream it was read from. */
  readonly streamId: string
}

const Envelope = t.type({
  version: t.string,
  event: t.string,
  recordedAt: Timestamp,
  trace: t.string,
})

const TraceCarrierCodec = t.record(t.string, t.string)

export function parseTrace(raw: string): TraceCarrier {
  if (raw === '') return {}
  try {
    const parsed: unknown = JSON.parse(raw)
    return TraceCarrierCodec.is(parsed) ? parsed : {}
  } catch {
    return {}
  }
}

/** The active trace context, to be stored beside what is written so a later hop can continue it. */
export function currentTrace(): TraceCarrier {
  const carrier: TraceCarrier = {}
  propagation.inject(context.active(), carrier)
  return carrier
}

/** Decodes one event-log entry (order stream or global log), its event with `codec`. */
export function decodeEntry<E>(
  codec: EventCodec<E>,
  streamId: string,
  fields: readonly string[],
): StoredEvent<E> {
  const envelope = Envelope.decode(fieldRecord(fields))
  if (isLeft(envelope)) throw new MalformedEntry(streamId, PathReporter.report(envelope).join('; '))
  const version = NonNegativeInt.decode(Number(envelope.right.version))
  if (isLeft(version) || version.right < 1)
    throw new MalformedEntry(
      streamId,
      `version ${envelope.right.version} is not a positive integer`,
    )
  let json: unknown
  try {
    json = JSON.parse(envelope.right.event)
  } catch {
    throw new MalformedEntry(streamId, 'event is not JSON')
  }
  const event = codec.decode(json)
  if (isLeft(event)) throw new MalformedEntry(streamId, PathReporter.report(event).join('; '))
  return {
    version: version.right,
    recordedAt: envelope.right.recordedAt,
    event: event.right,
    trace: parseTrace(envelope.right.trace),
    streamId,
  }
}
