/**
 * The controller: takes one snapshot of every input, feeds it to the pure step
 * (domain/Controller.ts) and performs the actions it returns, under a single permit shared by
 * everything that changes the local Redis or the master znode. The only writer of the
 * controller state (role, ownership, our pause, min-replicas).
 */
import { Context, Duration, Effect, FiberHandle, Layer, LogLevel, Option, Queue, Stream, type Subscribable, SubscriptionRef } from "effect"
import { announcedAddress, DictatorConfig } from "../Config.js"
import { Action, type ControllerState, Event, initialState, type Settings, step } from "../domain/Controller.js"
import { countVotes, quorumOf } from "../domain/Election.js"
import type { MasterRecord } from "../domain/Records.js"
import { formatAddress } from "../Redis.js"
import { Campaign, type CampaignService } from "./Campaign.js"
import { LocalHealth, type LocalHealthService } from "./LocalHealth.js"
import { controls, Mode, type ModeService } from "./Mode.js"
import { Observer } from "./Observer.js"
import { Peers, type PeersService } from "./Peers.js"
import { RoleEvents, type RoleEventsService } from "./RoleEvents.js"
import { Store, type StoreService } from "./Store.js"
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

interface Deps {
  readonly store: StoreService
  readonly local: LocalHealthService
  readonly peers: PeersService
  readonly mode: ModeService
  readonly campaign: CampaignService
  readonly roles: RoleEventsService
  /** Publishes a change of the local Redis's role (this node's name and service filled in). */
  readonly changed: (role: "master" | "replica", master: MasterRecord, cause: "promoted" | "following") => Effect.Effect<void>
  /** One pending recheck of a master not promoted yet, however many passes ask for it. */
  readonly recheck: FiberHandle.FiberHandle<void, never>
  readonly wake: Queue.Queue<void>
  readonly feed: (event: Event) => Effect.Effect<void>
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** Stands for election; when this node's turn comes and it is still taking part, tries to win. */
const stand = (d: Deps) =>
  Effect.gen(function* () {
    const reason = yield* d.campaign.contend
    if (Option.isNone(reason)) return
    const won = Effect.flatMap(d.mode.get, (m) => (m === "enabled" ? d.campaign.promote(reason.value) : Effect.succeed([])))
    const events = yield* d.withPermit(Effect.uninterruptible(won))
    yield* Effect.forEach(events, d.feed, { discard: true })
  }).pipe(
    Effect.catchAll((e) => Effect.logWarning(`election attempt failed: ${e.message}`)),
    Effect.annotateLogs({ loop: "election" })
  )

/**
 * The znode comes before the winner's REPLICAOF NO ONE: a replica that asks a server not yet
 * promoted gets -NOMASTERLINK and Redis retries only a second later. Wait for the promotion (a
 * few ms) when the new master answers; when it does not (or not within a bound), go ahead.
 */
const follower = (d: Deps) => {
  let waiting: { readonly key: string; readonly since: number } | null = null
  return (master: MasterRecord) =>
    Effect.gen(function* () {
      const target = yield* d.peers.use(master, (c) => Effect.option(c.replication))
      const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
      const key = formatAddress(master)
      if (waiting === null || waiting.key !== key) waiting = { key, since: now }
      if (Option.isSome(target) && target.value.role !== "master" && now - waiting.since < PROMOTION_WAIT_MAX) {
        yield* Effect.logDebug(`master ${master.name} not promoted yet; following it in a moment`)
        yield* FiberHandle.run(d.recheck, Effect.asVoid(Effect.zipRight(Effect.sleep(PROMOTION_RECHECK), Queue.offer(d.wake, undefined))), { onlyIfMissing: true })
        return
      }
      yield* Effect.logInfo(`following master ${master.name}: REPLICAOF ${formatAddress(master)}`)
      yield* d.local.connection.replicaOf(master)
      yield* d.changed("replica", master, "following")
    })
}

/** The only place where the step's actions become I/O. */
const interpreter = (d: Deps, election: FiberHandle.FiberHandle<void, never>, self: MasterRecord) => {
  const replicateFrom = follower(d)
  const redis = d.local.connection
  return (action: Action, proof: Effect.Effect<boolean>) =>
    Action.$match(action, {
      Log: ({ level, message }) => Effect.logWithLevel(LogLevel[level], message),
      Campaign: ({ run }) => (run ? FiberHandle.run(election, stand(d), { onlyIfMissing: true }) : FiberHandle.clear(election)),
      RemoveMaster: ({ master, ours }) => Effect.zipRight(d.store.removeMaster(master), ours ? d.feed(Event.Released()) : Effect.void),
      PromoteRedis: ({ proof: needsProof }) =>
        Effect.gen(function* () {
          if (needsProof && !(yield* proof)) return
          yield* Effect.logInfo("local Redis is not master but this node owns the master znode: REPLICAOF NO ONE")
          yield* redis.replicaOf(null)
          yield* d.changed("master", { name: self.name, host: self.host, port: self.port }, "promoted")
        }),
      ReplicateFrom: ({ master }) => replicateFrom(master),
      PauseWrites: ({ reason }) =>
        Effect.zipRight(
          Effect.logWarning(`fencing: pausing writes on the local Redis (${reason})`),
          // Already marked paused by the step: a pause that times out may still run later (a
          // frozen Redis runs its queued commands on waking), and a replica under a WRITE pause
          // stops applying its replication stream. Unpausing later is harmless when it never ran.
          redis.pauseWrites(FENCE_PAUSE)
        ),
      Unpause: ({ proof: needsProof }) =>
        Effect.gen(function* () {
          if (needsProof && !(yield* proof)) return
          yield* redis.unpause
          yield* d.feed(Event.Unpaused())
        }),
      SetMinReplicas: ({ maxLag, proof: needsProof, value }) =>
        Effect.gen(function* () {
          if (needsProof && !(yield* proof)) return
          yield* redis.configSet("min-replicas-max-lag", String(maxLag))
          yield* redis.configSet("min-replicas-to-write", String(value))
          yield* d.feed(Event.MinReplicasApplied({ value }))
          yield* Effect.logInfo(
            value > 0
              ? `fencing by replicas: min-replicas-to-write ${value}, min-replicas-max-lag ${maxLag}s`
              : `no linked replica: min-replicas-to-write 0 so the master keeps taking writes alone`
          )
        }),
      RecheckHealth: () => Effect.asVoid(d.local.checkNow)
    })
}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const local = yield* LocalHealth
  const observer = yield* Observer
  const mode = yield* Mode
  const self = { name: config.node.name, ...announcedAddress(config), priority: config.node.priority }
  const settings: Settings = {
    fenceAfterMs: config.fence_after_ms,
    minReplicasToWrite: config.min_replicas_to_write,
    minReplicasMaxLag: config.min_replicas_max_lag
  }
  const state = yield* SubscriptionRef.make<ControllerState>(initialState)
  const withPermit = (yield* Effect.makeSemaphore(1)).withPermits(1)
  const wake = yield* Queue.sliding<void>(1)
  const election = yield* FiberHandle.make<void, never>()
  /** Steps the state with `event`; returns the actions to perform. */
  const steps = (event: Event) =>
    SubscriptionRef.modify(state, (s) => {
      const [next, actions] = step(s, event, settings)
      return [actions, next] as const
    })
  const feed = (event: Event) => Effect.asVoid(steps(event))
  const roles = yield* RoleEvents
  const changed: Deps["changed"] = (role, master, cause) =>
    Effect.gen(function* () {
      const view = yield* store.master.get
      const epoch = view !== null && view._tag === "Present" && view.record.name === master.name ? view.epoch : null
      const at = yield* Effect.clockWith((c) => c.currentTimeMillis)
      yield* roles.publish({ role, service: config.svc_name, node: config.node.name, master, epoch, cause, at })
    })
  const deps: Deps = { store, local, peers: yield* Peers, mode, campaign: yield* Campaign, roles, changed, recheck: yield* FiberHandle.make<void, never>(), wake, feed, withPermit }
  const perform = interpreter(deps, election, self)

