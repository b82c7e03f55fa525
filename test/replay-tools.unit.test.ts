import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { MalformedEntry } from '../src/platform/errors'
import { eventRow, parseBound, parseType } from '../src/tools/events'
import { formatHistory, formatPastState, parsePoint } from '../src/tools/history'
import { decodeLogEntry, traceIdOf } from '../src/projections/log-entries'
import { compareStreamIds } from '../src/platform/redis'
import { stateAt, toHistory } from '../src/projections/order-history'
import { diffViews, formatDifference, lagsByDesign } from '../src/projections/verify'
import type { LogEvent } from '../src/projections/log-entries'
import { formatProgress } from '../src/tools/replay'
import { formatDuration, parseTime, parseToolOptions, UsageError } from '../src/tools/tool'

const KEY = '0b9f3c1e5a7d4f2e8c6b1a0d9e8f7a6b'
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const JAEGER = new URL('http://jaeger.local:16686/')

/** Fields of a log entry as the append script writes them. */
function entryFields(version: number, event: Record<string, unknown>, recordedAt: string) {
  return [
    'order',
    KEY,
    'version',
    String(version),
    'type',
    String(event.$name),
    'event',
    JSON.stringify({ orderKey: KEY, $version: 1, ...event }),
    'recordedAt',
    recordedAt,
    'trace',
    JSON.stringify({ traceparent: `00-${TRACE}-00f067aa0ba902b7-01` }),
  ]
}

// Given an order placed at 10:00:00.000, started 150 ms later and baked 2.5 s after that.
const knownOrder = [
  decodeLogEntry(
    '1-0',
    entryFields(
      1,
      {
        $name: 'bakery/order-placed',
        customer: 'homer',
        pastry: 'la bombe',
        orderTime: '2026-05-01T10:00:00.000Z',
      },
      '2026-05-01T10:00:00.000Z',
    ),
  ),
  decodeLogEntry(
    '2-0',
    entryFields(
      2,
      { $name: 'bakery/baking-started', startedAt: '2026-05-01T10:00:00.150Z' },
      '2026-05-01T10:00:00.150Z',
    ),
  ),
  decodeLogEntry(
    '3-0',
    entryFields(
      3,
      {
        $name: 'bakery/order-baked',
        bakedAt: '2026-05-01T10:00:02.650Z',
        bakeMs: 84,
        mistake: true,
      },
      '2026-05-01T10:00:02.650Z',
    ),
  ),
]
const history = toHistory(KEY, knownOrder)

