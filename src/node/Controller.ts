/**
 * The controller: takes one snapshot of every input, feeds it to the pure step
 * (domain/Controller.ts) and performs the actions it returns, under a single permit shared by
 * everything that changes the local Redis or the master znode. The only writer of the
 * controller state (role, ownership, our pause, min-replicas).
 */
import { Context, Duration, Effect, FiberHandle, Layer, LogLevel, Option, Queue, Stream, type Subscribable, SubscriptionRef } from "effect"
import { DictatorConfig } from "../Config.js"
import { Action, type ControllerState, Event, initialState, type Settings, step } from "../domain/Controller.js"
import { countVotes } from "../domain/Election.js"
import type { MasterRecord } from "../domain/Records.js"
import { formatAddress } from "../Redis.js"
import { Campaign } from "./Campaign.js"
import { LocalHealth } from "./LocalHealth.js"
import { controls, Mode } from "./Mode.js"
import { Observer } from "./Observer.js"
import { Peers } from "./Peers.js"
import { Store } from "./Store.js"
import { supervised } from "./supervised.js"

/** Long enough to outlive any outage we fence through; lifted explicitly when we act again. */
export const FENCE_PAUSE = Duration.hours(1)
/** How soon a follower looks again at a new master that was not promoted yet. */
const PROMOTION_RECHECK = Duration.millis(5)
/** A record naming a server that never gets promoted (another program's) is followed after this. */
const PROMOTION_WAIT_MAX = 1000

export interface ControllerService {
  readonly state: Subscribable.Subscribable<ControllerState>
  /** Runs `effect` alone among the actors on the local Redis and the master znode. */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Feeds the outcome of an action taken outside the controller (the handover's). */
  readonly feed: (event: Event) => Effect.Effect<void>
  readonly stopCampaign: Effect.Effect<void>
}

export class Controller extends Context.Tag("dictator/Controller")<Controller, ControllerService>() {}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const local = yield* LocalHealth
  const observer = yield* Observer
  const peers = yield* Peers
  const mode = yield* Mode
  const campaign = yield* Campaign
  const scope = yield* Effect.scope
  const self = { name: config.node.name, host: config.node.host, port: config.node.port, priority: config.node.priority }
  const settings: Settings = {
    fenceAfterMs: config.fence_after_ms,
    minReplicasToWrite: config.min_replicas_to_write,
    minReplicasMaxLag: config.min_replicas_max_lag
  }
  const now = Effect.clockWith((c) => c.currentTimeMillis)
  const state = yield* SubscriptionRef.make<ControllerState>(initialState)
  const permit = yield* Effect.makeSemaphore(1)
  const withPermit = permit.withPermits(1)
  const wake = yield* Queue.sliding<void>(1)
  const election = yield* FiberHandle.make<void, never>()

  /** Steps the state with `event`; returns the actions to perform. */
  const steps = (event: Event) => SubscriptionRef.modify(state, (s) => {
    const [next, actions] = step(s, event, settings)
    return [actions, next] as const
  })
  const feed = (event: Event) => Effect.asVoid(steps(event))

  // --- winning an election --------------------------------------------------------------------
  const promote = (reason: string) =>
    Effect.gen(function* () {
      const previous = yield* store.lastMaster
      const created = yield* store.createMaster(self, { since: new Date(yield* now).toISOString() })
      if (!created) {
        yield* Effect.logDebug("another candidate created the master znode first; following it")
        return
      }
      yield* feed(Event.Elected())
      const view = yield* store.refreshMaster
      const result = yield* Effect.either(Effect.zipRight(local.connection.replicaOf(null), local.connection.unpause))
      if (result._tag === "Left") {
        yield* Effect.logError(`promotion failed (${result.left.message}): giving the master znode back`)
        if (view._tag === "Present") yield* store.removeMaster(view).pipe(Effect.ignore)
        yield* feed(Event.Released())
        return
      }
      yield* feed(Event.Promoted())
      yield* Effect.logInfo(`promoting: ${reason} (epoch ${view._tag === "Present" ? view.epoch : "?"})`)
      yield* local.checkNow
      if (previous !== null && previous.record.name !== self.name) {
        yield* Effect.forkIn(campaign.demoteOrphan({ name: previous.record.name, address: previous.record }), scope)
      }
    })

  const stand = Effect.gen(function* () {
    const reason = yield* campaign.contend
    if (Option.isNone(reason)) return
    yield* withPermit(
      Effect.uninterruptible(Effect.flatMap(mode.get, (m) => (m === "enabled" ? promote(reason.value) : Effect.void)))
    )
  }).pipe(
    Effect.catchAll((e) => Effect.logWarning(`election attempt failed: ${e.message}`)),
    Effect.annotateLogs({ loop: "election" })
  )

  // --- the actions ----------------------------------------------------------------------------
  let promotionWait: { readonly key: string; readonly since: number } | null = null

