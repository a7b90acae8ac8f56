/**
 * One dictator node: the fibers that watch ZooKeeper and the local Redis, the controller that
 * turns what they see into actions (Decision.ts), the election, fencing and graceful handover.
 */
import {
  Context,
  Duration,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  Fiber,
  FiberHandle,
  FiberMap,
  Layer,
  Option,
  Queue,
  Ref,
  Schedule,
  Scope,
  Stream,
  SubscriptionRef
} from "effect"
import { DictatorConfig } from "./Config.js"
import {
  countVotes,
  decide,
  describeRanking,
  encodeMasterRecord,
  encodeMember,
  isUp,
  lastInfo,
  minReplicasFor,
  nextHealth,
  parseMasterView,
  parseMember,
  rankCandidates,
  redisStep,
  type Candidate,
  type HealthState,
  type MasterView,
  type MemberRecord,
  type Plan,
  type PresentMaster,
  type Self
} from "./Decision.js"
import { servicePaths } from "./Paths.js"
import { reconnectSchedule } from "./Retry.js"
import { formatAddress, Redis, type RedisAddress, type RedisConnection } from "./Redis.js"
import { VERSION } from "./Version.js"
import { ZooKeeper, type SessionInfo, type ZkBadVersion, type ZkNode, type ZkNoNode } from "./ZooKeeper.js"

export type Role = "starting" | "master" | "replica" | "candidate" | "fenced" | "disabled" | "waiting" | "handing-over"

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
}

export interface DictatorNodeService {
  readonly status: Effect.Effect<NodeStatus>
  /** Rejoins the election; false when already enabled. */
  readonly enable: Effect.Effect<boolean>
  /** Leaves the election (handing over first when master); false when already disabled. */
  readonly disable: Effect.Effect<boolean>
}

export class DictatorNode extends Context.Tag("dictator/Node")<DictatorNode, DictatorNodeService>() {}

/** Past the client's first reconnect attempt (20 ms, see Redis.ts), which tells refused from alive. */
const RECHECK_AFTER_CLOSE = Duration.millis(30)

/** How soon a follower looks again at a new master that was not promoted yet. */
const PROMOTION_RECHECK = Duration.millis(5)
/** A record naming a server that never gets promoted (another program's) is followed after this. */
const PROMOTION_WAIT_MAX = 1000

/** Long enough to outlive any outage we fence through; lifted explicitly when we act again. */
const FENCE_PAUSE = Duration.hours(1)

