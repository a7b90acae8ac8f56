/**
 * One dictator node, composed of its services (src/node/): the store over ZooKeeper, the local
 * Redis's health, the peers, the observer of the master, the member record, the campaign, the
 * controller and the handover. Here only the lifecycle: status, enable, disable, shutdown.
 */
import { Clock, Context, Effect, Fiber, Layer } from "effect"
import { DictatorConfig } from "./Config.js"
import { Event, type FailsafeVerdict, type Plan, type Role } from "./domain/Controller.js"
import type { FailsafeRequest } from "./domain/Failsafe.js"
import { type HealthState, lastInfo } from "./domain/Health.js"
import type { LagEstimate } from "./domain/Lag.js"
import type { MasterView, MemberRecord } from "./domain/Records.js"
import * as Campaign from "./node/Campaign.js"
import * as Controller from "./node/Controller.js"
import * as Failsafe from "./node/Failsafe.js"
import * as Handover from "./node/Handover.js"
import * as LocalHealth from "./node/LocalHealth.js"
import * as Membership from "./node/Membership.js"
import * as Metrics from "./node/Metrics.js"
import { Mode } from "./node/Mode.js"
import * as Observer from "./node/Observer.js"
import * as OnRoleChange from "./node/OnRoleChange.js"
import { Peers } from "./node/Peers.js"
import * as RoleEvents from "./node/RoleEvents.js"
import * as Store from "./node/Store.js"
import * as Switchover from "./node/Switchover.js"
import { inOwnFiber } from "./node/supervised.js"
import { formatAddress } from "./Redis.js"
import { VERSION } from "./Version.js"
import type { SessionInfo } from "./ZooKeeper.js"

export type { Role }

export interface NodeStatus {
  readonly name: string
  readonly service: string
  readonly role: Role
  readonly enabled: boolean
  readonly session: SessionInfo
  readonly master: MasterView | null
  readonly health: HealthState
  readonly plan: Plan | null
  readonly members: ReadonlyArray<MemberRecord>
  /** Maintenance mode (`dictator pause`): no automatic failover while true. */
  readonly maintenance: boolean
  /** This replica's lag in seconds (domain/Lag.ts); null unless its Redis is a healthy replica. */
  readonly lag: LagEstimate | null
}

/**
 * Bytes this replica is behind: the master's offset (its member record) minus our own (our Redis,
 * just read). Null when the master publishes none. Member records are re-published periodically,
 * so the master's offset there may be older than ours: the lag is then underestimated and never
 * below 0.
 */
export const replicaLagBytes = (s: NodeStatus): number | null => {
  if (s.master === null || s.master._tag !== "Present" || s.health._tag !== "Healthy") return null
  const name = s.master.record.name
  const record = s.members.find((m) => m.name === name)
  if (record === undefined || record.role !== "master") return null
  return Math.max(0, record.offset - s.health.info.offset)
}

export interface DictatorNodeService {
  readonly status: Effect.Effect<NodeStatus>
  /**
   * The status with every member's offset as its Redis has it now (read from each, bounded by
   * check_timeout_ms; a Redis that does not answer keeps its record's): for people and scripts.
   */
  readonly statusNow: Effect.Effect<NodeStatus>
  /** Rejoins the election; false when already enabled. */
  readonly enable: Effect.Effect<boolean>
  /**
   * Leaves the election (handing over first when master); false when already disabled. Refused
   * (the node keeps its role) when the master role cannot be handed over without losing writes.
   */
  readonly disable: Effect.Effect<boolean, Handover.HandoverRefused>
  /**
   * Failsafe mode: another member, master without ZooKeeper, asks whether it may keep taking
   * writes; a yes holds this node out of elections (see README, "Failsafe mode").
   */
  readonly failsafe: (request: FailsafeRequest) => Effect.Effect<FailsafeVerdict>
  /** The Prometheus text of this node's metrics, gauges set from the status now. */
  readonly metrics: Effect.Effect<{ readonly contentType: string; readonly text: string }>
  /** Counts a request of the HTTP API (by path and status code) and of the Sentinel endpoint (by command). */
  readonly countHttp: (path: string, code: number) => Effect.Effect<void>
  readonly countSentinel: (command: string) => Effect.Effect<void>
}

export class DictatorNode extends Context.Tag("dictator/Node")<DictatorNode, DictatorNodeService>() {}

/**
 * The node's services, each built on those it reads. Layers release in reverse: the lifecycle's
 * shutdown (handover) runs while the controller, the store and the peers are still up.
 */
const services = (() => {
  const base = Layer.mergeAll(Store.layer, LocalHealth.layer, Peers.layer, Mode.layer, RoleEvents.layer, Metrics.layer)
  const observer = Layer.provideMerge(Observer.layer, base)
  // Subscribed to the role changes before anything can publish one (the controller, the campaign).
  const consumers = Layer.provideMerge(Layer.mergeAll(Metrics.watch, OnRoleChange.layer), observer)
  const membership = Layer.provideMerge(Membership.layer, consumers)
  const campaign = Layer.provideMerge(Campaign.layer, membership)
  const controller = Layer.provideMerge(Controller.layer, campaign)
  const failsafe = Layer.provideMerge(Failsafe.layer, controller)
  const handover = Layer.provideMerge(Handover.layer, failsafe)
  return Layer.provideMerge(Switchover.layer, handover)
})()

