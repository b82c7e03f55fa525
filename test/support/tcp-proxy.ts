import { once } from 'node:events'
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy of a test's own, between a process and Redis, that can break the connection in the
 * ways a network does: drop a reply after its command reached Redis, or stop forwarding altogether
 * (a Redis that is connected but stalls).
 */
export class TcpProxy {
  private readonly pairs = new Set<{ client: Socket; server: Socket }>()
  private cut: { marker: string; done: () => void } | undefined
  private stalled = false
  private readonly held: (() => void)[] = []

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
    const server = createServer()
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const proxy = new TcpProxy(server, (server.address() as AddressInfo).port)
    server.on('connection', (client) => proxy.pipe(client, connect(targetPort, targetHost)))
    return proxy
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Connections open through the proxy. */
  get connections(): number {
    return this.pairs.size
  }

  /**
   * The next command whose bytes contain `marker` (case-insensitive) reaches Redis, but its reply
   * does not reach the client: the connection is cut when the reply arrives. Resolves then, or
   * fails after `timeoutMs` if no such command came.
   */
  cutReplyTo(marker: string, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.cut = undefined
        reject(new Error(`no command with ${JSON.stringify(marker)} in ${timeoutMs} ms`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        resolve()
      }
      this.cut = { marker: marker.toLowerCase(), done }
    })
  }

  /** A cut is armed and its command has not passed yet. */
  get armed(): boolean {
    return this.cut !== undefined
  }

  /** Stops forwarding in both directions; connections stay open, bytes wait. */
  stall(): void {
    this.stalled = true
  }

  /** Forwards what waited, and everything after. */
  resume(): void {
    this.stalled = false
    for (const release of this.held.splice(0)) release()
  }

  async close(): Promise<void> {
    this.resume()
    for (const { client, server } of this.pairs) {
      client.destroy()
      server.destroy()
    }
    await new Promise((resolve) => this.server.close(resolve))
  }

  private pipe(client: Socket, server: Socket): void {
    const pair = { client, server }
    this.pairs.add(pair)
    let cutting: (() => void) | undefined
    const end = () => {
      this.pairs.delete(pair)
      client.destroy()
      server.destroy()
    }
    client.on('error', end).on('close', end)
    server.on('error', end).on('close', end)
    const forward = (to: Socket, chunk: Buffer) => {
      if (!this.stalled) to.write(chunk)
      else this.held.push(() => to.writable && to.write(chunk))
    }
    client.on('data', (chunk: Buffer) => {
      const cut = this.cut
      if (cut && chunk.toString('latin1').toLowerCase().includes(cut.marker)) {
        this.cut = undefined
        cutting = cut.done
      }
      forward(server, chunk)
    })
    server.on('data', (chunk: Buffer) => {
      if (cutting) {
        const done = cutting
        cutting = undefined
        end()
        done()
        return
      }
      forward(client, chunk)
    })
  }
}