const planKey = (p: Plan): string =>
  p._tag === "Follow" ? `Follow ${p.master.name}` : p._tag === "Idle" || p._tag === "Fence" ? `${p._tag} ${p.reason}` : p._tag

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const zk = yield* ZooKeeper
  const redis = yield* Redis
  const scope = yield* Effect.scope
  const paths = servicePaths(config.svc_name)
  const self: Self = {
    name: config.node.name,
    host: config.node.host,
    port: config.node.port,
    priority: config.node.priority
  }
  const checkTimeout = Duration.millis(config.check_timeout_ms)
  const interval = Duration.millis(config.check_interval_ms)
  const now = Effect.clockWith((c) => c.currentTimeMillis)
  const startedAt = yield* now

  const local = yield* redis.connect(self, checkTimeout)

  // --- shared state ----------------------------------------------------------------------------
  const health = yield* SubscriptionRef.make<HealthState>({ _tag: "Unknown" })
  const master = yield* SubscriptionRef.make<MasterView | null>(null)
  const members = yield* SubscriptionRef.make<ReadonlyMap<string, MemberRecord>>(new Map())
  const enabled = yield* SubscriptionRef.make(true)
  /** Epoch of the master this node finds unreachable. */
  const opinion = yield* SubscriptionRef.make<string | null>(null)
  const role = yield* Ref.make<Role>("starting")
  const lastPlan = yield* Ref.make<Plan | null>(null)
  const owned = yield* Ref.make(false)
  /** Unknown at start (a previous run may have paused it): assume paused so the first action lifts it. */
  const pausedByUs = yield* Ref.make(true)
  const handingOver = yield* Ref.make(false)
  /** Set once on shutdown: nothing may take the master role again after the handover. */
  const stopping = yield* Ref.make(false)
  const previousMaster = yield* Ref.make<{ readonly name: string; readonly epoch: string; readonly address: RedisAddress } | null>(null)
  const appliedMinReplicas = yield* Ref.make<number | null>(null)
  /** One actor changes the local Redis or the master znode at a time. */
  const lock = yield* Effect.makeSemaphore(1)
  const wake = yield* Queue.sliding<void>(1)
  const publishWake = yield* Queue.sliding<void>(1)

  // --- connections to peers' Redis servers (ranking, host-death detection, handover) ------------
  // Their own scope, made now: on shutdown the handover still needs them while `scope` closes.
  const peersScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
  const peers = new Map<string, { readonly conn: RedisConnection; readonly scope: Scope.CloseableScope }>()
  const peer = (a: RedisAddress) =>
    Effect.gen(function* () {
      const key = formatAddress(a)
      const existing = peers.get(key)
      if (existing) return existing.conn
      const child = yield* Scope.fork(peersScope, ExecutionStrategy.sequential)
      const conn = yield* redis.connect(a, checkTimeout).pipe(Scope.extend(child))
      peers.set(key, { conn, scope: child })
      return conn
    })
  const dropPeer = (a: RedisAddress) =>
    Effect.suspend(() => {
      const key = formatAddress(a)
      const existing = peers.get(key)
      if (!existing) return Effect.void
      peers.delete(key)
      return Scope.close(existing.scope, Exit.void)
    })

  // --- health of the local Redis ------------------------------------------------------------
  const checkOnce = (conn: RedisConnection) =>
    Effect.either(Effect.zipRight(conn.ping, conn.replication))

  const describeHealth = (h: HealthState) =>
    h._tag === "Healthy" ? `healthy (${h.info.role}, offset ${h.info.offset})` : h._tag === "Down" || h._tag === "Suspect" ? `${h._tag.toLowerCase()}: ${h.detail}` : h._tag.toLowerCase()

  const checkNow = Effect.gen(function* () {
    const result = yield* checkOnce(local)
    const t = yield* now
    const prev = yield* SubscriptionRef.get(health)
    const next = nextHealth(prev, result, t, { downAfterMs: config.down_after_ms })
    if (prev._tag !== next._tag) {
      const log = next._tag === "Healthy" ? Effect.logInfo : Effect.logWarning
      yield* log(`local Redis ${formatAddress(self)} ${describeHealth(next)}`)
      yield* Queue.offer(publishWake, undefined)
    }
    yield* SubscriptionRef.set(health, next)
    return next
  })

  /**
   * The pause between two checks, cut short when the server drops the connection: a killed Redis
   * is then checked right after the client's first reconnect attempt (refused), not a whole
   * interval later.
   */
  const untilNextCheck = (conn: RedisConnection) =>
    Effect.raceFirst(Effect.sleep(interval), Effect.zipRight(conn.closed, Effect.sleep(RECHECK_AFTER_CLOSE)))

  const healthLoop = checkNow.pipe(
    Effect.zipRight(untilNextCheck(local)),
    Effect.forever,
    Effect.annotateLogs({ loop: "health" })
  )

  // --- master znode ----------------------------------------------------------------------------
  const readView = (node: Option.Option<ZkNode>) =>
    Option.isNone(node)
      ? Effect.succeed(parseMasterView(node))
      : zk.get(paths.epoch).pipe(
          Effect.map((epochNode) => parseMasterView(node, epochNode)),
          Effect.catchAll(() => Effect.succeed(parseMasterView(node)))
        )

  const masterLoop = zk.watchData(paths.master).pipe(
    Stream.mapEffect(readView),
    Stream.runForEach((view) =>
      Effect.gen(function* () {
        if (view._tag === "Malformed") {
          yield* Effect.logError(`master znode ${paths.master} is malformed (${view.reason}): ${JSON.stringify(view.raw)}; not following it`)
        }
        if (view._tag === "Present") {
          yield* Ref.set(previousMaster, { name: view.record.name, epoch: view.epoch, address: view.record })
        }
        yield* SubscriptionRef.set(master, view)
      })
    ),
    Effect.annotateLogs({ loop: "master-watch" })
  )

  /** A removal that found the node gone or replaced has nothing left to do. */
  const goneAlready = <A, E extends { readonly _tag: string }, R>(self: Effect.Effect<A, E, R>) =>
    Effect.catchIf(
      self,
      (e): e is Extract<E, ZkNoNode | ZkBadVersion> => e._tag === "ZkNoNode" || e._tag === "ZkBadVersion",
      () => Effect.void
    )

  /**
   * Removes the master znode of `view` and never a newer one: the epoch znode's version is checked
   * in the same transaction. For a master znode made by another program (no epoch), the czxid is
   * checked just before a versioned delete: a narrow race, logged.
   */
  const removeMaster = (view: Extract<MasterView, { _tag: "Present" | "Malformed" }>) =>
    Effect.gen(function* () {
      if (view.epochVersion !== null) {
        return yield* zk.transaction([
          { op: "check", path: paths.epoch, version: view.epochVersion },
          { op: "remove", path: paths.master, version: view.version }
        ])
      }
      const current = yield* zk.get(paths.master)
      if (Option.isNone(current) || current.value.stat.czxid !== view.epoch) return
      yield* Effect.logWarning(`master znode epoch ${view.epoch} has no epoch record (made by another program): removing it by version only`)
      yield* zk.remove(paths.master, view.version)
    }).pipe(goneAlready)

  /** Creates the master znode and bumps the epoch znode in one transaction. */
  const createMaster = (data: Uint8Array) =>
    Effect.gen(function* () {
      const epochExists = Option.isSome(yield* zk.get(paths.epoch))
      if (!epochExists) {
        yield* zk.ensurePath(paths.service)
        yield* zk.create(paths.epoch, new Uint8Array(), "persistent").pipe(Effect.catchTag("ZkNodeExists", () => Effect.void))
      }
      yield* zk.transaction([
        { op: "create", path: paths.master, data, mode: "ephemeral" },
        { op: "set", path: paths.epoch, data, version: -1 }
      ])
    })

  // --- member records of the whole service -----------------------------------------------------
  const memberWatchers = yield* FiberMap.make<string>()
  const watchedMembers = new Set<string>()
  const membersLoop = zk.watchChildren(paths.members).pipe(
    Stream.runForEach((names) =>
      Effect.gen(function* () {
        const current = new Set(names)
        for (const name of [...watchedMembers]) {
          if (!current.has(name)) {
            watchedMembers.delete(name)
            yield* FiberMap.remove(memberWatchers, name)
            yield* SubscriptionRef.update(members, (m) => {
              const next = new Map(m)
              next.delete(name)
              return next
            })
          }
        }
        for (const name of names) {
          watchedMembers.add(name)
          yield* FiberMap.run(
            memberWatchers,
            name,
            zk.watchData(paths.member(name)).pipe(
              Stream.runForEach((node) =>
                SubscriptionRef.update(members, (m) => {
                  const next = new Map(m)
                  const record = Option.flatMap(node, (n) => parseMember(n.data))
                  if (Option.isSome(record)) next.set(name, record.value)
                  else next.delete(name)
                  return next
                })
              )
            ),
            { onlyIfMissing: true }
          )
        }
      })
    ),
    Effect.annotateLogs({ loop: "members-watch" })
  )

  // --- this node's member record -----------------------------------------------------------------
  const memberRecord = Effect.gen(function* () {
    const h = yield* SubscriptionRef.get(health)
    const info = lastInfo(h)
    return {
      name: self.name,
      host: self.host,
      port: self.port,
      priority: self.priority,
      healthy: h._tag === "Healthy",
      role: info?.role ?? "unknown",
      offset: info?.offset ?? 0,
      link_up: info?.linkUp ?? false,
      master_down: yield* SubscriptionRef.get(opinion),
      version: VERSION,
      sentinel: config.sentinel_port === undefined ? null : `${config.node.host}:${config.sentinel_port}`
    } satisfies MemberRecord
  })

  let published: { readonly generation: number; readonly record: MemberRecord; readonly at: number } | null = null
  const sameExceptOffset = (a: MemberRecord, b: MemberRecord) =>
    JSON.stringify({ ...a, offset: 0 }) === JSON.stringify({ ...b, offset: 0 })

  const removeOwnMember = Effect.gen(function* () {
    published = null
    const existing = yield* zk.get(paths.member(self.name))
    const session = yield* SubscriptionRef.get(zk.session)
    if (Option.isSome(existing) && existing.value.stat.ephemeralOwner === session.sessionId) {
      yield* zk.remove(paths.member(self.name), existing.value.stat.version).pipe(goneAlready)
    }
  })

  const publishOnce = Effect.gen(function* () {
    const session = yield* SubscriptionRef.get(zk.session)
    if (session.status !== "connected") return
    if (!(yield* SubscriptionRef.get(enabled)) || (yield* Ref.get(handingOver)) || (yield* Ref.get(stopping))) return
    const h = yield* SubscriptionRef.get(health)
    const t = yield* now
    // Wait for the local Redis (up to loading_timeout) before showing up as a member.
    if (h._tag !== "Healthy" && published === null && t - startedAt < config.node.loading_timeout * 1000) return
    const record = yield* memberRecord
    const path = paths.member(self.name)
    if (published !== null && published.generation === session.generation) {
      const fresh = sameExceptOffset(published.record, record) && (record.offset === published.record.offset || t - published.at < 5000)
      if (fresh) return
      const result = yield* zk.set(path, encodeMember(record), -1).pipe(Effect.either)
      if (Either.isRight(result)) {
        published = { generation: session.generation, record, at: t }
        return
      }
      if (result.left._tag !== "ZkNoNode") return yield* result.left
    }
    // A new session: our record from an older one may still be there until it expires.
    const existing = yield* zk.get(path)
    if (Option.isSome(existing) && existing.value.stat.ephemeralOwner !== session.sessionId) {
      yield* zk.remove(path, existing.value.stat.version).pipe(goneAlready)
    }
    yield* zk.ensurePath(paths.members)
    yield* zk.create(path, encodeMember(record), "ephemeral").pipe(
      Effect.catchTag("ZkNodeExists", () => zk.set(path, encodeMember(record), -1))
    )
    if (published === null && h._tag !== "Healthy") {
      yield* Effect.logWarning(
        `local Redis not ready after loading_timeout ${config.node.loading_timeout}s: joining as a non-candidate until it is healthy`
      )
    }
    published = { generation: session.generation, record, at: t }
  })

  const publishLoop = Effect.raceFirst(Queue.take(publishWake), Effect.sleep(interval)).pipe(
    Effect.zipRight(
      publishOnce.pipe(
        Effect.catchAll((e) => Effect.logWarning(`cannot publish member record: ${e.message}`))
      )
    ),
    Effect.forever,
    Effect.annotateLogs({ loop: "member" })
  )

  // --- watching the master's Redis from a replica (host-death detection) ------------------------
  let observed: { readonly epoch: string; readonly address: RedisAddress; state: HealthState } | null = null
  const observeOnce = Effect.gen(function* () {
    const view = yield* SubscriptionRef.get(master)
    const session = yield* SubscriptionRef.get(zk.session)
    if (view === null || view._tag !== "Present" || view.owner === session.sessionId || !(yield* SubscriptionRef.get(enabled))) {
      if (view !== null && view._tag === "Present") {
        // Our own master, or disabled: no opinion about it.
        if ((yield* SubscriptionRef.get(opinion)) !== null) yield* SubscriptionRef.set(opinion, null)
      }
      return
    }
    if (observed === null || observed.epoch !== view.epoch) {
      if (observed !== null && formatAddress(observed.address) !== formatAddress(view.record)) yield* dropPeer(observed.address)
      observed = { epoch: view.epoch, address: view.record, state: { _tag: "Unknown" } }
      if ((yield* SubscriptionRef.get(opinion)) !== null) {
        yield* SubscriptionRef.set(opinion, null)
        yield* Queue.offer(publishWake, undefined)
      }
    }
    const conn = yield* peer(view.record)
    const result = yield* checkOnce(conn)
    const t = yield* now
    const obs = observed
    const next = nextHealth(obs.state, result, t, { downAfterMs: config.down_after_ms })
    obs.state = next
    const down = next._tag === "Down" || next._tag === "Loading"
    const current = yield* SubscriptionRef.get(opinion)
    if (down && current !== view.epoch) {
      yield* Effect.logWarning(
        `master ${view.record.name} (${formatAddress(view.record)}) unreachable from here: ${next._tag === "Down" ? next.detail : "loading"}; voting it down`
      )
      yield* SubscriptionRef.set(opinion, view.epoch)
      yield* Queue.offer(publishWake, undefined)
    } else if (!down && current === view.epoch) {
      yield* Effect.logInfo(`master ${view.record.name} reachable again; withdrawing the vote`)
      yield* SubscriptionRef.set(opinion, null)
      yield* Queue.offer(publishWake, undefined)
    }
  })
  const observeLoop = observeOnce.pipe(
    Effect.zipRight(
      Effect.suspend(() => (observed === null ? Effect.sleep(interval) : Effect.flatMap(peer(observed.address), untilNextCheck)))
    ),
    Effect.forever,
    Effect.annotateLogs({ loop: "observer" })
  )

  // --- election ----------------------------------------------------------------------------------
  const candidateOf = (m: MemberRecord, deposed: string | null): Effect.Effect<Candidate> =>
    Effect.gen(function* () {
      const base = { name: m.name, priority: m.priority, healthy: m.healthy }
      if (m.name === self.name) {
        // Fresh, like the peers' offsets: the last health check may be a whole interval old.
        const h = yield* SubscriptionRef.get(health)
        const info = yield* Effect.option(local.replication)
        return {
          ...base,
          healthy: h._tag === "Healthy" && Option.isSome(info),
          reachable: Option.isSome(info),
          offset: Option.match(info, { onNone: () => 0, onSome: (i) => i.offset }),
          syncInProgress: Option.match(info, { onNone: () => false, onSome: (i) => i.syncInProgress })
        }
      }
      if (m.name === deposed) return { ...base, reachable: false, offset: 0, syncInProgress: false }
      const conn = yield* peer(m)
      const info = yield* Effect.either(conn.replication)
      return Either.match(info, {
        onLeft: () => ({ ...base, reachable: false, offset: 0, syncInProgress: false }),
        onRight: (i) => ({ ...base, reachable: true, offset: i.offset, syncInProgress: i.syncInProgress })
      })
    })

  /** The candidates as every member can see them: records from ZooKeeper, offsets from each Redis. */
  const gatherCandidates = Effect.gen(function* () {
    const view = new Map(yield* SubscriptionRef.get(members))
    if (!view.has(self.name)) view.set(self.name, yield* memberRecord)
    const prev = yield* Ref.get(previousMaster)
    // A master that a majority found unreachable is no candidate (and asking it would only time out).
    const deposed = prev !== null && countVotes(view, prev.name, prev.epoch).carried ? prev.name : null
    const candidates = yield* Effect.forEach(view.values(), (m) => candidateOf(m, deposed), { concurrency: "unbounded" })
    return { ranking: rankCandidates(candidates, prev?.name ?? null), previous: prev }
  })

  const promote = (reason: string) =>
    Effect.gen(function* () {
      const previous = yield* Ref.get(previousMaster)
      const created = yield* createMaster(encodeMasterRecord(self, { since: new Date(yield* now).toISOString() })).pipe(
        Effect.map(() => true),
        Effect.catchTag("ZkNodeExists", () => Effect.succeed(false))
      )
      if (!created) {
        yield* Effect.logDebug("another candidate created the master znode first; following it")
        return
      }
      yield* Ref.set(owned, true)
      const view = yield* Effect.flatMap(zk.get(paths.master), readView)
      yield* SubscriptionRef.set(master, view)
      const result = yield* Effect.either(
        Effect.zipRight(local.replicaOf(null), Effect.zipRight(local.unpause, Ref.set(pausedByUs, false)))
      )
      if (Either.isLeft(result)) {
        yield* Effect.logError(`promotion failed (${result.left.message}): giving the master znode back`)
        if (view._tag === "Present") yield* removeMaster(view).pipe(Effect.catchAll(() => Effect.void))
        yield* Ref.set(owned, false)
        return
      }
      yield* Effect.logInfo(`promoting: ${reason} (epoch ${view._tag === "Present" ? view.epoch : "?"})`)
      yield* Ref.set(role, "master")
      yield* checkNow
      if (previous !== null && previous.name !== self.name) {
        yield* Effect.forkIn(demoteOrphan(previous), scope)
      }
    })

  /**
   * The previous master's Redis may outlive its dictator (killed, or stopped without handover):
   * nobody would ever demote it, and clients still connected to it could keep writing. When its
   * node is no longer a member, the new master turns it into its replica, as Sentinel would.
   */
  const demoteOrphan = (previous: { readonly name: string; readonly address: RedisAddress }) =>
    Effect.gen(function* () {
      if ((yield* SubscriptionRef.get(members)).has(previous.name)) return
      const conn = yield* peer(previous.address)
      const info = yield* conn.replication
      if (info.role !== "master") return
      yield* Effect.logWarning(
        `old master ${previous.name} (${formatAddress(previous.address)}) has no dictator any more: making its Redis a replica of this node`
      )
      yield* conn.replicaOf(self)
    }).pipe(
      Effect.catchAll((e) => Effect.logDebug(`old master ${previous.name} not demoted: ${e.message}`)),
      Effect.annotateLogs({ loop: "demote-orphan" })
    )

  let lastElectionNote = ""
  const electOnce = Effect.gen(function* () {
    const { ranking } = yield* gatherCandidates
    const rank = ranking.ranked.findIndex((c) => c.name === self.name)
    if (rank < 0) {
      const why = ranking.excluded.find((e) => e.name === self.name)?.reason ?? "not a member yet"
      const note = `not a candidate: ${why}`
      if (note !== lastElectionNote) yield* Effect.logInfo(note)
      lastElectionNote = note
      yield* Effect.sleep(interval)
      return
    }
    lastElectionNote = ""
    yield* Ref.set(role, "candidate")
    if (rank > 0) {
      yield* Effect.logDebug(`candidate rank ${rank + 1} of ${ranking.ranked.length}: waiting ${rank * config.election_step_ms} ms for ${ranking.ranked[0]!.name}`)
      yield* Effect.sleep(Duration.millis(rank * config.election_step_ms))
    }
    const reason = rank === 0 ? describeRanking(ranking) : `${ranking.ranked.slice(0, rank).map((c) => c.name).join(", ")} did not act within ${rank * config.election_step_ms} ms; ${describeRanking(ranking)}`
    yield* lock.withPermits(1)(
      Effect.uninterruptible(Effect.flatMap(Ref.get(stopping), (stop) => (stop ? Effect.void : promote(reason))))
    )
  }).pipe(
    Effect.catchAll((e) => Effect.logWarning(`election attempt failed: ${e.message}`)),
    Effect.annotateLogs({ loop: "election" })
  )
  const election = yield* FiberHandle.make<void, never>()

  // --- the controller ---------------------------------------------------------------------------
  const setRole = (r: Role) => Ref.set(role, r)

  /** A fresh read through the server: false when the session is gone or someone else owns the znode. */
  const confirmOwnership = Effect.gen(function* () {
    const node = yield* zk.get(paths.master)
    const session = yield* SubscriptionRef.get(zk.session)
    return Option.isSome(node) && session.status === "connected" && node.value.stat.ephemeralOwner === session.sessionId
  }).pipe(Effect.catchAll(() => Effect.succeed(false)))

  let promotionWait: { readonly key: string; readonly since: number } | null = null

  const applyRedisStep = (plan: Plan) =>
    Effect.gen(function* () {
      const h = yield* SubscriptionRef.get(health)
      if (!isUp(h)) return
      const step = redisStep(plan, lastInfo(h), yield* Ref.get(pausedByUs))
      switch (step._tag) {
        case "PromoteRedis":
          yield* Effect.logInfo("local Redis is not master but this node owns the master znode: REPLICAOF NO ONE")
          yield* local.replicaOf(null)
          break
        case "ReplicateFrom": {
          // The znode comes before the winner's REPLICAOF NO ONE: a replica that asks a server
          // not yet promoted gets -NOMASTERLINK and Redis retries only a second later. Wait for
          // the promotion (a few ms) when the new master answers; when it does not, go ahead.
          const target = yield* Effect.flatMap(peer(step.master), (c) => Effect.option(c.replication))
          const t = yield* now
          const key = formatAddress(step.master)
          if (promotionWait === null || promotionWait.key !== key) promotionWait = { key, since: t }
          if (Option.isSome(target) && target.value.role !== "master" && t - promotionWait.since < PROMOTION_WAIT_MAX) {
            yield* Effect.logDebug(`master ${step.master.name} not promoted yet; following it in a moment`)
            yield* Effect.forkIn(Effect.zipRight(Effect.sleep(PROMOTION_RECHECK), Queue.offer(wake, undefined)), scope)
            break
          }
          yield* Effect.logInfo(`following master ${step.master.name}: REPLICAOF ${formatAddress(step.master)}`)
          yield* local.replicaOf(step.master)
          break
        }
        case "PauseWrites":
          yield* Effect.logWarning(`fencing: pausing writes on the local Redis (${plan._tag === "Fence" || plan._tag === "Resign" || plan._tag === "ClearStale" ? plan.reason : "not the master"})`)
          // Marked first: a pause that times out may still run later (a frozen Redis runs its
          // queued commands on waking), and a replica under a WRITE pause stops applying its
          // replication stream. Unpausing later is harmless when it never ran.
          yield* Ref.set(pausedByUs, true)
          yield* local.pauseWrites(FENCE_PAUSE)
          break
        case "None":
          break
      }
      // Loosening a fence on a master needs ownership confirmed by the server: after a freeze,
      // the view (and even the session state) may still be the one from before it.
      let confirmed: boolean | null = null
      const stillOwner = Effect.gen(function* () {
        if (confirmed === null) confirmed = yield* confirmOwnership
        return confirmed
      })
      if ((plan._tag === "BeMaster" || plan._tag === "Follow") && (yield* Ref.get(pausedByUs))) {
        if (plan._tag === "Follow" || (yield* stillOwner)) {
          yield* local.unpause
          yield* Ref.set(pausedByUs, false)
        }
      }
      if (plan._tag === "BeMaster") {
        const info = lastInfo(yield* SubscriptionRef.get(health))
        const wanted = minReplicasFor(config.min_replicas_to_write, info?.role === "master" ? info.replicas.length : 0)
        const applied = yield* Ref.get(appliedMinReplicas)
        if (applied !== wanted && (applied === null || wanted > applied || (yield* stillOwner))) {
          yield* local.configSet("min-replicas-max-lag", String(config.min_replicas_max_lag))
          yield* local.configSet("min-replicas-to-write", String(wanted))
          yield* Ref.set(appliedMinReplicas, wanted)
          yield* Effect.logInfo(
            wanted > 0
              ? `fencing by replicas: min-replicas-to-write ${wanted}, min-replicas-max-lag ${config.min_replicas_max_lag}s`
              : `no linked replica: min-replicas-to-write 0 so the master keeps taking writes alone`
          )
        }
      } else if ((yield* Ref.get(appliedMinReplicas)) !== null) {
        yield* Ref.set(appliedMinReplicas, null)
      }
      if (step._tag !== "None") yield* checkNow
    })

  const depose = (view: PresentMaster) =>
    Effect.gen(function* () {
      if ((yield* SubscriptionRef.get(opinion)) !== view.epoch) return
      const votes = countVotes(yield* SubscriptionRef.get(members), view.record.name, view.epoch)
      if (!votes.carried) return
      yield* Effect.logWarning(
        `deposing master ${view.record.name} (epoch ${view.epoch}): unreachable for ${votes.votes} of the other members (${votes.voters.join(", ")}), ${votes.needed} needed`
      )
      yield* removeMaster(view)
    })

  const reconcile = Effect.gen(function* () {
    if ((yield* Ref.get(handingOver)) || (yield* Ref.get(stopping))) return
    const view = yield* SubscriptionRef.get(master)
    const session = yield* SubscriptionRef.get(zk.session)
    if (view === null) return
    if (session.status === "connected") {
      yield* Ref.set(owned, view._tag === "Present" && view.owner === session.sessionId)
    }
    const plan = decide({
      now: yield* now,
      self,
      enabled: yield* SubscriptionRef.get(enabled),
      session,
      master: view,
      health: yield* SubscriptionRef.get(health),
      owned: yield* Ref.get(owned),
      fenceAfterMs: config.fence_after_ms
    })
    const previous = yield* Ref.get(lastPlan)
    if (previous === null || planKey(previous) !== planKey(plan)) {
      if (plan._tag === "Idle" || plan._tag === "Elect") yield* Effect.logDebug(`plan: ${planKey(plan)}`)
      else if (plan._tag === "Fence") yield* Effect.logWarning(`fencing: ${plan.reason}`)
      else if (plan._tag === "Follow") yield* Effect.logInfo(`master is ${plan.master.name} (${formatAddress(plan.master)})`)
      else if (plan._tag === "BeMaster") yield* Effect.logInfo("this node is the master")
      else if (plan._tag === "ClearStale") yield* Effect.logInfo(`clearing stale master znode: ${plan.reason}; a new election follows`)
      yield* Ref.set(lastPlan, plan)
    }
    if (plan._tag === "Elect") {
      yield* FiberHandle.run(election, electOnce, { onlyIfMissing: true })
    } else {
      yield* FiberHandle.clear(election)
    }
    switch (plan._tag) {
      case "Resign":
        yield* Effect.logWarning(`resigning as master: ${plan.reason}`)
        yield* applyRedisStep(plan).pipe(Effect.catchAll(() => Effect.void))
        yield* removeMaster(plan.master)
        yield* Ref.set(owned, false)
        yield* setRole("waiting")
        return
      case "ClearStale":
        yield* applyRedisStep(plan)
        yield* removeMaster(plan.master)
        return
      case "Follow":
        if (view._tag === "Present") yield* depose(view)
        break
      default:
        break
    }
    yield* applyRedisStep(plan)
    const redisUp = isUp(yield* SubscriptionRef.get(health))
    yield* setRole(
      plan._tag === "BeMaster"
        ? "master"
        : plan._tag === "Follow"
          ? redisUp ? "replica" : "waiting"
          : plan._tag === "Fence"
            ? "fenced"
            : plan._tag === "Elect"
              ? "candidate"
              : plan._tag === "Idle" && plan.reason === "disabled"
                ? "disabled"
                : "waiting"
    )
  })

  const controllerLoop = Effect.raceFirst(Queue.take(wake), Effect.sleep(interval)).pipe(
    Effect.zipRight(
      lock.withPermits(1)(reconcile).pipe(
        Effect.catchAll((e) => Effect.logWarning(`action failed, will retry: ${e.message}`))
      )
    ),
    Effect.forever,
    Effect.annotateLogs({ loop: "controller" })
  )

  const wakeOn = <A>(ref: SubscriptionRef.SubscriptionRef<A>) =>
    ref.changes.pipe(Stream.runForEach(() => Queue.offer(wake, undefined)))

  // --- graceful handover ----------------------------------------------------------------------
  /** Polls `probe` every 10 ms until it finds something or `within` has passed (bounded waits of a handover). */
  const waitFor = <A>(probe: Effect.Effect<Option.Option<A>, unknown>, within: Duration.Duration) =>
    probe.pipe(
      Effect.flatMap(Effect.orElseFail(() => "not yet")),
      Effect.retry(Schedule.spaced("10 millis")),
      Effect.timeoutTo({ duration: within, onTimeout: () => Option.none<A>(), onSuccess: Option.some }),
      Effect.catchAll(() => Effect.succeedNone)
    )

  /**
   * Hands the master role over without losing acknowledged writes: pause writes, wait (bounded)
   * for a replica to reach our offset, give up the znodes, follow the new master, lift the pause
   * (blocked writes then fail with READONLY: never acknowledged by a demoted node).
   */
  const handover = (why: string) =>
    Effect.gen(function* () {
      yield* Ref.set(handingOver, true)
      yield* FiberHandle.clear(election)
      const view = yield* SubscriptionRef.get(master)
      const session = yield* SubscriptionRef.get(zk.session)
      const isMaster = view !== null && view._tag === "Present" && view.owner === session.sessionId && session.status === "connected"
      if (!isMaster) {
        yield* removeOwnMember.pipe(Effect.catchAll(() => Effect.void))
        return
      }
      const within = Duration.millis(config.handover_timeout_ms)
      yield* Effect.logInfo(`handover (${why}): pausing writes and waiting for a replica to catch up`)
      yield* setRole("handing-over")
      yield* Ref.set(pausedByUs, true)
      yield* local.pauseWrites(FENCE_PAUSE)
      const target = (yield* local.replication).offset
      const others = [...(yield* SubscriptionRef.get(members)).values()].filter(
        (m) => m.name !== self.name && m.priority > 0 && m.healthy
      )
      const caughtUp = others.length === 0 ? Option.none() : yield* waitFor(
        Effect.gen(function* () {
          for (const m of others) {
            const info = yield* Effect.either((yield* peer(m)).replication)
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
      yield* removeOwnMember
      yield* removeMaster(view)
      yield* Ref.set(owned, false)
      if (others.length === 0) return
      const next = yield* waitFor(
        Effect.map(zk.get(paths.master), (n) => {
          const v = parseMasterView(n)
          return v._tag === "Present" && v.record.name !== self.name ? Option.some(v.record) : Option.none()
        }),
        within
      )
      if (Option.isNone(next)) {
        yield* Effect.logWarning(`handover: no new master within ${config.handover_timeout_ms} ms; leaving writes paused`)
        return
      }
      yield* local.replicaOf(next.value)
      yield* local.unpause
      yield* Ref.set(pausedByUs, false)
      yield* Effect.logInfo(`handover done: ${next.value.name} is master; local Redis now replicates from it`)
    }).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(2 * config.handover_timeout_ms + 2000),
        onTimeout: () => new Error("took too long")
      }),
      Effect.catchAll((e) => Effect.logError(`handover failed: ${e.message}`)),
      Effect.ensuring(Ref.set(handingOver, false)),
      Effect.annotateLogs({ loop: "handover" })
    )

  // --- start ---------------------------------------------------------------------------------
  yield* Effect.logInfo(
    `dictator ${VERSION} for service ${config.svc_name}: node ${self.name} (${formatAddress(self)}), priority ${self.priority}`
  )
  yield* zk.ensurePath(paths.service).pipe(
    Effect.tapError((e) => Effect.logWarning(`cannot create ${paths.service} (${e.message}); retrying with backoff`)),
    Effect.retry(reconnectSchedule),
    Effect.orDie // the schedule never ends
  )

  // Work fibers live in their own scope, closed before the handover runs on shutdown.
  const workScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
  const fork = (name: string, effect: Effect.Effect<unknown, unknown>) =>
    effect.pipe(
      Effect.catchAllCause((cause) => Effect.logError(`fiber ${name} stopped`, cause)),
      Effect.annotateLogs({ loop: name }),
      Effect.forkIn(workScope),
      Effect.interruptible
    )
  yield* fork("health", healthLoop)
  yield* fork("master-watch", masterLoop)
  yield* fork("members-watch", membersLoop)
  yield* fork("member", publishLoop)
  yield* fork("observer", observeLoop)
  yield* fork("controller", controllerLoop)
  yield* fork("wake-health", wakeOn(health))
  yield* fork("wake-master", wakeOn(master))
  yield* fork("wake-members", wakeOn(members))
  yield* fork("wake-enabled", wakeOn(enabled))
  yield* fork("wake-opinion", wakeOn(opinion))
  yield* fork("wake-session", wakeOn(zk.session))

  const inOwnFiber = <A>(effect: Effect.Effect<A>) =>
    Effect.flatMap(Effect.forkDaemon(Effect.interruptible(effect)), Fiber.join)
  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      // Finalizers run uninterruptibly, and the fiber running them is being interrupted: the
      // handover runs in a fiber of its own, interruptible, so its own time bounds hold.
      yield* Ref.set(stopping, true)
      yield* inOwnFiber(lock.withPermits(1)(handover("shutting down")))
      yield* Scope.close(workScope, Exit.void)
      yield* inOwnFiber(removeOwnMember.pipe(Effect.timeout("2 seconds"), Effect.catchAll(() => Effect.void)))
    })
  )

  const service: DictatorNodeService = {
    status: Effect.gen(function* () {
      return {
        name: self.name,
        service: config.svc_name,
        role: yield* Ref.get(role),
        enabled: yield* SubscriptionRef.get(enabled),
        session: yield* SubscriptionRef.get(zk.session),
        master: yield* SubscriptionRef.get(master),
        health: yield* SubscriptionRef.get(health),
        plan: yield* Ref.get(lastPlan),
        members: [...(yield* SubscriptionRef.get(members)).values()]
      }
    }),
    enable: Effect.gen(function* () {
      if (yield* SubscriptionRef.get(enabled)) return false
      yield* Effect.logInfo("enabled: rejoining the election")
      yield* SubscriptionRef.set(enabled, true)
      yield* Queue.offer(publishWake, undefined)
      return true
    }),
    disable: lock.withPermits(1)(
      Effect.gen(function* () {
        if (!(yield* SubscriptionRef.get(enabled))) return false
        yield* Effect.logInfo("disabled: leaving the election; the local Redis is no longer managed")
        yield* SubscriptionRef.set(enabled, false)
        yield* handover("disabled")
        yield* removeOwnMember.pipe(Effect.catchAll(() => Effect.void))
        yield* setRole("disabled")
        return true
      })
    )
  }
  return service
})

export const layer = Layer.scoped(DictatorNode, make)