  const reconcile = Effect.gen(function* () {
    const m = yield* mode.get
    const master = yield* store.master.get
    if (!controls(m) || master === null) return
    const members = yield* store.members.get
    const actions = yield* steps(
      Event.Observed({
        now: yield* Effect.clockWith((c) => c.currentTimeMillis),
        self,
        enabled: m === "enabled",
        session: yield* store.session.get,
        master,
        health: yield* local.health.get,
        opinion: yield* observer.opinion.get,
        votes:
          master._tag === "Present"
            ? countVotes(members, master.record.name, master.epoch, quorumOf(config.quorum, yield* store.largestMembership))
            : null
      })
    )
    // Ownership is read from the server at most once per pass, and only if an action needs it.
    const proof = yield* Effect.cached(store.confirmOwnership)
    // In order; a failed action stops the rest (the next pass decides again).
    yield* Effect.forEach(actions, (a) => perform(a, proof), { discard: true })
  })

  yield* supervised("controller")(
    Effect.forever(
      Effect.raceFirst(Queue.take(wake), Effect.sleep(Duration.millis(config.check_interval_ms))).pipe(
        Effect.zipRight(withPermit(reconcile).pipe(Effect.catchAll((e) => Effect.logWarning(`action failed, will retry: ${e.message}`))))
      )
    )
  )
  const wakeOn = (changes: Stream.Stream<unknown>) => Stream.runForEach(changes, () => Queue.offer(wake, undefined))
  const inputs: ReadonlyArray<Stream.Stream<unknown>> = [
    local.health.changes,
    store.master.changes,
    store.members.changes,
    store.session.changes,
    observer.opinion.changes,
    mode.changes
  ]
  yield* supervised("controller-wake")(Effect.forEach(inputs, wakeOn, { concurrency: "unbounded", discard: true }))

  return { state, withPermit, feed, stopCampaign: FiberHandle.clear(election) } satisfies ControllerService
})

export const layer = Layer.scoped(Controller, make)
