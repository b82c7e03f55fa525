import type { Context, Next } from 'koa'
import { metrics } from '../platform/metrics'
import { problems } from './problem'

/** Cheap answers that must stay reachable under load: probes and scrapes. */
const EXEMPT = new Set(['/healthz', '/readyz', '/metrics'])

/**
 * At most `max` requests are worked on at once; past that a request is refused at once with 503
 * and Retry-After, so that a stalled dependency cannot pile requests up without bound. An update
 * stream counts while it opens, not while it stays open (those have caps of their own).
 */
export function limitInFlight(max: number) {
  let inFlight = 0
  return async (ctx: Context, next: Next): Promise<void> => {
    if (EXEMPT.has(ctx.path)) {
      await next()
      return
    }
    if (inFlight >= max)
      throw problems.unavailable('the reception is at capacity; try again shortly')
    inFlight += 1
    metrics.requestsInFlight(inFlight)
    try {
      await next()
    } finally {
      inFlight -= 1
      metrics.requestsInFlight(inFlight)
    }
  }
}
