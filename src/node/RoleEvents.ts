/**
 * The one "role changed" signal of a node: published each time this node's Redis changes role
 * (promoted: the master znode written and REPLICAOF NO ONE done; demoted or re-pointed: REPLICAOF
 * <master> done). Publishing never waits (a sliding PubSub: a consumer that falls behind loses
 * the oldest changes, never blocks the election, the fencing or the controller's permit); the
 * consumers (closing clients, the on_role_change hook, metrics) run in fibers of their own.
 */
import { Context, Effect, Layer, PubSub, type Queue, type Scope } from "effect"

export interface RoleChange {
  readonly role: "master" | "replica"
  readonly service: string
  readonly node: string
  /** The master this Redis now is or follows: its name and announced address. */
  readonly master: { readonly name: string; readonly host: string; readonly port: number }
  /** The master znode's epoch (czxid) when known. */
  readonly epoch: string | null
  /** elected: this node won an election; promoted: took the role of a znode it owns; following / handover: REPLICAOF <master>. */
  readonly cause: "elected" | "promoted" | "following" | "handover"
  /** Clock millis of the change. */
  readonly at: number
}

export interface RoleEventsService {
  readonly publish: (change: RoleChange) => Effect.Effect<void>
  /** A subscription from now on, closed with the scope: subscribe before forking the consumer. */
  readonly subscribe: Effect.Effect<Queue.Dequeue<RoleChange>, never, Scope.Scope>
}

export class RoleEvents extends Context.Tag("dictator/RoleEvents")<RoleEvents, RoleEventsService>() {}

/** More changes than any consumer can be behind by in practice; past it the oldest are dropped. */
const CAPACITY = 64

export const make = Effect.gen(function* () {
  const hub = yield* Effect.acquireRelease(PubSub.sliding<RoleChange>(CAPACITY), PubSub.shutdown)
  return {
    publish: (change) =>
      Effect.zipRight(
        Effect.logInfo(`role change: ${change.role}${change.role === "replica" ? ` of ${change.master.name}` : ""} (${change.cause}, epoch ${change.epoch ?? "?"})`),
        Effect.asVoid(PubSub.publish(hub, change))
      ),
    subscribe: PubSub.subscribe(hub)
  } satisfies RoleEventsService
})

export const layer = Layer.scoped(RoleEvents, make)