describe('an order history', () => {
  it('lists each event with the time since the previous one and its trace', () => {
    assert.deepEqual(
      history.entries.map((e) => [e.version, e.type, e.sincePreviousMs, e.traceId]),
      [
        [1, 'bakery/order-placed', null, TRACE],
        [2, 'bakery/baking-started', 150, TRACE],
        [3, 'bakery/order-baked', 2500, TRACE],
      ],
    )
  })

  it('prints a table with Jaeger links', () => {
    const table = formatHistory(history, JAEGER)
    const lines = table.trimEnd().split('\n')
    assert.equal(lines[0], `Order ${KEY}: 3 events`)
    assert.match(
      lines[2]!,
      /^VERSION\s+EVENT\s+RECORDED AT\s+SINCE PREVIOUS\s+WHAT HAPPENED\s+TRACE$/,
    )
    assert.match(
      lines[3]!,
      /^1\s+bakery\/order-placed\s+2026-05-01T10:00:00.000Z\s+-\s+homer ordered la bombe\s+/,
    )
    assert.match(lines[4]!, /\+150 ms\s+a baker started baking/)
    assert.match(lines[5]!, /\+2\.5 s\s+baked in 84 ms, baked twice after a mistake/)
    for (const line of lines.slice(3))
      assert.ok(line.endsWith(`http://jaeger.local:16686/trace/${TRACE}`), line)
  })

  it('travels in time by version and by instant', () => {
    assert.equal(stateAt(history, { kind: 'version', version: 2 }).view?.status, 'baking')
    assert.equal(stateAt(history, { kind: 'version', version: 9 }).view?.status, 'finished')
    const justBeforeBaked = Date.parse('2026-05-01T10:00:02.649Z')
    const past = stateAt(history, { kind: 'time', ms: justBeforeBaked })
    assert.equal(past.last?.version, 2)
    assert.deepEqual(past.view, {
      pastry: 'la bombe',
      customer: 'homer',
      orderTime: '2026-05-01T10:00:00.000Z',
      status: 'baking',
    })
    assert.equal(stateAt(history, { kind: 'version', version: 0 }).view, undefined)
  })

  it('prints the past state, or says the order did not exist yet', () => {
    const text = formatPastState(history, { kind: 'version', version: 1 })
    assert.match(
      text,
      new RegExp(`^Order ${KEY} at version 1: version 1 of 3, after bakery/order-placed`),
    )
    assert.match(text, /status\s+pending/)
    assert.match(
      formatPastState(history, { kind: 'time', ms: Date.parse('2026-05-01T09:00:00Z') }),
      /did not exist yet at 2026-05-01T09:00:00.000Z/,
    )
  })

  it('reads --at as a version when it is a number, else as a time', () => {
    const now = Date.parse('2026-05-01T12:00:00Z')
    assert.deepEqual(parsePoint('2', now), { kind: 'version', version: 2 })
    assert.deepEqual(parsePoint('2026-05-01T10:00:00Z', now), {
      kind: 'time',
      ms: Date.parse('2026-05-01T10:00:00Z'),
    })
    assert.deepEqual(parsePoint('15m', now), { kind: 'time', ms: now - 15 * 60_000 })
    assert.throws(() => parsePoint('yesterday', now), UsageError)
  })

  it('takes only options where a tool has no arguments, and names a stray one', () => {
    const options = { batch: { type: 'string' }, verify: { type: 'boolean' } } as const
    assert.deepEqual(
      { ...parseToolOptions(['--batch', '5', '--verify'], options) },
      {
        batch: '5',
        verify: true,
      },
    )
    assert.throws(() => parseToolOptions(['--verify', 'now'], options), {
      name: 'UsageError',
      message: 'unexpected argument "now"',
    })
    assert.throws(() => parseToolOptions(['--bogus'], options), UsageError)
  })
})

describe('decoding log entries', () => {
  it('names an unknown event type', () => {
    const entry = decodeLogEntry(
      '5-1',
      entryFields(1, { $name: 'bakery/order-burnt' }, '2026-05-01T10:00:00.000Z'),
    )
    assert.ok(entry instanceof MalformedEntry)
    assert.equal(entry.streamId, '5-1')
    assert.match(entry.message, /unknown event type "bakery\/order-burnt"/)
  })

  it('rejects an entry filed under another order than its event', () => {
    const fields = entryFields(
      1,
      { $name: 'bakery/baking-started', startedAt: '2026-05-01T10:00:00.000Z' },
      '2026-05-01T10:00:00.000Z',
    )
    fields[1] = 'f'.repeat(32)
    const entry = decodeLogEntry('6-0', fields)
    assert.ok(entry instanceof MalformedEntry)
    assert.match(entry.message, /filed under order f{32}/)
  })

  it('orders stream ids numerically', () => {
    assert.equal(compareStreamIds('9-0', '10-0'), -1)
    assert.equal(compareStreamIds('10-2', '10-10'), -1)
    assert.equal(compareStreamIds('10', '10-0'), 0)
    assert.equal(compareStreamIds('11-0', '10-99'), 1)
  })
})

