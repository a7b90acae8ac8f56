/**
 * The master's Redis as seen from this replica (host-death detection): checked like the local
 * one, and this node's vote against it (the master's epoch) when it is down. The only writer of
 * the vote, which the member record publishes.
 */
import { Context, Duration, Effect, FiberHandle, Layer, type Subscribable, SubscriptionRef } from "effect"
import { DictatorConfig } from "../Config.js"
import { type HealthState, nextHealth } from "../domain/Health.js"
import { addSample, emptyHistory, type LagEstimate, lagSeconds, type OffsetHistory, prune } from "../domain/Lag.js"
import { formatAddress, type RedisAddress } from "../Redis.js"
import { checkAgainOnClose, checkOnce } from "./LocalHealth.js"
import { Mode } from "./Mode.js"
import { Peers } from "./Peers.js"
import { Store } from "./Store.js"
import { type Periodic, periodic } from "./supervised.js"

export interface ObserverService {
  /** Epoch of the master this node finds unreachable, or null. */
  readonly opinion: Subscribable.Subscribable<string | null>
  /**
   * This replica's lag in seconds for its Redis at `replicaOffset` (domain/Lag.ts): from the
   * master's offsets read here every check interval, each with the time before its read.
   */
  readonly lag: (replicaOffset: number) => Effect.Effect<LagEstimate>
}

export class Observer extends Context.Tag("dictator/Observer")<Observer, ObserverService>() {}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const peers = yield* Peers
  const mode = yield* Mode
  const interval = Duration.millis(config.check_interval_ms)
  const opinion = yield* SubscriptionRef.make<string | null>(null)
  let observed: { readonly epoch: string; readonly address: RedisAddress; state: HealthState } | null = null
  /** The master's offsets over time, for the lag in seconds; reset with each new master epoch. */
  let offsets: OffsetHistory = emptyHistory
  /** Checks the master again when its server drops our connection; the epoch it watches. */
  const closeWatch = yield* FiberHandle.make<void, never>()
  let watching: string | null = null

  const withdraw = Effect.flatMap(SubscriptionRef.get(opinion), (o) => (o === null ? Effect.void : SubscriptionRef.set(opinion, null)))

  const observeOnce = (checks: Periodic) => Effect.gen(function* () {
    const view = yield* store.master.get
    const session = yield* store.session.get
    if (view === null || view._tag !== "Present") return
    // Our own master, or not taking part: no opinion about it.
    if (view.owner === session.sessionId || (yield* mode.get) !== "enabled") {
      watching = null
      yield* FiberHandle.clear(closeWatch)
      return yield* withdraw
    }
    if (observed === null || observed.epoch !== view.epoch) {
      observed = { epoch: view.epoch, address: view.record, state: { _tag: "Unknown" } }
      offsets = emptyHistory
      yield* withdraw
    }
    if (watching !== view.epoch) {
      watching = view.epoch
      // Held for as long as this master is watched: the connection stays open between checks.
      yield* FiberHandle.run(closeWatch, peers.use(view.record, (conn) => checkAgainOnClose(conn, checks)))
    }
    const obs = observed
    const before = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const result = yield* peers.use(view.record, checkOnce)
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    // The time before the read: everything written before it is within the offset read.
    if (result._tag === "Right" && result.right.role === "master") {
      offsets = addSample(offsets, result.right.replid, { at: before, offset: result.right.offset })
    }
    obs.state = nextHealth(obs.state, result, now, { downAfterMs: config.down_after_ms })
    const down = obs.state._tag === "Down" || obs.state._tag === "Loading"
    const current = yield* SubscriptionRef.get(opinion)
    if (down && current !== view.epoch) {
      yield* Effect.logWarning(
        `master ${view.record.name} (${formatAddress(view.record)}) unreachable from here: ${obs.state._tag === "Down" ? obs.state.detail : "loading"}; voting it down`
      )
      yield* SubscriptionRef.set(opinion, view.epoch)
    } else if (!down && current === view.epoch) {
      // Our own access refused tells nothing about the master: no vote either way.
      yield* Effect.logInfo(
        obs.state._tag === "Misconfigured"
          ? `master ${view.record.name} cannot be checked from here (${obs.state.detail}); withdrawing the vote`
          : `master ${view.record.name} reachable again; withdrawing the vote`
      )
      yield* SubscriptionRef.set(opinion, null)
    }
  })

  yield* periodic("observer", observeOnce, interval)
  const lag = (replicaOffset: number) =>
    Effect.clockWith((c) =>
      Effect.sync(() => {
        offsets = prune(offsets, replicaOffset)
        return lagSeconds(offsets, replicaOffset, c.unsafeCurrentTimeMillis())
      })
    )
  return { opinion, lag } satisfies ObserverService
})

export const layer = Layer.scoped(Observer, make)