  /**
   * The znode comes before the winner's REPLICAOF NO ONE: a replica that asks a server not yet
   * promoted gets -NOMASTERLINK and Redis retries only a second later. Wait for the promotion (a
   * few ms) when the new master answers; when it does not, go ahead.
   */
  const replicateFrom = (master: MasterRecord) =>
    Effect.gen(function* () {
      const target = yield* peers.use(master, (c) => Effect.option(c.replication))
      const t = yield* now
      const key = formatAddress(master)
      if (promotionWait === null || promotionWait.key !== key) promotionWait = { key, since: t }
      if (Option.isSome(target) && target.value.role !== "master" && t - promotionWait.since < PROMOTION_WAIT_MAX) {
        yield* Effect.logDebug(`master ${master.name} not promoted yet; following it in a moment`)
        yield* Effect.forkIn(Effect.zipRight(Effect.sleep(PROMOTION_RECHECK), Queue.offer(wake, undefined)), scope)
        return
      }
      yield* Effect.logInfo(`following master ${master.name}: REPLICAOF ${formatAddress(master)}`)
      yield* local.connection.replicaOf(master)
    })

  /** Ownership confirmed by the server, read at most once per reconcile. */
  const proofOnce = Effect.cached(store.confirmOwnership)

  const perform = (action: Action, proof: Effect.Effect<boolean>) =>
    Action.$match(action, {
      Log: ({ level, message }) => Effect.logWithLevel(LogLevel[level], message),
      Campaign: ({ run }) => (run ? FiberHandle.run(election, stand, { onlyIfMissing: true }) : FiberHandle.clear(election)),
      RemoveMaster: ({ master, ours }) => Effect.zipRight(store.removeMaster(master), ours ? feed(Event.Released()) : Effect.void),
      PromoteRedis: () =>
        Effect.zipRight(
          Effect.logInfo("local Redis is not master but this node owns the master znode: REPLICAOF NO ONE"),
          local.connection.replicaOf(null)
        ),
      ReplicateFrom: ({ master }) => replicateFrom(master),
      PauseWrites: ({ reason }) =>
        Effect.zipRight(
          Effect.logWarning(`fencing: pausing writes on the local Redis (${reason})`),
          // Already marked paused by the step: a pause that times out may still run later (a
          // frozen Redis runs its queued commands on waking), and a replica under a WRITE pause
          // stops applying its replication stream. Unpausing later is harmless when it never ran.
          local.connection.pauseWrites(FENCE_PAUSE)
        ),
      Unpause: ({ proof: needsProof }) =>
        Effect.gen(function* () {
          if (needsProof && !(yield* proof)) return
          yield* local.connection.unpause
          yield* feed(Event.Unpaused())
        }),
      SetMinReplicas: ({ maxLag, proof: needsProof, value }) =>
        Effect.gen(function* () {
          if (needsProof && !(yield* proof)) return
          yield* local.connection.configSet("min-replicas-max-lag", String(maxLag))
          yield* local.connection.configSet("min-replicas-to-write", String(value))
          yield* feed(Event.MinReplicasApplied({ value }))
          yield* Effect.logInfo(
            value > 0
              ? `fencing by replicas: min-replicas-to-write ${value}, min-replicas-max-lag ${maxLag}s`
              : `no linked replica: min-replicas-to-write 0 so the master keeps taking writes alone`
          )
        }),
      RecheckHealth: () => Effect.asVoid(local.checkNow)
    })

  /** In order; a failed action stops the rest (the next reconcile decides again). */
  const performAll = (actions: ReadonlyArray<Action>) =>
    Effect.flatMap(proofOnce, (proof) => Effect.forEach(actions, (a) => perform(a, proof), { discard: true }))

  // --- the loop -------------------------------------------------------------------------------
  const reconcile = Effect.gen(function* () {
    const m = yield* mode.get
    if (!controls(m)) return
    const master = yield* store.master.get
    if (master === null) return
    const members = yield* store.members.get
    const actions = yield* steps(
      Event.Observed({
        now: yield* now,
        self,
        enabled: m === "enabled",
        session: yield* store.session.get,
        master,
        health: yield* local.health.get,
        opinion: yield* observer.opinion.get,
        votes: master._tag === "Present" ? countVotes(members, master.record.name, master.epoch) : null
      })
    )
    yield* performAll(actions)
  })

  yield* supervised("controller")(
    Effect.forever(
      Effect.raceFirst(Queue.take(wake), Effect.sleep(Duration.millis(config.check_interval_ms))).pipe(
        Effect.zipRight(withPermit(reconcile).pipe(Effect.catchAll((e) => Effect.logWarning(`action failed, will retry: ${e.message}`))))
      )
    )
  )
  const wakeOn = <A>(changes: Stream.Stream<A>) => Stream.runForEach(changes, () => Queue.offer(wake, undefined))
  yield* supervised("controller-wake")(
    Effect.all(
      [
        wakeOn(local.health.changes),
        wakeOn(store.master.changes),
        wakeOn(store.members.changes),
        wakeOn(store.session.changes),
        wakeOn(observer.opinion.changes),
        wakeOn(mode.changes)
      ],
      { concurrency: "unbounded", discard: true }
    )
  )

  return {
    state,
    withPermit,
    feed,
    stopCampaign: FiberHandle.clear(election)
  } satisfies ControllerService
})

export const layer = Layer.scoped(Controller, make)

