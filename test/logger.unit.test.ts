import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { context, ROOT_CONTEXT, trace, TraceFlags } from '@opentelemetry/api'
import { createLogger } from '../src/platform/logger'
import { StackContextManager } from './support/context'

describe('log lines', () => {
  const lines: Record<string, unknown>[] = []
  const logger = createLogger('bakery-test', 'info', {
    write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>),
  })

  it('carry the trace and span ids of the active span, also from child loggers', () => {
    context.setGlobalContextManager(new StackContextManager())
    try {
      const traced = trace.setSpanContext(ROOT_CONTEXT, {
        traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
        spanId: '00f067aa0ba902b7',
        traceFlags: TraceFlags.SAMPLED,
      })
      context.with(traced, () => {
        logger.info('inside a trace')
        logger.child({ component: 'rabbitmq' }).warn('from a child')
      })
      logger.info('outside any trace')
    } finally {
      context.disable()
    }
    const [inside, child, outside] = lines.slice(-3)
    for (const line of [inside, child]) {
      assert.equal(line?.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736')
      assert.equal(line?.span_id, '00f067aa0ba902b7')
      assert.equal(line?.trace_flags, '01')
    }
    assert.equal(child?.component, 'rabbitmq')
    assert.equal(outside?.msg, 'outside any trace')
    assert.ok(!('trace_id' in (outside ?? {})), 'no trace id outside a trace')
  })
})
