/**
 * The graceful handover (SIGTERM, /disable): a bounded script that hands the master role over
 * without losing acknowledged writes. Pause writes, wait for a replica to reach our offset, give
 * up the znodes, follow the new master, lift the pause: blocked writes then fail with READONLY,
 * never acknowledged by a demoted node. Run under the controller's permit.
 */
import { Context, Duration, Effect, Either, Layer, Option, Schedule } from "effect"
import { DictatorConfig } from "../Config.js"
import { Event } from "../domain/Controller.js"
import { Controller, FENCE_PAUSE } from "./Controller.js"
import { LocalHealth } from "./LocalHealth.js"
import { Membership } from "./Membership.js"
import { Peers } from "./Peers.js"
import { Store } from "./Store.js"

export interface HandoverService {
  readonly run: (why: string) => Effect.Effect<void>
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
  const selfName = config.node.name
  const within = Duration.millis(config.handover_timeout_ms)

  const run = (why: string) =>
    Effect.gen(function* () {
      yield* controller.stopCampaign
      const view = yield* store.master.get
      const session = yield* store.session.get
      const isMaster = view !== null && view._tag === "Present" && view.owner === session.sessionId && session.status === "connected"
      if (!isMaster) return yield* membership.remove
      yield* Effect.logInfo(`handover (${why}): pausing writes and waiting for a replica to catch up`)
      yield* controller.feed(Event.HandoverStarted())
      yield* controller.feed(Event.Pausing())
      yield* local.connection.pauseWrites(FENCE_PAUSE)
      const target = (yield* local.connection.replication).offset
      const others = [...(yield* store.members.get).values()].filter((m) => m.name !== selfName && m.priority > 0 && m.healthy)
      const caughtUp =
        others.length === 0
          ? Option.none()
          : yield* waitFor(
              Effect.gen(function* () {
                for (const m of others) {
                  const info = yield* peers.use(m, (c) => Effect.either(c.replication))
                  if (Either.isRight(info) && info.right.offset >= target) return Option.some({ name: m.name, offset: info.right.offset })
                }
                return Option.none()
              }),
              within
            )
      if (others.length === 0) {
        yield* Effect.logWarning("handover: no healthy replica to hand over to; releasing the znodes and leaving writes paused")
      } else if (Option.isNone(caughtUp)) {
        yield* Effect.logWarning(`handover: no replica reached offset ${target} within ${config.handover_timeout_ms} ms; handing over anyway`)
      } else {
        yield* Effect.logInfo(`handover: ${caughtUp.value.name} reached offset ${caughtUp.value.offset} >= ${target}`)
      }
      yield* membership.remove
      yield* store.removeMaster(view)
      yield* controller.feed(Event.Released())
      if (others.length === 0) return
      const next = yield* waitFor(
        Effect.map(store.readMaster, (v) => (v._tag === "Present" && v.record.name !== selfName ? Option.some(v.record) : Option.none())),
        within
      )
      if (Option.isNone(next)) {
        yield* Effect.logWarning(`handover: no new master within ${config.handover_timeout_ms} ms; leaving writes paused`)
        return
      }
      yield* local.connection.replicaOf(next.value)
      yield* local.connection.unpause
      yield* controller.feed(Event.Unpaused())
      yield* Effect.logInfo(`handover done: ${next.value.name} is master; local Redis now replicates from it`)
    }).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(2 * config.handover_timeout_ms + 2000),
        onTimeout: () => new Error("took too long")
      }),
      Effect.catchAll((e) => Effect.logError(`handover failed: ${e.message}`)),
      Effect.annotateLogs({ loop: "handover" })
    )

  return { run } satisfies HandoverService
})

export const layer = Layer.effect(Handover, make)
