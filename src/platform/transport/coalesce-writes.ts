import { Socket } from 'node:net'
import type { ChannelModel } from 'amqplib'

/**
 * amqplib writes every frame to the socket on its own, a syscall per publish and per ack: the
 * largest self time of the consuming roles (docs/performance.md). Corked until the end of the
 * tick, the frames written in one tick leave in one writev, the same bytes in the same order.
 *
 * This patches a library's internals (the connection's socket), so it is guarded the way
 * OpenTelemetry's instrumentations guard their wrappers: it checks the socket is what it expects,
 * wraps it once (a marked write is never wrapped again), and puts the original back when the
 * connection closes. If a future amqplib keeps its socket elsewhere, this does nothing.
 */
const WRAPPED = Symbol('bakery.coalesced-write')

type Write = ((...args: unknown[]) => boolean) & { [WRAPPED]?: true }

export function coalesceWrites(model: ChannelModel): void {
  const socket: unknown = (model.connection as { stream?: unknown }).stream
  if (!(socket instanceof Socket) || typeof socket.write !== 'function') return
  if ((socket.write as Write)[WRAPPED]) return
  // Called with the socket as `this` below, as amqplib would have.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const original = socket.write as Write
  let corked = false
  const uncork = () => {
    corked = false
    socket.uncork()
  }
  const write: Write = (...args) => {
    if (!corked) {
      corked = true
      socket.cork()
      process.nextTick(uncork)
    }
    return original.apply(socket, args)
  }
  write[WRAPPED] = true
  socket.write = write
  model.once('close', () => {
    if ((socket.write as Write) === write) socket.write = original
  })
}
