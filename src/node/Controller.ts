/**
 * The controller: takes one snapshot of every input, feeds it to the pure step
 * (domain/Controller.ts) and performs the actions it returns, under a single permit shared by
 * everything that changes the local Redis or the master znode. The only writer of the
 * controller state (role, ownership, our pause, min-replicas).
 */
import { Context, Duration, Effect, FiberHandle, Layer, LogLevel, Option, Queue, Stream, type Subscribable, SubscriptionRef } from "effect"
import { announcedAddress, DictatorConfig } from "../Config.js"
import { Action, answerFailsafe, type ControllerState, Event, type FailsafeVerdict, initialState, type Settings, step } from "../domain/Controller.js"
import { countVotes, quorumOf } from "../domain/Election.js"
import { type FailsafeRequest, failsafeTimings } from "../domain/Failsafe.js"
import type { MasterRecord } from "../domain/Records.js"
import { formatAddress } from "../Redis.js"
import { Campaign, type CampaignService } from "./Campaign.js"
import { LocalHealth, type LocalHealthService } from "./LocalHealth.js"
import { controls, Mode, type ModeService } from "./Mode.js"
import { Observer } from "./Observer.js"
import { Peers, type PeersService } from "./Peers.js"
import { RoleEvents, type RoleEventsService } from "./RoleEvents.js"
import { Store, type StoreService } from "./Store.js"
import { type Periodic, periodic, supervised } from "./supervised.js"

/** Long enough to outlive any outage we fence through; lifted explicitly when we act again. */
export const FENCE_PAUSE = Duration.hours(1)
/** How soon a follower looks again at a new master that was not promoted yet. */
const PROMOTION_RECHECK = Duration.millis(5)
/** The period of a settled controller's passes (every input wakes it anyway). */
const SETTLED_PERIOD = Duration.seconds(1)
/** A record naming a server that never gets promoted (another program's) is followed after this. */
const PROMOTION_WAIT_MAX = 1000

