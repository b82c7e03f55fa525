import { setTimeout as sleep } from 'node:timers/promises'
import { isAnnounced, type OrderKey, type PlaceOrder } from '../messages'
import {
  VersionConflict,
  type EventStore,
  type OutboxMessage,
  type StoredEvent,
} from '../platform/event-store'
import { metrics } from '../platform/metrics'
import { PermanentFailure } from '../platform/rabbitmq'
import { Attr, inSpan, messageSentAt } from '../platform/tracing'
import { planBake, type BakePlan } from './bake-time'
import {
  decide,
  evolve,
  initialState,
  InvalidTransition,
  type BakerCommand,
  type OrderState,
} from './order'

export interface BakerDeps {
  readonly store: EventStore
  readonly bakeTimeScale: number
  readonly now: () => Date
  readonly random: () => number
  readonly oven?: (ms: number) => Promise<void>
}

export interface BakeOutcome {
  readonly plan: BakePlan | undefined
  readonly state: OrderState
}

/**
 * Handles PlaceOrder: take the order into the oven, bake it, take it out. Each step is
 * load -> decide -> append, so a redelivered command finds the work done and adds nothing.
 * All of it is the `bake` span, whose events' messages continue the trace.
 */
export async function bake(deps: BakerDeps, command: PlaceOrder): Promise<BakeOutcome> {
  const attributes = { [Attr.orderKey]: command.orderKey, [Attr.pastry]: command.pastry }
  return inSpan('bake', attributes, async (span) => {
    const orderedAt = Date.parse(command.orderTime)
    const queuedSince = messageSentAt() ?? orderedAt
    span.setAttribute(Attr.timeOnQueueMs, Math.max(0, deps.now().getTime() - queuedSince))
    const outcome = await bakeOrder(deps, command)
    span.setAttribute(Attr.orderStatus, outcome.state.status)
    if (outcome.plan) {
      span.setAttribute(Attr.mistake, outcome.plan.mistake)
      span.setAttribute(Attr.bakeMs, outcome.plan.totalMs)
      span.setAttribute(Attr.timeToCompletionMs, deps.now().getTime() - orderedAt)
      if (outcome.state.status === 'finished')
        metrics.orderFinished(command.orderTime, outcome.plan.totalMs, deps.now().getTime())
    }
    return outcome
  })
}

async function bakeOrder(deps: BakerDeps, command: PlaceOrder): Promise<BakeOutcome> {
  const started = await execute(deps, command.orderKey, () => ({
    type: 'StartBaking',
    at: deps.now(),
  }))
  if (started.state.status !== 'baking') return { plan: undefined, state: started.state }
  const plan = planBake(command.pastry, deps.random(), deps.bakeTimeScale)
  await (deps.oven ?? ((ms) => sleep(ms)))(plan.totalMs)
  // The second step starts from what the first one left, without reading the stream again; if
  // another writer appended meanwhile, the append's version check says so and it reads.
  const finished = await execute(
    deps,
    command.orderKey,
    () => ({
      type: 'FinishBaking',
      at: deps.now(),
      bakeMs: plan.totalMs,
      mistake: plan.mistake,
    }),
    started,
  )
  return { plan, state: finished.state }
}

/** An order's state and the version of its stream it was folded from. */
interface Folded {
  readonly state: OrderState
  readonly version: number
}

const MAX_CONFLICTS = 5

/** Load, decide, append; on a version conflict another writer won, so decide again on its result. */
async function execute(
  { store }: BakerDeps,
  orderKey: OrderKey,
  command: () => BakerCommand,
  known?: Folded,
): Promise<Folded> {
  for (let attempt = 1; ; attempt++) {
    const { state, version } = attempt === 1 && known ? known : fold(await store.read(orderKey))
    let events
    try {
      events = decide(command(), state)
    } catch (error) {
      if (error instanceof InvalidTransition) throw new PermanentFailure(error.message)
      throw error
    }
    if (events.length === 0) return { state, version }
    // BakingStarted stays in the log; OrderBaked goes on the bus for the projector.
    const outbox: OutboxMessage[] = events
      .filter(isAnnounced)
      .map((message) => ({ kind: 'event', message }))
    try {
      const appended = await store.append(orderKey, version, events, outbox)
      return { state: events.reduce(evolve, state), version: appended }
    } catch (error) {
      if (!(error instanceof VersionConflict) || attempt >= MAX_CONFLICTS) throw error
    }
  }
}

function fold(history: readonly StoredEvent[]): Folded {
  return {
    state: history.reduce((s, e) => evolve(s, e.event), initialState),
    version: history.length,
  }
}
