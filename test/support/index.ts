// The tests' own helpers on top of the harness the benchmarks share (harness/).
export * from '../../harness'

/** What the retry and dead-letter tests run over: each queue type in a vhost of its own. */
export const QUEUE_TYPES = ['classic', 'quorum'] as const
export type QueueType = (typeof QUEUE_TYPES)[number]
