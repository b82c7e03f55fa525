import type { Context } from 'koa'
import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either'
import { fieldErrors } from '../messages'
import { problems } from './problem'

/** Largest request body the reception reads, in bytes. An order needs a few hundred. */
export const BODY_LIMIT_BYTES = 16 * 1024

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Reads a JSON object body, or throws the Problem that tells the client what to fix. */
export async function readJsonObject(ctx: Context, limit = BODY_LIMIT_BYTES): Promise<object> {
  if (!ctx.is('application/json', '+json'))
    throw problems.unsupportedMediaType(ctx.get('content-type') || undefined)
  const charset = ctx.request.charset
  if (charset && !/^utf-?8$/i.test(charset))
    throw problems.unsupportedMediaType(ctx.get('content-type'))
  if (ctx.request.length > limit) throw tooLarge(ctx, limit)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) throw tooLarge(ctx, limit)
    chunks.push(chunk)
  }
  let text: string
  try {
    text = utf8.decode(Buffer.concat(chunks))
  } catch {
    throw problems.badRequest('the body is not valid UTF-8')
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (error) {
    throw problems.badRequest(`the body is not valid JSON (${(error as Error).message})`)
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw problems.badRequest(
      'the body must be a JSON object, like {"customer": "homer", "pastry": "la bombe"}',
    )
  return body
}

function tooLarge(ctx: Context, limit: number) {
  // The rest of the body is not read; closing the connection keeps it from being taken for a request.
  ctx.set('connection', 'close')
  return problems.tooLarge(limit)
}

/** Decodes with an io-ts codec; failures name each field by its JSON Pointer. */
export function decodeOrThrow<A, O>(codec: t.Type<A, O, unknown>, input: unknown): A {
  const result = codec.decode(input)
  if (isLeft(result)) throw problems.invalidOrder(fieldErrors(result.left))
  return result.right
}
