/**
 * Planned switchovers asked through ZooKeeper (`dictator switchover`): every node watches the
 * request znode (through the Store); at the requested time, the master's node alone runs its
 * graceful handover to the named (or freshest caught-up) replica, then removes the request and
 * records the outcome in one transaction, for the asker to read. Refused, with the reason, when
 * the service is in maintenance mode, the target is not a healthy eligible member, or it does not
 * catch up (the handover never hands the data to a lagging replica).
 */
import { Clock, Context, Duration, Effect, FiberHandle, Layer, Option, Stream } from "effect"
import { DictatorConfig } from "../Config.js"
import type { SwitchoverResult } from "../domain/Records.js"
import { Controller } from "./Controller.js"
import { Handover } from "./Handover.js"
import { Mode } from "./Mode.js"
import { type PendingSwitchover, Store } from "./Store.js"
import { inOwnFiber, supervised } from "./supervised.js"

export class Switchover extends Context.Tag("dictator/Switchover")<Switchover, {}>() {}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const controller = yield* Controller
  const handover = yield* Handover
  const mode = yield* Mode
  const self = config.node.name

  /** Runs the handover for `pending` (this node is the master) and records what happened. */
  const act = (pending: PendingSwitchover) =>
    Effect.gen(function* () {
      const id = Option.match(pending.request, { onNone: () => "malformed", onSome: (r) => r.id })
      const to = Option.match(pending.request, { onNone: () => null, onSome: (r) => r.to })
      const by = Option.match(pending.request, { onNone: () => "unknown", onSome: (r) => r.by })
      const outcome: Omit<SwitchoverResult, "finished_at"> = yield* Effect.gen(function* () {
        if (Option.isNone(pending.request)) {
          return { id, ok: false, message: `malformed switchover request ${JSON.stringify(pending.raw)}; not acted on`, from: self, to: null }
        }
        if (yield* store.maintenance.get) {
          return { id, ok: false, message: "the service is in maintenance mode (dictator pause): resume it first", from: self, to: null }
        }
        if ((yield* mode.get) !== "enabled") {
          return { id, ok: false, message: `the master's dictator is ${yield* mode.get}`, from: self, to: null }
        }
        yield* Effect.logInfo(`switchover asked by ${by} (request ${id}): handing over${to === null ? " to the freshest replica" : ` to ${to}`}`)
        return yield* controller.withPermit(
          Effect.gen(function* () {
            yield* mode.set("handing-over")
            const done = yield* handover.run("switchover", { to }).pipe(
              Effect.ensuring(Effect.flatMap(mode.get, (m) => (m === "handing-over" ? mode.set("enabled") : Effect.void)))
            )
            const now = yield* store.readMaster.pipe(Effect.orElseSucceed(() => null))
            const successor = now !== null && now._tag === "Present" && now.record.name !== self ? now.record.name : null
            return { id, ok: successor !== null, message: done, from: self, to: successor }
          }).pipe(Effect.catchTag("HandoverRefused", (e) => Effect.succeed({ id, ok: false, message: e.reason, from: self, to: null })))
        )
      })
      const finished_at = new Date(yield* Clock.currentTimeMillis).toISOString()
      if (outcome.ok) yield* Effect.logInfo(`switchover ${id} done: ${outcome.message}`)
      else yield* Effect.logWarning(`switchover ${id} refused: ${outcome.message}`)
      yield* store.finishSwitchover(pending, { ...outcome, finished_at }).pipe(
        Effect.catchAll((e) => Effect.logWarning(`cannot record the outcome of switchover ${id}: ${e.message}`))
      )
    })

  /** Waits for the requested time, then acts when this node is the master (the others ignore it). */
  const handle = (pending: PendingSwitchover) =>
    Effect.gen(function* () {
      const at = Option.flatMap(pending.request, (r) => (r.at === null ? Option.none() : Option.some(Date.parse(r.at))))
      if (Option.isSome(at) && !Number.isNaN(at.value)) {
        const wait = at.value - (yield* Clock.currentTimeMillis)
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
      }
      const owned = (yield* controller.state.get).owned
      const view = yield* store.master.get
      if (!owned || view === null || view._tag !== "Present" || view.record.name !== self) return
      // In a fiber of its own: a later change of the request (our own removal) must not cut the
      // handover short, and its time bounds must hold.
      yield* inOwnFiber(act(pending))
    })

  const current = yield* FiberHandle.make<void, never>()
  yield* supervised("switchover")(
    Stream.runForEach(store.switchover.changes, (pending) =>
      Option.match(pending, {
        onNone: () => FiberHandle.clear(current),
        onSome: (p) => FiberHandle.run(current, handle(p))
      })
    )
  )
  return Switchover.of({})
})

export const layer = Layer.scoped(Switchover, make)