describe('comparing a rebuilt view with the live one', () => {
  const expected = {
    version: '3',
    pastry: 'eclair',
    customer: 'marge',
    orderTime: '2026-05-01T10:00:00.000Z',
    status: 'finished',
  }

  it('finds nothing when they agree', () => {
    assert.equal(diffViews(KEY, expected, { ...expected }), undefined)
  })

  it('names the order and each field that differs', () => {
    const difference = diffViews(KEY, expected, { ...expected, status: 'pending', version: '2' })
    assert.ok(difference)
    assert.deepEqual(difference, {
      orderKey: KEY,
      kind: 'different',
      fields: [
        { field: 'status', expected: 'finished', actual: 'pending' },
        { field: 'version', expected: '3', actual: '2' },
      ],
    })
    assert.equal(
      formatDifference(difference),
      `${KEY}: status is "pending", the log says "finished"; version is "2", the log says "3"`,
    )
  })

  it('tells a missing view from one the log does not know', () => {
    assert.equal(diffViews(KEY, expected, {})?.kind, 'missing')
    assert.equal(diffViews(KEY, {}, expected)?.kind, 'unexpected')
    assert.match(formatDifference(diffViews(KEY, expected, {})!), /missing from the read model/)
  })
})

describe('a live view that waits for OrderBaked', () => {
  const events = knownOrder as LogEvent[]
  const pending = {
    version: '1',
    pastry: 'la bombe',
    customer: 'homer',
    orderTime: '2026-05-01T10:00:00.000Z',
    status: 'pending',
  }

  it('lags by design while the order is in the oven', () => {
    assert.equal(lagsByDesign(events.slice(0, 2), pending), true)
  })

  it('does not, once OrderBaked is in the log', () => {
    assert.equal(lagsByDesign(events, pending), false)
    assert.equal(lagsByDesign(events, { ...pending, version: '2', status: 'baking' }), false)
  })

  it('does not when the view is wrong at its own version, or is no view', () => {
    assert.equal(lagsByDesign(events.slice(0, 2), { ...pending, customer: 'marge' }), false)
    assert.equal(lagsByDesign(events.slice(0, 2), {}), false)
  })
})

describe('formatting for a person', () => {
  it('writes durations at a readable scale', () => {
    assert.equal(formatDuration(840), '840 ms')
    assert.equal(formatDuration(2400), '2.4 s')
    assert.equal(formatDuration(185_000), '3 min 5 s')
    assert.equal(formatDuration(7_800_000), '2 h 10 min')
  })

  it('shows progress as a bar on a terminal and as a plain line otherwise', () => {
    const state = { done: 50_000, total: 100_000, elapsedMs: 1000 }
    assert.equal(
      formatProgress(state, true),
      '[############............]  50%  50,000/100,000 events  50,000 events/s  ETA 1.0 s',
    )
    assert.equal(
      formatProgress(state, false),
      '50,000/100,000 events (50%), 50,000 events/s, ETA 1.0 s',
    )
  })

  it('finds the trace id in a traceparent', () => {
    assert.equal(traceIdOf({ traceparent: `00-${TRACE}-00f067aa0ba902b7-01` }), TRACE)
    assert.equal(traceIdOf({ traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` }), undefined)
    assert.equal(traceIdOf({}), undefined)
  })

  it('reads --from and --to as stream ids, times or durations ago', () => {
    const now = Date.parse('2026-05-01T12:00:00Z')
    assert.equal(parseBound('from', '1714557600000-3', now), '1714557600000-3')
    assert.equal(
      parseBound('from', '2026-05-01T10:00:00Z', now),
      String(Date.parse('2026-05-01T10:00:00Z')),
    )
    assert.equal(parseBound('to', '1h', now), String(now - 3_600_000))
    assert.equal(parseTime('soon', now), undefined)
    assert.throws(() => parseBound('from', 'soon', now), /--from takes/)
    assert.equal(parseType('order-baked'), 'bakery/order-baked')
    assert.throws(() => parseType('order-burnt'), /--type must be one of/)
  })

  it('prints a log event as one table row', () => {
    const entry = knownOrder[2]!
    assert.ok(!(entry instanceof MalformedEntry))
    assert.match(
      eventRow(entry),
      new RegExp(
        `^3-0\\s+2026-05-01T10:00:02.650Z\\s+${KEY}\\s+3\\s+bakery/order-baked\\s+baked in 84 ms`,
      ),
    )
  })
})
