/**
 * The graceful handover (SIGTERM, /disable): a bounded script that hands the master role to one
 * named replica that has every acknowledged write. Pause writes, wait for a replica to reach our
 * offset, remove the master znode naming it as successor (one transaction), follow it, lift the
 * pause: blocked writes then fail with READONLY, never acknowledged by a demoted node.
 *
 * When that is impossible (ZooKeeper out of reach, no replica caught up), the data is never
 * handed to a lagging node silently: on shutdown the Redis stays fenced, and /disable is refused
 * with the reason, the node keeping its role. Run under the controller's permit.
 */
import { Cause, Clock, Context, Data, Duration, Effect, Either, Exit, Layer, Option, Schedule } from "effect"
import { DictatorConfig } from "../Config.js"
import { Event } from "../domain/Controller.js"
import type { MemberRecord, PresentMaster } from "../domain/Records.js"
import { Controller, FENCE_PAUSE } from "./Controller.js"
import { LocalHealth } from "./LocalHealth.js"
import { Membership } from "./Membership.js"
import { type HandoverOutcome, Metrics } from "./Metrics.js"
import { Peers } from "./Peers.js"
import { RoleEvents } from "./RoleEvents.js"
import { Store } from "./Store.js"

export class HandoverRefused extends Data.TaggedError("HandoverRefused")<{ readonly reason: string }> {
  override get message() {
    return `cannot hand over the master role: ${this.reason}`
  }
}

/**
 * Why the node hands over: on shutdown it exits whatever happens; a /disable or an operator's
 * switchover (`dictator switchover`, optionally naming the successor) can be refused.
 */
export type HandoverCause = "shutdown" | "disable" | "switchover"

export interface HandoverService {
  /** What it did, in words (for the shutdown's last line). */
  readonly run: (cause: HandoverCause, options?: HandoverOptions) => Effect.Effect<string, HandoverRefused>
}

export interface HandoverOptions {
  /** Hand over to this member only (refused when it is not a healthy, eligible replica that catches up). */
  readonly to?: string | null
}

export class Handover extends Context.Tag("dictator/Handover")<Handover, HandoverService>() {}

