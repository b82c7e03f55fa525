import type { Duplex } from 'node:stream'

/**
 * Requests that Node's HTTP parser rejects (an unknown method, a malformed request line, headers
 * too large) never reach Koa; without this they would get a bare `400` with no body. They get the
 * same application/problem+json as every other error. A request too slow to arrive (slowloris,
 * HTTP_HEADERS_TIMEOUT_MS / HTTP_REQUEST_TIMEOUT_MS) gets 408 and the connection is closed.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || !socket.writable) return
  const [status, title, detail] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'the request is not valid HTTP/1.1']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'the request took too long to arrive']
        : [400, 'Bad Request', 'the request is not valid HTTP/1.1']
  const body = JSON.stringify({
    type: `/problems/${title.toLowerCase().replace(/ /g, '-')}`,
    title,
    status,
    detail,
  })
  socket.end(
    `HTTP/1.1 ${status} ${title}\r\ncontent-type: application/problem+json\r\n` +
      'x-content-type-options: nosniff\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}
