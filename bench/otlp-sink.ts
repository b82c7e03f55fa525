// A tiny OTLP/HTTP receiver for the benches: it accepts POST /v1/traces, answers as a collector
// would, and counts what arrived. Parsing nothing keeps its own cost out of the figures.
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface SinkStats {
  readonly requests: number
  readonly bytes: number
}

export interface OtlpSink {
  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string
  readonly stats: () => SinkStats
  readonly close: () => Promise<void>
}

export async function startOtlpSink(): Promise<OtlpSink> {
  const stats = { requests: 0, bytes: 0 }
  const server = createServer((req, res) => {
    let size = 0
    req.on('data', (chunk: Buffer) => (size += chunk.length))
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') {
        stats.requests += 1
        stats.bytes += size
        // An empty ExportTraceServiceResponse is zero bytes in protobuf.
        res.writeHead(200, { 'content-type': req.headers['content-type'] ?? '' }).end()
      } else {
        res.writeHead(404).end()
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ ...stats }),
    close: async () => {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}

/** The environment that makes a role export every span over OTLP/HTTP protobuf to `sink`. */
export function tracingEnv(sink: OtlpSink): Record<string, string> {
  return {
    OTEL_SDK_DISABLED: 'false',
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_TRACES_EXPORTER: 'otlp',
  }
}
