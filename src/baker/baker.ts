import { setTimeout as sleep } from 'node:timers/promises'
import { isAnnounced, type OrderKey, type PlaceOrder } from '../messages'
import type { OrderEventStore, StoredOrderEvent } from '../wiring'
import { VersionConflict } from '../platform/errors'
import type { OutboxMessage } from '../platform/event-store'
import { metrics } from '../platform/metrics'
import { PermanentFailure } from '../platform/errors'
import { annotate, Attr, messageSentAt } from '../platform/tracing'
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
  readonly store: OrderEventStore
  readonly bakeTimeScale: number
  readonly now: () => Date
  readonly random: () => number
  readonly oven?: (ms: number) => Promise<void>
}

export interface BakeOutcome {
  readonly plan: BakePlan | undefined
  readonly state: OrderState
  /** The versions of the events this handling appended (none when the work was done already). */
  readonly appended: readonly number[]
}

/**
 * Handles PlaceOrder: take the order into the oven, bake it, take it out. Each step is
 * load -> decide -> append, so a redelivered command finds the work done and adds nothing.
 * The bake is told on the `process bakery/place-order` span around it; OrderBaked's message
 * continues the trace.
 */
export async function bake(deps: BakerDeps, command: PlaceOrder): Promise<BakeOutcome> {
  const orderedAt = Date.parse(command.orderTime)
  const timeOnQueueMs = Math.max(0, deps.now().getTime() - (messageSentAt() ?? orderedAt))
  const outcome = await bakeOrder(deps, command)
  const { plan, state, appended } = outcome
  if (plan && state.status === 'finished')
    metrics.orderFinished(command.orderTime, plan.totalMs, deps.now().getTime())
  annotate(() => ({
    [Attr.pastry]: command.pastry,
    [Attr.timeOnQueueMs]: timeOnQueueMs,
    [Attr.orderStatus]: state.status,
    [Attr.appendedVersions]: [...appended],
    ...(plan && {
      [Attr.mistake]: plan.mistake,
      [Attr.bakeMs]: plan.totalMs,
      [Attr.timeToCompletionMs]: deps.now().getTime() - orderedAt,
    }),
  }))
  return outcome
}

async function bakeOrder(deps: BakerDeps, command: PlaceOrder): Promise<BakeOutcome> {
  // A new order is pending at version 1 (its OrderPlaced): the first step starts from that,
  // without reading the stream. Otherwise (a redelivery, another baker got there, no such order)
  // the append's version check says so, and the step reads, decides again and appends.
  const { orderKey, pastry, orderTime } = command
  const placed: VersionedState = {
    state: { status: 'pending', orderKey, pastry, orderTime },
    version: 1,
  }
  const started = await step(
    deps,
    command.orderKey,
    () => ({ type: 'StartBaking', at: deps.now() }),
    placed,
  )
  if (started.state.status !== 'baking')
    return { plan: undefined, state: started.state, appended: started.appended }
  const plan = planBake(command.pastry, deps.random(), deps.bakeTimeScale)
  await (deps.oven ?? ((ms) => sleep(ms)))(plan.totalMs)
  // The second step starts from what the first one left, without reading the stream again; if
  // another writer appended meanwhile, the append's version check says so and it reads.
  const finished = await step(
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
  return { plan, state: finished.state, appended: [...started.appended, ...finished.appended] }
}

/** An order's state and the version of its stream it was folded from. */
interface VersionedState {
  readonly state: OrderState
  readonly version: number
}

/** What a step left: the state, its version, and the versions the step itself appended. */
interface StepResult extends VersionedState {
  readonly appended: readonly number[]
}

const MAX_CONFLICTS = 5

/**
 * One step of the bake: load (unless the caller gives the state to start from), decide, append.
 * On a version conflict another writer won, so read, and decide again on its result.
 */
async function step(
  { store }: BakerDeps,
  orderKey: OrderKey,
  command: () => BakerCommand,
  startFrom?: VersionedState,
): Promise<StepResult> {
  for (let attempt = 1; ; attempt++) {
    const { state, version } =
      attempt === 1 && startFrom ? startFrom : fold(await store.read(orderKey))
    let events
    try {
      events = decide(command(), state)
    } catch (error) {
      if (error instanceof InvalidTransition) throw new PermanentFailure(error.message)
      throw error
    }
    if (events.length === 0) return { state, version, appended: [] }
    // BakingStarted stays in the log; OrderBaked goes on the bus for the projector.
    const outbox: OutboxMessage[] = events
      .filter(isAnnounced)
      .map((message) => ({ kind: 'event', message }))
    try {
      const now = await store.append(orderKey, version, events, outbox)
      const appended = events.map((_, i) => version + 1 + i)
      return { state: events.reduce(evolve, state), version: now, appended }
    } catch (error) {
      if (!(error instanceof VersionConflict) || attempt >= MAX_CONFLICTS) throw error
    }
  }
}

function fold(history: readonly StoredOrderEvent[]): VersionedState {
  return {
    state: history.reduce((s, e) => evolve(s, e.event), initialState),
    version: history.length,
  }
}
