/**
 * One dictator node, composed of its services (src/node/): the store over ZooKeeper, the local
 * Redis's health, the peers, the observer of the master, the member record, the campaign, the
 * controller and the handover. Here only the lifecycle: status, enable, disable, shutdown.
 */
import { Context, Effect, Layer } from "effect"
import { DictatorConfig } from "./Config.js"
import { Event, type FailsafeVerdict, type Plan, type Role } from "./domain/Controller.js"
import type { FailsafeRequest } from "./domain/Failsafe.js"
import { type HealthState, lastInfo } from "./domain/Health.js"
import type { MasterView, MemberRecord } from "./domain/Records.js"
import * as Campaign from "./node/Campaign.js"
import * as Controller from "./node/Controller.js"
import * as Failsafe from "./node/Failsafe.js"
import * as Handover from "./node/Handover.js"
import * as LocalHealth from "./node/LocalHealth.js"
import * as Membership from "./node/Membership.js"
import { Mode } from "./node/Mode.js"
import * as Observer from "./node/Observer.js"
import { Peers } from "./node/Peers.js"
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
}

export class DictatorNode extends Context.Tag("dictator/Node")<DictatorNode, DictatorNodeService>() {}

/**
 * The node's services, each built on those it reads. Layers release in reverse: the lifecycle's
 * shutdown (handover) runs while the controller, the store and the peers are still up.
 */
const services = (() => {
  const base = Layer.mergeAll(Store.layer, LocalHealth.layer, Peers.layer, Mode.layer)
  const observer = Layer.provideMerge(Observer.layer, base)
  const membership = Layer.provideMerge(Membership.layer, observer)
  const campaign = Layer.provideMerge(Campaign.layer, membership)
  const controller = Layer.provideMerge(Controller.layer, campaign)
  const failsafe = Layer.provideMerge(Failsafe.layer, controller)
  const handover = Layer.provideMerge(Handover.layer, failsafe)
  return Layer.provideMerge(Switchover.layer, handover)
})()

const lifecycle = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store.Store
  const local = yield* LocalHealth.LocalHealth
  const mode = yield* Mode
  const controller = yield* Controller.Controller
  const handover = yield* Handover.Handover
  const membership = yield* Membership.Membership
  const peers = yield* Peers

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
        })
      }
  })

  return DictatorNode.of({
    status,
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
    disable: controller.withPermit(
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
