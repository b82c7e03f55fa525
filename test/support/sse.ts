import { request, type IncomingHttpHeaders } from 'node:http'

export interface SseMessage {
  readonly id: string | undefined
  readonly data: string
}

/**
 * A Server-Sent Events client over plain node:http that keeps everything it received, for tests
 * to wait on: messages, comment lines (heartbeats) and the end of the stream.
 */
export class SseClient {
  readonly messages: SseMessage[] = []
  comments = 0
  ended = false
  private buffer = ''

  private constructor(
    readonly status: number,
    readonly headers: IncomingHttpHeaders,
    private readonly close_: () => void,
  ) {}

  /** `localAddress`: the client's own address, e.g. `127.0.0.2` (any of 127/8 works on Linux). */
  static open(
    url: string,
    headers: Record<string, string> = {},
    { localAddress }: { localAddress?: string } = {},
  ): Promise<SseClient> {
    return new Promise((resolve, reject) => {
      const options = { headers: { accept: 'text/event-stream', ...headers }, localAddress }
      const req = request(url, options, (res) => {
        const client = new SseClient(res.statusCode ?? 0, res.headers, () => req.destroy())
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => client.feed(chunk))
        res.on('end', () => (client.ended = true))
        res.on('close', () => (client.ended = true))
        res.on('error', () => (client.ended = true))
        resolve(client)
      })
      req.on('error', reject)
      req.end()
    })
  }

  /** The body so far, for a response that is not a stream (a problem, say). */
  get text(): string {
    return this.buffer
  }

  close(): void {
    this.close_()
  }

  private feed(chunk: string): void {
    this.buffer += chunk
    for (;;) {
      const end = this.buffer.indexOf('\n\n')
      if (end < 0) return
      const block = this.buffer.slice(0, end)
      this.buffer = this.buffer.slice(end + 2)
      let id: string | undefined
      const data: string[] = []
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.comments += 1
        else if (line.startsWith('id: ')) id = line.slice(4)
        else if (line.startsWith('data: ')) data.push(line.slice(6))
      }
      if (data.length > 0) this.messages.push({ id, data: data.join('\n') })
    }
  }
}