const lifecycle = Effect.gen(function* () {
  const nodeScope = yield* Effect.scope
  const { config } = yield* DictatorConfig
  const store = yield* Store.Store
  const local = yield* LocalHealth.LocalHealth
  const mode = yield* Mode
  const controller = yield* Controller.Controller
  const handover = yield* Handover.Handover
  const membership = yield* Membership.Membership
  const peers = yield* Peers
  const observer = yield* Observer.Observer
  const metrics = yield* Metrics.Metrics

  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      yield* mode.set("stopping")
      yield* Effect.logInfo("shutting down: handing the master role over if this node holds it")
      const outcome = yield* inOwnFiber(
        controller.withPermit(handover.run("shutdown").pipe(Effect.catchAll((e) => Effect.succeed(`handover failed (${e.reason})`))))
      )
      yield* Effect.logInfo(`shut down: ${outcome}`)
    })
  )

  /** Members' records carry an offset rewritten alone at most every few seconds: read it now. */
  const currentOffset = (m: MemberRecord): Effect.Effect<MemberRecord> =>
    m.name === config.node.name
      ? Effect.succeed(m)
      : peers.use(m, (c) => c.replication).pipe(
          Effect.timeout(`${config.check_timeout_ms} millis`),
          Effect.map((info) => ({ ...m, offset: info.offset })),
          Effect.orElseSucceed(() => m)
        )

  const status = Effect.gen(function* () {
    const s = yield* controller.state.get
      const health = yield* local.health.get
      return {
        name: config.node.name,
        service: config.svc_name,
        role: s.role,
        enabled: (yield* mode.get) === "enabled",
        session: yield* store.session.get,
        master: yield* store.master.get,
        health,
        plan: s.plan,
        maintenance: yield* store.maintenance.get,
        // This node's own offset from its last check; the others' from their records (rewritten
        // when only the offset moved at most every few seconds: the ranking reads fresh ones).
        members: [...(yield* store.members.get).values()].map((m) => {
          const own = m.name === config.node.name ? lastInfo(health) : null
          return own === null ? m : { ...m, offset: own.offset }
        }),
        lag: health._tag === "Healthy" && health.info.role === "replica" ? yield* observer.lag(health.info.offset) : null
      }
  })

  const metricsText = Effect.gen(function* () {
    const s = yield* status
    const text = yield* metrics.render({
      now: yield* Clock.currentTimeMillis,
      role: s.role,
      enabled: s.enabled,
      session: s.session,
      master: s.master,
      health: s.health,
      // Known in force only (null: a PAUSE or UNPAUSE in flight or failed, or not known since start).
      writesPaused: (yield* controller.state.get).paused === true,
      members: s.members.length,
      lagBytes: replicaLagBytes(s),
      lag: s.lag
    })
    return { contentType: metrics.contentType, text }
  })

  return DictatorNode.of({
    status,
    metrics: metricsText,
    countHttp: metrics.httpRequest,
    countSentinel: metrics.sentinelRequest,
    statusNow: Effect.flatMap(status, (st) =>
      Effect.map(Effect.forEach(st.members, currentOffset, { concurrency: "unbounded" }), (members) => ({ ...st, members }))
    ),
    enable: Effect.gen(function* () {
      if ((yield* mode.get) !== "disabled") return false
      yield* Effect.logInfo("enabled: rejoining the election")
      yield* mode.set("enabled")
      return true
    }),
    failsafe: controller.answerFailsafe,
    // In a fiber of the node's scope, joined: an HTTP client that hangs up interrupts its wait,
    // never a handover half-way (writes paused, the znode still ours); shutdown still stops it.
    disable: Effect.flatMap(
      Effect.forkIn(
        controller.withPermit(
          Effect.gen(function* () {
            if ((yield* mode.get) !== "enabled") return false
            yield* Effect.logInfo("disabled: leaving the election; the local Redis is no longer managed")
            yield* mode.set("handing-over")
            yield* Effect.tapError(handover.run("disable"), () => mode.set("enabled"))
            yield* membership.remove
            yield* mode.set("disabled")
            yield* controller.feed(Event.Disabled())
            return true
          })
        ),
        nodeScope
      ),
      Fiber.join
    )
  })
})

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  yield* Effect.logInfo(
    `dictator ${VERSION} for service ${config.svc_name}: node ${config.node.name} (${formatAddress(config.node)}), priority ${config.node.priority}`
  )
  const context = yield* Layer.build(Layer.provide(Layer.scoped(DictatorNode, lifecycle), services))
  return Context.get(context, DictatorNode)
})

export const layer = Layer.scoped(DictatorNode, make)
