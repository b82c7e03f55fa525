import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'

/**
 * A stand-in for an OpenTelemetry collector: it takes real OTLP trace exports (OTLP/HTTP as JSON or
 * protobuf, and OTLP/gRPC) and decodes the spans, so tests can look at what Bakery sent.
 */

export const SpanKind = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const
export const StatusCode = { unset: 0, ok: 1, error: 2 } as const

export type AttributeValue = string | number | boolean | readonly (string | number | boolean)[]

export interface ReceivedSpan {
  readonly service: string
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Readonly<Record<string, AttributeValue>>
  readonly status: { readonly code: number; readonly message: string }
  readonly events: readonly string[]
}

export interface OtlpReceiver {
  /** What OTEL_EXPORTER_OTLP_ENDPOINT should be. */
  readonly endpoint: string
  readonly spans: ReceivedSpan[]
  /** The content types of the requests to /v1/traces, in order of arrival. */
  readonly contentTypes: string[]
  readonly close: () => Promise<void>
}

/** An OTLP/HTTP receiver on a free port: `/v1/traces` in JSON or protobuf. */
export async function startHttpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const contentTypes: string[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const type = req.headers['content-type'] ?? ''
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end()
        return
      }
      contentTypes.push(type)
      try {
        if (type.startsWith('application/json')) {
          spans.push(...decodeJson(JSON.parse(body.toString('utf8')) as JsonRequest))
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        } else {
          spans.push(...decodeProtobuf(body))
          // An empty ExportTraceServiceResponse is zero bytes.
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
        }
      } catch (error) {
        res.writeHead(400).end(String(error))
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    contentTypes,
    close: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** An OTLP/gRPC receiver: the TraceService's Export, its request decoded as protobuf. */
export async function startGrpcReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const contentTypes: string[] = []
  const server = new grpc.Server()
  const identity = (value: Buffer) => value
  server.addService(
    {
      Export: {
        path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    {
      Export: (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        callback: grpc.sendUnaryData<Buffer>,
      ) => {
        contentTypes.push('application/grpc')
        spans.push(...decodeProtobuf(call.request))
        callback(null, Buffer.alloc(0))
      },
    },
  )
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  )
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    contentTypes,
    close: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  }
}

// --- OTLP/JSON (ExportTraceServiceRequest as the OTLP JSON mapping writes it) ---

interface JsonAnyValue {
  stringValue?: string
  boolValue?: boolean
  intValue?: number | string
  doubleValue?: number
  arrayValue?: { values?: JsonAnyValue[] }
}
interface JsonKeyValue {
  key: string
  value?: JsonAnyValue
}
interface JsonSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes?: JsonKeyValue[]
  status?: { code?: number; message?: string }
  events?: { name: string }[]
}
interface JsonRequest {
  resourceSpans?: {
    resource?: { attributes?: JsonKeyValue[] }
    scopeSpans?: { spans?: JsonSpan[] }[]
  }[]
}

function decodeJson(request: JsonRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = []
  for (const resourceSpans of request.resourceSpans ?? []) {
    const service = jsonAttributes(resourceSpans.resource?.attributes)['service.name']
    for (const scopeSpans of resourceSpans.scopeSpans ?? [])
      for (const span of scopeSpans.spans ?? [])
        spans.push({
          service: String(service),
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId ?? '',
          name: span.name,
          kind: span.kind,
          attributes: jsonAttributes(span.attributes),
          status: { code: span.status?.code ?? 0, message: span.status?.message ?? '' },
          events: (span.events ?? []).map((e) => e.name),
        })
  }
  return spans
}

function jsonAttributes(list: JsonKeyValue[] = []): Record<string, AttributeValue> {
  const attributes: Record<string, AttributeValue> = {}
  for (const { key, value } of list) {
    const decoded = value?.arrayValue
      ? (value.arrayValue.values ?? []).map(jsonScalar).filter((v) => v !== undefined)
      : value && jsonScalar(value)
    if (decoded !== undefined) attributes[key] = decoded
  }
  return attributes
}

function jsonScalar(value: JsonAnyValue): string | number | boolean | undefined {
  if (value.stringValue !== undefined) return value.stringValue
  if (value.boolValue !== undefined) return value.boolValue
  if (value.intValue !== undefined) return Number(value.intValue)
  return value.doubleValue
}

// --- OTLP protobuf: just enough of the wire format for the fields read here ---

type Field =
  | { readonly number: number; readonly type: 'varint'; readonly value: bigint }
  | { readonly number: number; readonly type: 'bytes'; readonly value: Buffer }
  | { readonly number: number; readonly type: 'fixed'; readonly value: Buffer }

function* fields(buffer: Buffer): Generator<Field> {
  let offset = 0
  const varint = (): bigint => {
    let result = 0n
    let shift = 0n
    for (;;) {
      const byte = buffer[offset++]
      if (byte === undefined) throw new Error('truncated varint')
      result |= BigInt(byte & 0x7f) << shift
      if ((byte & 0x80) === 0) return result
      shift += 7n
    }
  }
  while (offset < buffer.length) {
    const tag = Number(varint())
    const number = tag >> 3
    switch (tag & 7) {
      case 0:
        yield { number, type: 'varint', value: varint() }
        break
      case 1:
        yield { number, type: 'fixed', value: buffer.subarray(offset, (offset += 8)) }
        break
      case 2: {
        const length = Number(varint())
        yield { number, type: 'bytes', value: buffer.subarray(offset, (offset += length)) }
        break
      }
      case 5:
        yield { number, type: 'fixed', value: buffer.subarray(offset, (offset += 4)) }
        break
      default:
        throw new Error(`unsupported wire type ${tag & 7}`)
    }
  }
}