/** Polls `probe` every 10 ms until it finds something or `within` has passed. */
const waitFor = <A>(probe: Effect.Effect<Option.Option<A>, unknown>, within: Duration.Duration) =>
  probe.pipe(
    Effect.flatMap(Effect.orElseFail(() => "not yet")),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutTo({ duration: within, onTimeout: () => Option.none<A>(), onSuccess: Option.some }),
    Effect.catchAll(() => Effect.succeedNone)
  )

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const local = yield* LocalHealth
  const peers = yield* Peers
  const membership = yield* Membership
  const controller = yield* Controller
  const roles = yield* RoleEvents
  const metrics = yield* Metrics
  const selfName = config.node.name
  const within = Duration.millis(config.handover_timeout_ms)

  const fence = controller.feed(Event.Pausing()).pipe(
    Effect.zipRight(local.connection.pauseWrites(FENCE_PAUSE)),
    Effect.zipRight(controller.feed(Event.Paused()))
  )

  /** The best replica that has reached `offset`: lowest priority number, then highest offset. */
  const caughtUp = (candidates: ReadonlyArray<MemberRecord>, offset: number) =>
    waitFor(
      Effect.gen(function* () {
        const reached: Array<{ readonly m: MemberRecord; readonly offset: number }> = []
        for (const m of candidates) {
          const info = yield* peers.use(m, (c) => Effect.either(c.replication))
          if (Either.isRight(info) && info.right.offset >= offset) reached.push({ m, offset: info.right.offset })
        }
        reached.sort((a, b) => a.m.priority - b.m.priority || b.offset - a.offset)
        return Option.fromNullable(reached[0])
      }),
      within
    )

  /** After the znode is gone: follow the successor once it is master, then lift the pause. */
  const follow = (successor: string) =>
    Effect.gen(function* () {
      const next = yield* waitFor(
        Effect.map(store.readMaster, (v) => (v._tag === "Present" && v.record.name !== selfName ? Option.some(v) : Option.none())),
        within
      )
      if (Option.isNone(next)) {
        yield* Effect.logWarning(`handover: ${successor} did not take over within ${config.handover_timeout_ms} ms; leaving writes paused`)
        return `handed over to ${successor}, which did not take over in time: writes left paused`
      }
      const { epoch, record } = next.value
      yield* local.connection.replicaOf(record)
      yield* roles.publish({
        role: "replica",
        service: config.svc_name,
        node: selfName,
        master: record,
        epoch,
        cause: "handover",
        at: yield* Effect.clockWith((c) => c.currentTimeMillis)
      })
      yield* local.connection.unpause
      yield* controller.feed(Event.Unpaused())
      yield* Effect.logInfo(`handover done: ${record.name} is master; local Redis now replicates from it`)
      return `handed over to ${record.name}; the local Redis replicates from it`
    })

  /** No replica can take the data: keep the role (disable) or stay fenced (shutdown). */
  const keep = (cause: HandoverCause, view: PresentMaster, reason: string) =>
    Effect.gen(function* () {
      if (cause === "shutdown") {
        yield* Effect.logWarning(`cannot hand over: ${reason}; exiting with the local Redis fenced (writes paused) rather than handing its data to a lagging replica`)
        yield* membership.remove
        yield* store.removeMaster(view).pipe(Effect.ignore)
        yield* controller.feed(Event.Released())
        return `fenced (${reason}): the local Redis is left with writes paused`
      }
      // Still ours: lift the pause only on proof, as any loosening.
      if (yield* store.confirmOwnership) {
        yield* local.connection.unpause
        yield* controller.feed(Event.Unpaused())
      }
      return yield* new HandoverRefused({ reason })
    })

  /** Why `to` cannot take over, checked before writes are paused; null when it may. */
  const unfit = (members: ReadonlyArray<MemberRecord>, to: string): string | null => {
    if (to === selfName) return `${to} is already the master`
    const target = members.find((m) => m.name === to)
    if (target === undefined) {
      return `${to} is not a member of service ${config.svc_name} (members: ${members.map((m) => m.name).join(", ") || "none"})`
    }
    if (target.priority === 0) return `${to} has priority 0 (never master)`
    if (!target.healthy) return `${to} is not healthy`
    return null
  }

  const asMaster = (cause: HandoverCause, view: PresentMaster, to: string | null) =>
    Effect.gen(function* () {
      const all = [...(yield* store.members.get).values()].filter((m) => m.name !== selfName)
      if (cause === "switchover") {
        // Refused before anything is paused: the master keeps taking writes.
        const reason = to === null ? (all.some((m) => m.priority > 0 && m.healthy) ? null : "no healthy replica to switch over to") : unfit(all, to)
        if (reason !== null) return yield* new HandoverRefused({ reason })
      }
      const doing = cause === "shutdown" ? "shutting down" : cause === "disable" ? "disabled" : `switchover${to === null ? "" : ` to ${to}`}`
      yield* Effect.logInfo(`handover (${doing}): pausing writes and waiting for a replica to catch up`)
      yield* controller.feed(Event.HandoverStarted())
      yield* fence
      const offset = (yield* local.connection.replication).offset
      const members = to === null ? all : all.filter((m) => m.name === to)
      if (members.length === 0 && cause !== "switchover") {
        yield* Effect.logWarning("handover: no healthy replica to hand over to; releasing the znodes and leaving writes paused")
        yield* membership.remove
        yield* store.removeMaster(view)
        yield* controller.feed(Event.Released())
        return "released the znodes with no replica to hand over to: the local Redis is left with writes paused"
      }
      const target = yield* caughtUp(members.filter((m) => m.priority > 0 && m.healthy), offset)
      if (Option.isNone(target)) {
        const reason =
          to === null
            ? `no replica reached offset ${offset} within ${config.handover_timeout_ms} ms`
            : `${to} did not reach offset ${offset} within ${config.handover_timeout_ms} ms (behind)`
        return yield* keep(cause, view, reason)
      }
      const successor = target.value.m.name
      yield* Effect.logInfo(`handover: ${successor} reached offset ${target.value.offset} >= ${offset}; naming it the next master`)
      yield* membership.remove
      yield* store.handOver(view, successor)
      yield* controller.feed(Event.Released())
      return yield* follow(successor)
    })

  const run = (cause: HandoverCause, options: HandoverOptions = {}) => Effect.flatMap(Clock.currentTimeMillis, (started) => {
    const timed = (outcome: HandoverOutcome) =>
      Effect.flatMap(Clock.currentTimeMillis, (t) => metrics.handover((t - started) / 1000, outcome))
    return Effect.gen(function* () {
      yield* controller.stopCampaign
      const view = yield* store.master.get
      const session = yield* store.session.get
      const owned = (yield* controller.state.get).owned
      if (!owned || view === null || view._tag !== "Present") {
        if (cause === "switchover") return yield* new HandoverRefused({ reason: "this node is not the master" })
        yield* membership.remove
        return "not the master: member record removed"
      }
      if (session.status !== "connected") {
        // Ownership can be neither handed over nor proven: the session may expire any moment.
        const reason = `ZooKeeper is ${session.status}`
        if (cause !== "shutdown") return yield* new HandoverRefused({ reason: `${reason}; try again once it is back` })
        yield* Effect.logWarning(`cannot hand over: ${reason}; fencing the local Redis (writes paused) before exiting`)
        yield* fence
        return `fenced (${reason}): the local Redis is left with writes paused`
      }
      return yield* asMaster(cause, view, options.to ?? null)
    }).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(2 * config.handover_timeout_ms + 2000),
        onTimeout: () => new HandoverRefused({ reason: "the handover took too long" })
      }),
      Effect.catchIf(
        (e): e is Exclude<typeof e, HandoverRefused> => e._tag !== "HandoverRefused",
        (e) => Effect.fail(new HandoverRefused({ reason: e.message }))
      ),
      Effect.tapError((e) => Effect.logError(`handover failed: ${e.message}`)),
      // Timed only when this node was master (a handover did run), by outcome.
      // Interrupted too (an HTTP client that hung up on /disable interrupts it).
      Effect.onExit((exit) =>
        Exit.match(exit, {
          onFailure: (cause) => timed(Cause.isInterruptedOnly(cause) ? "interrupted" : "refused"),
          onSuccess: (said) => (said.startsWith("not the master") ? Effect.void : timed(said.startsWith("handed over") ? "handed-over" : "failed"))
        })
      ),
      Effect.annotateLogs({ loop: "handover" })
    )
  })

  return { run } satisfies HandoverService
})

export const layer = Layer.effect(Handover, make)
