import type { Context, Next } from 'koa'
import type { FieldError } from '../messages'
import { traceFields, type Logger } from '../platform/logger'

/** A client-facing error, rendered as RFC 9457 `application/problem+json`. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail)
  }

  get type(): string {
    return `/problems/${this.title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`
  }
}

export const problems = {
  notFound: (detail: string) => new Problem(404, 'Not Found', detail),
  noSuchOrder: (key: string | undefined) =>
    new Problem(
      404,
      'Not Found',
      `there is no order with key ${JSON.stringify(key)}; order keys are 32 lowercase hex digits, as POST /orders returned`,
    ),
  methodNotAllowed: (method: string, allowed: readonly string[]) =>
    new Problem(
      405,
      'Method Not Allowed',
      `${method} is not allowed here; use ${allowed.join(' or ')}`,
      {},
      { allow: allowed.join(', ') },
    ),
  badRequest: (detail: string) => new Problem(400, 'Bad Request', detail),
  invalidOrder: (errors: readonly FieldError[]) =>
    new Problem(400, 'Invalid Order', errors.map((e) => `${e.path}: ${e.message}`).join('; '), {
      errors,
    }),
  tooLarge: (limit: number) =>
    new Problem(413, 'Content Too Large', `the body must be at most ${limit} bytes`),
  unsupportedMediaType: (got: string | undefined) =>
    new Problem(
      415,
      'Unsupported Media Type',
      `send the order as application/json (UTF-8)${got ? `, not ${got}` : ''}`,
    ),
  idempotencyKeyReused: () =>
    new Problem(
      422,
      'Idempotency Key Reused',
      'this Idempotency-Key was used for another order; send a new key for a new order',
    ),
  tooManyStreams: (limit: number) =>
    new Problem(
      429,
      'Too Many Requests',
      `at most ${limit} update streams may be open at once from one client address; close one first`,
      {},
      { 'retry-after': '1' },
    ),
  unavailable: (detail: string) =>
    new Problem(503, 'Service Unavailable', detail, {}, { 'retry-after': '1' }),
}

/**
 * The one place errors become responses. A Problem says what to fix; anything else is a 500
 * whose body carries nothing internal but the request's trace id, and whose error is logged with
 * that id, so that one can be found from the other.
 */
export function problemMiddleware(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next()
      if (ctx.body === undefined || ctx.body === null) {
        if (ctx.status === 404) throw problems.notFound(`there is nothing at ${ctx.path}`)
        // The router answers 405 (or 501 for a method it does not know) with an Allow header.
        if (ctx.status === 405 || ctx.status === 501)
          throw problems.methodNotAllowed(ctx.method, ctx.response.get('allow').split(/,\s*/))
      }
    } catch (error) {
      let problem: Problem
      if (error instanceof Problem) problem = error
      else {
        logger.error({ err: error, path: ctx.path }, 'request failed')
        const { trace_id } = traceFields()
        problem = new Problem(
          500,
          'Internal Server Error',
          'something went wrong on our side',
          trace_id ? { traceId: trace_id } : {},
        )
      }
      ctx.status = problem.status
      ctx.set(problem.headers)
      ctx.type = 'application/problem+json'
      ctx.body = {
        type: problem.type,
        title: problem.title,
        status: problem.status,
        detail: problem.detail,
        instance: ctx.path.length <= 256 ? ctx.path : undefined,
        ...problem.extra,
      }
    }
  }
}