export interface ControllerService {
  readonly state: Subscribable.Subscribable<ControllerState>
  /** Runs `effect` alone among the actors on the local Redis and the master znode. */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Feeds the outcome of an action taken outside the controller (the handover's). */
  readonly feed: (event: Event) => Effect.Effect<void>
  readonly stopCampaign: Effect.Effect<void>
  /** Runs a pass of the controller soon (an input that is not a stream changed: a failsafe grant). */
  readonly wake: Effect.Effect<void>
  /**
   * Failsafe, as member: this node's answer to a master asking whether it may keep taking writes
   * without ZooKeeper; a yes holds this node out of elections (domain/Controller.answerFailsafe).
   * Taken under the controller's permit, so no promotion or deposition is half-way through.
   */
  readonly answerFailsafe: (request: FailsafeRequest) => Effect.Effect<FailsafeVerdict>
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
  readonly state: Subscribable.Subscribable<ControllerState>
}

/** Stands for election; when this node's turn comes and it is still taking part, tries to win. */
const stand = (d: Deps) =>
  Effect.gen(function* () {
    const reason = yield* d.campaign.contend
    if (Option.isNone(reason)) return
    // A failsafe yes given meanwhile holds this node out of the election it was about to win.
    const won = Effect.flatMap(Effect.zip(d.mode.get, d.state.get), ([m, s]) =>
      m === "enabled" && s.hold === null ? d.campaign.promote(reason.value) : Effect.succeed([])
    )
    const events = yield* d.withPermit(Effect.uninterruptible(won))
    yield* Effect.forEach(events, d.feed, { discard: true })
  }).pipe(
    Effect.tap(() => Effect.sync(() => lastElectionFailure.delete(d))),
    // Once per reason: a refusal that lasts (NoAuth: zk_auth differs from the other dictators')
    // would otherwise be logged at every attempt.
    Effect.catchAll((e) =>
      lastElectionFailure.get(d) === e.message
        ? Effect.logDebug(`election attempt failed again: ${e.message}`)
        : Effect.zipRight(Effect.sync(() => void lastElectionFailure.set(d, e.message)), Effect.logWarning(`election attempt failed: ${e.message}`))
    ),
    Effect.annotateLogs({ loop: "election" })
  )

/** The last failure of each node's election attempts, logged once until an attempt gets through. */
const lastElectionFailure = new WeakMap<Deps, string>()

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
          // Marked unknown by the step until it succeeds: one that fails or times out is sent
          // again on the next pass (a frozen Redis may also run it on waking: harmless).
          Effect.zipRight(redis.pauseWrites(FENCE_PAUSE), d.feed(Event.Paused()))
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
      RecheckHealth: () => Effect.asVoid(d.local.checkNow),
      FailsafeUnpause: () =>
        Effect.gen(function* () {
          const { grant } = yield* d.state.get
          const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
          if (grant === null || grant.until <= now) return
          yield* Effect.logWarning("failsafe: every other member confirms ZooKeeper is out of reach for all: lifting the pause")
          yield* redis.unpause
          yield* d.feed(Event.Unpaused())
        }),
      Reconfirm: () =>
        Effect.gen(function* () {
          // No answer (ZooKeeper still starting, a request lost) proves nothing either way: the
          // same session answering again means its ephemeral znode is still there, and the
          // members that vouched delete nothing; the next pass asks again.
          const owns = yield* Effect.either(d.store.checkOwnership)
          if (owns._tag === "Left") return yield* Effect.logDebug(`failsafe: ownership not confirmed yet (${owns.left.message}); asking again`)
          if (owns.right) {
            yield* d.feed(Event.Reconfirmed())
            yield* Effect.logInfo("failsafe: ZooKeeper answers again and this session still owns the master znode")
            return
          }
          // Tighten first, then look again: the view from before the outage is not to be trusted.
          yield* Effect.logWarning("failsafe: ZooKeeper answers again but this session no longer owns the master znode: pausing writes")
          yield* d.feed(Event.Pausing())
          yield* redis.pauseWrites(FENCE_PAUSE)
          yield* Effect.ignore(d.store.refreshMaster)
        }),
      RereadMaster: () =>
        Effect.gen(function* () {
          const view = yield* d.store.rereadMaster
          yield* d.feed(Event.MasterReread())
          yield* Effect.logInfo(
            `failsafe: ZooKeeper answers again; master znode re-read: ${view._tag === "Present" ? `${view.record.name} (epoch ${view.epoch})` : view._tag.toLowerCase()}`
          )
        })
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
  const deps: Deps = { store, local, peers: yield* Peers, mode, campaign: yield* Campaign, roles, changed, recheck: yield* FiberHandle.make<void, never>(), wake, feed, withPermit, state }
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
        maintenance: yield* store.maintenance.get,
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
    return actions
  })

  /**
   * Every input is a stream that wakes the controller, so a pass without a change of input only
   * matters where time decides: the fence of a master away from ZooKeeper, failsafe's grants and
   * holds, an action to retry. Then passes come every check interval; otherwise every second.
   */
  const settled = (actions: ReadonlyArray<Action>) =>
    Effect.map(Effect.zip(store.session.get, state.get), ([session, s]) =>
      session.status === "connected" && s.grant === null && s.hold === null && !s.reconfirm && actions.every((a) => a._tag === "Log")
    )
  const pass = (self: Periodic) =>
    withPermit(reconcile).pipe(
      Effect.flatMap((actions) => (actions === undefined ? Effect.succeed(true) : settled(actions))),
      Effect.catchAll((e) => Effect.as(Effect.logWarning(`action failed, will retry: ${e.message}`), false)),
      Effect.flatMap((quiet) => self.every(quiet ? SETTLED_PERIOD : Duration.millis(config.check_interval_ms)))
    )
  yield* periodic("controller", pass, Duration.millis(config.check_interval_ms), wake)
  const wakeOn = (changes: Stream.Stream<unknown>) => Stream.runForEach(changes, () => Queue.offer(wake, undefined))
  const inputs: ReadonlyArray<Stream.Stream<unknown>> = [
    local.health.changes,
    store.master.changes,
    store.members.changes,
    store.session.changes,
    observer.opinion.changes,
    mode.changes,
    store.maintenance.changes
  ]
  yield* supervised("controller-wake")(Effect.forEach(inputs, wakeOn, { concurrency: "unbounded", discard: true }))

  const answer = (request: FailsafeRequest) =>
    Effect.gen(function* () {
      const session = yield* store.session.get
      const timings = failsafeTimings(
        config.fence_after_ms,
        session.timeoutMs ?? config.zk_session_timeout_ms,
        config.check_interval_ms + config.check_timeout_ms
      )
      const question = {
        now: yield* Effect.clockWith((c) => c.currentTimeMillis),
        self: config.node.name,
        service: config.svc_name,
        session,
        master: yield* store.master.get,
        request,
        holdMs: timings.holdMs
      }
      const [verdict, held] = yield* SubscriptionRef.modify(state, (s) => {
        const [next, v] = answerFailsafe(s, question)
        return [[v, s.hold !== null && s.hold.epoch === request.epoch] as const, next] as const
      })
      // Once per hold, not per renewal.
      if (verdict.yes && !held) {
        yield* Effect.logWarning(`failsafe: answered yes to ${request.master} (epoch ${request.epoch}): out of elections for ${timings.holdMs} ms and until ZooKeeper answers again`)
      }
      return verdict
    })
  const answerFailsafeRequest = (request: FailsafeRequest): Effect.Effect<FailsafeVerdict> =>
    !config.failsafe
      ? Effect.succeed({ yes: false, reason: "failsafe mode is off on this node" })
      : withPermit(answer(request)).pipe(
          // The permit is busy (an action in progress): no answer in time is a no.
          Effect.timeoutTo({
            duration: Duration.millis(Math.max(100, Math.floor(config.fence_after_ms / 4))),
            onTimeout: () => ({ yes: false, reason: "this node's controller is busy" }),
            onSuccess: (v) => v
          })
        )

  return {
    state,
    withPermit,
    feed,
    stopCampaign: FiberHandle.clear(election),
    wake: Queue.offer(wake, undefined).pipe(Effect.asVoid),
    answerFailsafe: answerFailsafeRequest
  } satisfies ControllerService
})

export const layer = Layer.scoped(Controller, make)