const bytesOf = (buffer: Buffer, number: number): Buffer[] =>
  [...fields(buffer)].flatMap((f) => (f.number === number && f.type === 'bytes' ? [f.value] : []))

const varintOf = (buffer: Buffer, number: number): bigint | undefined => {
  for (const f of fields(buffer)) if (f.number === number && f.type === 'varint') return f.value
  return undefined
}

function decodeProtobuf(request: Buffer): ReceivedSpan[] {
  const spans: ReceivedSpan[] = []
  // ExportTraceServiceRequest.resource_spans = 1
  for (const resourceSpans of bytesOf(request, 1)) {
    // ResourceSpans.resource = 1 (Resource.attributes = 1), scope_spans = 2
    const resource = bytesOf(resourceSpans, 1)[0]
    const service = resource ? protoAttributes(bytesOf(resource, 1))['service.name'] : undefined
    // ScopeSpans.spans = 2
    for (const scopeSpans of bytesOf(resourceSpans, 2))
      for (const span of bytesOf(scopeSpans, 2)) {
        const status = bytesOf(span, 15)[0]
        spans.push({
          service: String(service),
          traceId: (bytesOf(span, 1)[0] ?? Buffer.alloc(0)).toString('hex'),
          spanId: (bytesOf(span, 2)[0] ?? Buffer.alloc(0)).toString('hex'),
          parentSpanId: (bytesOf(span, 4)[0] ?? Buffer.alloc(0)).toString('hex'),
          name: (bytesOf(span, 5)[0] ?? Buffer.alloc(0)).toString('utf8'),
          kind: Number(varintOf(span, 6) ?? 0n),
          attributes: protoAttributes(bytesOf(span, 9)),
          status: {
            code: status ? Number(varintOf(status, 3) ?? 0n) : 0,
            message: status ? (bytesOf(status, 2)[0]?.toString('utf8') ?? '') : '',
          },
          // Span.events = 11, Event.name = 2
          events: bytesOf(span, 11).map((e) => bytesOf(e, 2)[0]?.toString('utf8') ?? ''),
        })
      }
  }
  return spans
}

/** KeyValue { key = 1, value = 2: AnyValue { string 1, bool 2, int 3, double 4 } } */
function protoAttributes(list: readonly Buffer[]): Record<string, AttributeValue> {
  const attributes: Record<string, AttributeValue> = {}
  for (const keyValue of list) {
    const key = bytesOf(keyValue, 1)[0]?.toString('utf8')
    const value = bytesOf(keyValue, 2)[0]
    if (key === undefined || value === undefined) continue
    for (const f of fields(value)) {
      if (f.number === 1 && f.type === 'bytes') attributes[key] = f.value.toString('utf8')
      else if (f.number === 2 && f.type === 'varint') attributes[key] = f.value !== 0n
      else if (f.number === 3 && f.type === 'varint')
        attributes[key] = Number(BigInt.asIntN(64, f.value))
      else if (f.number === 4 && f.type === 'fixed') attributes[key] = f.value.readDoubleLE(0)
    }
  }
  return attributes
}

/** The spans of one trace, with lookups the assertions need. */
export class Trace {
  constructor(readonly spans: readonly ReceivedSpan[]) {}

  byId(spanId: string): ReceivedSpan | undefined {
    return this.spans.find((s) => s.spanId === spanId)
  }

  named(name: string, service?: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.name === name && (!service || s.service === service))
  }

  one(name: string, service?: string): ReceivedSpan {
    const found = this.named(name, service)
    if (found.length !== 1)
      throw new Error(
        `expected one span ${name} (${service ?? 'any service'}), found ${found.length}`,
      )
    return found[0]!
  }

  children(parent: ReceivedSpan): ReceivedSpan[] {
    return this.spans.filter((s) => s.parentSpanId === parent.spanId)
  }

  roots(): ReceivedSpan[] {
    return this.spans.filter((s) => s.parentSpanId === '')
  }

  /** Spans whose parent is named but absent. */
  orphans(): ReceivedSpan[] {
    return this.spans.filter((s) => s.parentSpanId !== '' && !this.byId(s.parentSpanId))
  }

  /** Whether `ancestor` is above `span`. */
  descends(span: ReceivedSpan, ancestor: ReceivedSpan): boolean {
    for (let s = this.byId(span.parentSpanId); s; s = this.byId(s.parentSpanId))
      if (s.spanId === ancestor.spanId) return true
    return false
  }

  /** An indented outline, for assertion messages. */
  outline(): string {
    const lines: string[] = []
    const walk = (span: ReceivedSpan, depth: number) => {
      lines.push(`${'  '.repeat(depth)}${span.name} [${span.service}]`)
      for (const child of this.children(span)) walk(child, depth + 1)
    }
    for (const root of [...this.roots(), ...this.orphans()]) walk(root, 0)
    return lines.join('\n')
  }
}

export const traceOf = (spans: readonly ReceivedSpan[], traceId: string) =>
  new Trace(spans.filter((s) => s.traceId === traceId))
