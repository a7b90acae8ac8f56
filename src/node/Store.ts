/**
 * The service's state in ZooKeeper, in the node's words: the master znode (watched, created,
 * removed epoch-safely), the member records (watched, written), ownership checks. The only
 * module that knows ZooKeeper paths, znode versions and transactions.
 */
import { Context, Data, Effect, FiberHandle, FiberMap, Layer, Option, Ref, Stream, type Subscribable, SubscriptionRef } from "effect"
import { DictatorConfig } from "../Config.js"
import {
  encodeHandover,
  encodeMasterRecord,
  type HandoverRecord,
  encodeMember,
  type MasterRecord,
  type MasterView,
  type MemberRecord,
  parseMasterView,
  parseHandover,
  parseMember,
  type PresentMaster,
  encodeSwitchoverResult,
  parseSwitchoverRequest,
  type SwitchoverRequest,
  type SwitchoverResult
} from "../domain/Records.js"
import { servicePaths, type ServicePaths } from "../Paths.js"
import { formatAddress, type RedisAddress, sameAddress } from "../Redis.js"
import { reconnectSchedule } from "../Retry.js"
import {
  type SessionInfo,
  type ZkBadVersion,
  type ZkFailure,
  type ZkNode,
  type ZkNodeExists,
  type ZkNoNode,
  ZooKeeper
} from "../ZooKeeper.js"
import { supervised } from "./supervised.js"

export interface StoreService {
  readonly session: Subscribable.Subscribable<SessionInfo>
  /** The master znode as last seen (null until the first read). */
  readonly master: Subscribable.Subscribable<MasterView | null>
  /** The last master znode that was present: the previous master once it is gone. */
  readonly lastMaster: Effect.Effect<PresentMaster | null>
  readonly members: Subscribable.Subscribable<ReadonlyMap<string, MemberRecord>>
  /** The most members seen at once since start: the service's size, for the votes' quorum. */
  readonly largestMembership: Effect.Effect<number>
  /**
   * The last record seen of the member `name` while it was a master, kept after it is gone: the
   * old master's replication id and offset, for the lag guard of the next election.
   */
  readonly lastMasterRecordOf: (name: string) => Effect.Effect<MemberRecord | null>
  /** Members whose record went away within the last `withinMs` (their last record): a Redis may outlive its dictator. */
  readonly departed: (withinMs: number) => Effect.Effect<ReadonlyArray<MemberRecord>>
  /** Creates the master znode naming `record` and bumps the epoch, atomically; false when another exists. */
  readonly createMaster: (record: MasterRecord, extra: Record<string, unknown>) => Effect.Effect<boolean, ZkFailure | ZkNoNode | ZkBadVersion>
  /** Reads the master znode through the server and publishes it as `master`. */
  readonly refreshMaster: Effect.Effect<MasterView, ZkFailure>
  /** A quorum-fresh read of the master znode (sync, then read), published as `master`. */
  readonly rereadMaster: Effect.Effect<MasterView, ZkFailure>
  /** The master znode as the server has it now, without publishing it. */
  readonly readMaster: Effect.Effect<MasterView, ZkFailure>
  /** Removes the master znode of `view` and never a newer one; gone already is fine. */
  readonly removeMaster: (view: Extract<MasterView, { _tag: "Present" | "Malformed" }>) => Effect.Effect<void, ZkFailure | ZkNodeExists>
  /**
   * Removes our master znode `view` and names `to` as the one to take over, in one transaction:
   * the candidates see the choice as soon as they see the master gone.
   */
  readonly handOver: (view: PresentMaster, to: string) => Effect.Effect<void, ZkFailure | ZkNodeExists | ZkNoNode | ZkBadVersion>
  /** The last graceful handover's choice, if any (it names the epoch it ended). */
  readonly handover: Effect.Effect<Option.Option<HandoverRecord>, ZkFailure>
  /** A quorum-fresh read (sync, then read): false when the session is gone or someone else owns the znode. */
  readonly confirmOwnership: Effect.Effect<boolean>
  /** The same, telling a definite answer (true/false) from no answer (the failure): failsafe's re-confirmation. */
  readonly checkOwnership: Effect.Effect<boolean, ZkFailure>
  /** Rewrites this node's member record; false when it is not there (a new session must create it). */
  readonly updateMember: (record: MemberRecord) => Effect.Effect<boolean, ZkFailure | ZkBadVersion>
  /**
   * Creates this node's member record in `session`, replacing one left by an older session of
   * this node (same name, same Redis address); one of another node under our name is refused.
   */
  readonly createMember: (record: MemberRecord, session: SessionInfo) => Effect.Effect<void, ZkFailure | ZkNodeExists | ZkNoNode | ZkBadVersion | DuplicateNode>
  /** Removes this node's member record if this session owns it. */
  readonly removeMember: (name: string) => Effect.Effect<void, ZkFailure>
  /** Maintenance mode (`dictator pause`): true while its znode exists, kept current by a watch. */
  readonly maintenance: Subscribable.Subscribable<boolean>
  /** The pending switchover request (`dictator switchover`), kept current by a watch; none when absent. */
  readonly switchover: Subscribable.Subscribable<Option.Option<PendingSwitchover>>
  /**
   * Removes the request of that znode version and records `result`, in one transaction: a
   * request replaced meanwhile (another version) is left for its own turn.
   */
  readonly finishSwitchover: (pending: PendingSwitchover, result: SwitchoverResult) => Effect.Effect<void, ZkFailure | ZkNodeExists | ZkNoNode | ZkBadVersion>
}

/** A switchover request znode: its parsed record (none when malformed) and its version. */
export interface PendingSwitchover {
  readonly request: Option.Option<SwitchoverRequest>
  readonly raw: string
  readonly version: number
}

export class Store extends Context.Tag("dictator/Store")<Store, StoreService>() {}

/**
 * Another dictator runs under this node's name in this service: two nodes with one name would
 * replace each other's member record (and clear each other's master znode) forever.
 */
export class DuplicateNode extends Data.TaggedError("DuplicateNode")<{
  readonly service: string
  readonly name: string
  /** The other one's Redis, as its member record says. */
  readonly other: string
  readonly session: string
}> {
  override get message() {
    return `another dictator already runs as node "${this.name}" in service "${this.service}" (its Redis is ${this.other}, ZooKeeper session 0x${this.session}): two nodes with one name would delete each other's znodes; give each dictator its own node.name in its config file (the default is "local")`
  }
}

/**
 * Whether a member znode not owned by this session is this node's own, left by an older session
 * (of this process or of a previous run, until it expires): the same name for the same Redis
 * address. Another address under our name is another node.
 */
const leftByUs = (node: ZkNode, self: RedisAddress): Option.Option<boolean> =>
  Option.map(parseMember(node.data), (m) => sameAddress(m, self))

/** A removal that found the node gone or replaced has nothing left to do. */
const goneAlready = <A, E extends { readonly _tag: string }, R>(self: Effect.Effect<A, E, R>) =>
  Effect.catchIf(
    self,
    (e): e is Extract<E, ZkNoNode | ZkBadVersion> => e._tag === "ZkNoNode" || e._tag === "ZkBadVersion",
    () => Effect.void
  )

type Zk = Context.Tag.Service<typeof ZooKeeper>

const viewOf = (zk: Zk, paths: ServicePaths) => (node: Option.Option<ZkNode>) =>
  Option.isNone(node)
    ? Effect.succeed(parseMasterView(node))
    : zk.get(paths.epoch).pipe(
        Effect.map((epochNode) => parseMasterView(node, epochNode)),
        Effect.catchAll(() => Effect.succeed(parseMasterView(node)))
      )

/**
 * A malformed master znode that is PERSISTENT (no session owns it: written by hand or by another
 * program) would fence every node forever. Once it has stayed the same for `graceMs`, it is
 * removed (epoch-checked, never a newer master) and an election follows.
 */
const clearMalformed = (zk: Zk, paths: ServicePaths, graceMs: number, view: Extract<MasterView, { _tag: "Malformed" }>) =>
  Effect.gen(function* () {
    yield* Effect.sleep(`${graceMs} millis`)
    const now = yield* Effect.flatMap(zk.get(paths.master), viewOf(zk, paths))
    if (now._tag !== "Malformed" || now.epoch !== view.epoch || now.version !== view.version) return
    yield* Effect.logWarning(`removing the malformed persistent master znode ${paths.master} (unchanged for ${graceMs} ms); a new election follows`)
    yield* removeMaster(zk, paths)(now)
  }).pipe(Effect.catchAll((e) => Effect.logWarning(`cannot remove the malformed master znode ${paths.master}: ${e.message}; retried when it changes or on the next start`)))

/** The master znode as a SubscriptionRef kept current by a watch; the last present one kept apart. */
const watchMaster = (zk: Zk, paths: ServicePaths, graceMs: number) =>
  Effect.gen(function* () {
    const master = yield* SubscriptionRef.make<MasterView | null>(null)
    const lastMaster = yield* Ref.make<PresentMaster | null>(null)
    const janitor = yield* FiberHandle.make<void, never>()
    yield* supervised("master-watch")(
      zk.watchData(paths.master).pipe(
        Stream.mapEffect(viewOf(zk, paths)),
        Stream.runForEach((view) =>
          Effect.gen(function* () {
            yield* FiberHandle.clear(janitor)
            if (view._tag === "Malformed") {
              const persistent = view.owner === "0" || view.owner === ""
              yield* Effect.logError(
                `master znode ${paths.master} is malformed (${view.reason}): ${JSON.stringify(view.raw)}; not following it` +
                  (persistent
                    ? `; it is persistent (no dictator's session owns it), so it is removed if still unchanged in ${graceMs} ms (or now by hand: zkCli.sh delete ${paths.master})`
                    : `; it goes when its session ends (owner 0x${view.owner})`)
              )
              if (persistent) yield* FiberHandle.run(janitor, clearMalformed(zk, paths, graceMs, view))
            }
            if (view._tag === "Present") yield* Ref.set(lastMaster, view)
            yield* SubscriptionRef.set(master, view)
          })
        )
      )
    )
    return { master, lastMaster }
  })

/** Every member record, kept current by a watch on the members' parent and one per member. */
const watchMembers = (zk: Zk, paths: ServicePaths) =>
  Effect.gen(function* () {
    const members = yield* SubscriptionRef.make<ReadonlyMap<string, MemberRecord>>(new Map())
    const setMember = (name: string, record: Option.Option<MemberRecord>) =>
      SubscriptionRef.update(members, (m) => {
        const next = new Map(m)
        if (Option.isSome(record)) next.set(name, record.value)
        else next.delete(name)
        return next
      })
    const watchers = yield* FiberMap.make<string>()
    /** Each member's last record as a master; never forgotten (one per name ever seen). */
    const asMaster = new Map<string, MemberRecord>()
    /** Each member's last record, and when it went away (null while it is a member). */
    const lastSeen = new Map<string, { record: MemberRecord; goneAt: number | null }>()
    const watched = new Set<string>()
    const follow = (names: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const current = new Set(names)
        const at = yield* Effect.clockWith((c) => c.currentTimeMillis)
        for (const name of (yield* SubscriptionRef.get(members)).keys()) {
          if (!current.has(name)) yield* setMember(name, Option.none())
        }
        for (const [name, seen] of lastSeen) {
          if (!current.has(name) && seen.goneAt === null) seen.goneAt = at
          if (current.has(name)) seen.goneAt = null
        }
        for (const name of [...watched]) {
          if (current.has(name)) continue
          watched.delete(name)
          yield* FiberMap.remove(watchers, name)
        }
        for (const name of names) {
          watched.add(name)
          const watch = zk.watchData(paths.member(name)).pipe(
            Stream.runForEach((node) => {
              const record = Option.flatMap(node, (n) => parseMember(n.data))
              if (Option.isSome(record) && record.value.role === "master") asMaster.set(name, record.value)
              if (Option.isSome(record)) lastSeen.set(name, { record: record.value, goneAt: null })
              return setMember(name, record)
            })
          )
          yield* FiberMap.run(watchers, name, watch, { onlyIfMissing: true })
        }
      })
    yield* supervised("members-watch")(Stream.runForEach(zk.watchChildren(paths.members), follow))
    const largest = yield* Ref.make(0)
    yield* supervised("members-size")(Stream.runForEach(members.changes, (m) => Ref.update(largest, (n) => Math.max(n, m.size))))
    return {
      members,
      largestMembership: Ref.get(largest),
      lastMasterRecordOf: (name: string) => Effect.sync(() => asMaster.get(name) ?? null),
      departed: (withinMs: number) =>
        Effect.clockWith((c) => c.currentTimeMillis).pipe(
          Effect.map((now) => [...lastSeen.values()].filter((s) => s.goneAt !== null && now - s.goneAt <= withinMs).map((s) => s.record))
        )
    }
  })

/**
 * Removes the master znode of `view` and never a newer one. The epoch znode's version is checked
 * in the same transaction: a znode's own version starts at 0 again when it is re-created, so it
 * cannot tell "this master" from a newer one. For a master znode made by another program (its
 * creation did not bump the epoch), the epoch's version is read first, then the master znode's
 * czxid is checked, and the removal checks that epoch version: a dictator that elected itself
 * meanwhile bumped it, so its master znode is never removed by this (now stale) view.
 */
const removeMaster = (zk: Zk, paths: ServicePaths): StoreService["removeMaster"] => (view) =>
  Effect.gen(function* () {
    if (view.epochVersion !== null) {
      return yield* zk.transaction([
        { op: "check", path: paths.epoch, version: view.epochVersion },
        { op: "remove", path: paths.master, version: view.version }
      ])
    }
    if (Option.isNone(yield* zk.get(paths.epoch))) {
      yield* zk.create(paths.epoch, new Uint8Array(), "persistent").pipe(Effect.catchTag("ZkNodeExists", () => Effect.void))
    }
    const epoch = yield* zk.get(paths.epoch)
    if (Option.isNone(epoch)) return
    const current = yield* zk.get(paths.master)
    if (Option.isNone(current) || current.value.stat.czxid !== view.epoch) return
    yield* Effect.logWarning(`master znode epoch ${view.epoch} was not made by a dictator (no epoch record): removing it, unless a dictator was elected meanwhile`)
    yield* zk.transaction([
      { op: "check", path: paths.epoch, version: epoch.value.stat.version },
      { op: "remove", path: paths.master, version: view.version }
    ])
  }).pipe(goneAlready)

/**
 * The master's liveness goes through the quorum (issue 8, scenario 7): while this session holds
 * the master znode — as last seen, which stays so while disconnected — the driver's probe is one
 * the leader answers only with a quorum, so a master whose server is cut off from the quorum is
 * fenced within fence_after_ms although that server still answers reads. Everyone else keeps the
 * local read: replicas take no writes, and the quorum round trip is paid by the master alone.
 */
const followOwnership = (zk: Zk, master: Subscribable.Subscribable<MasterView | null>) =>
  supervised("quorum-probe")(
    Stream.zipLatest(master.changes, zk.session.changes).pipe(
      // Kept while not connected: the view cannot change then, and the znode may still be ours
      // (that is when the quorum-backed probe matters most).
      Stream.filter(([, session]) => session.status === "connected"),
      Stream.map(([view, session]) => view !== null && view._tag === "Present" && session.sessionId !== null && view.owner === session.sessionId),
      // Not deduplicated here: createMaster switches it on before the watch agrees, and a
      // promotion given back must switch it off again. The driver ignores a repeated mode.
      Stream.runForEach(zk.quorumProbe)
    )
  )

const createMaster = (zk: Zk, paths: ServicePaths): StoreService["createMaster"] => (record, extra) =>
  Effect.gen(function* () {
    const data = encodeMasterRecord(record, extra)
    if (Option.isNone(yield* zk.get(paths.epoch))) {
      yield* zk.ensurePath(paths.service)
      yield* zk.create(paths.epoch, new Uint8Array(), "persistent").pipe(Effect.catchTag("ZkNodeExists", () => Effect.void))
    }
    return yield* zk.transaction([
      { op: "create", path: paths.master, data, mode: "ephemeral" },
      { op: "set", path: paths.epoch, data, version: -1 }
    ]).pipe(
      // Ours from now on: the quorum-backed probe before the watch even shows the new znode.
      Effect.zipRight(zk.quorumProbe(true)),
      Effect.as(true),
      Effect.catchTag("ZkNodeExists", () => Effect.succeed(false))
    )
  })

const handOver = (zk: Zk, paths: ServicePaths): StoreService["handOver"] => (view, to) =>
  Effect.gen(function* () {
    const data = encodeHandover({ from: view.record.name, to, epoch: view.epoch })
    const existing = yield* zk.get(paths.handover)
    const record = Option.isSome(existing)
      ? ({ op: "set", path: paths.handover, data, version: existing.value.stat.version } as const)
      : ({ op: "create", path: paths.handover, data, mode: "persistent" } as const)
    const guard =
      view.epochVersion === null ? [] : [{ op: "check", path: paths.epoch, version: view.epochVersion } as const]
    yield* zk.transaction([...guard, record, { op: "remove", path: paths.master, version: view.version }])
  })

/**
 * Invariant 9: before anything lets the local Redis take writes, a read that the quorum vouches
 * for (a sync, then the read) must show this session owning the master znode. A server that fell
 * behind, or a view from before a freeze, cannot.
 */
const checkOwnership = (zk: Zk, paths: ServicePaths) =>
  Effect.gen(function* () {
    yield* zk.sync(paths.master)
    const node = yield* zk.get(paths.master)
    const session = yield* SubscriptionRef.get(zk.session)
    return Option.isSome(node) && session.status === "connected" && node.value.stat.ephemeralOwner === session.sessionId
  })

const confirmOwnership = (zk: Zk, paths: ServicePaths) => checkOwnership(zk, paths).pipe(Effect.catchAll(() => Effect.succeed(false)))

const memberWrites = (zk: Zk, paths: ServicePaths, service: string) => ({
  updateMember: (record: MemberRecord) =>
    zk.set(paths.member(record.name), encodeMember(record), -1).pipe(
      Effect.as(true),
      Effect.catchTag("ZkNoNode", () => Effect.succeed(false))
    ),
  createMember: (record: MemberRecord, session: SessionInfo) =>
    Effect.gen(function* () {
      const path = paths.member(record.name)
      // A new session: our record from an older one may still be there until it expires.
      // Another node's under our name is never removed (each would remove the other's forever).
      const existing = yield* zk.get(path)
      if (Option.isSome(existing) && existing.value.stat.ephemeralOwner !== session.sessionId) {
        if (!Option.getOrElse(leftByUs(existing.value, record), () => true)) {
          const other = Option.getOrThrow(parseMember(existing.value.data))
          return yield* new DuplicateNode({ service, name: record.name, other: formatAddress(other), session: existing.value.stat.ephemeralOwner })
        }
        yield* zk.remove(path, existing.value.stat.version).pipe(goneAlready)
      }
      yield* zk.ensurePath(paths.members)
      yield* zk.create(path, encodeMember(record), "ephemeral").pipe(
        Effect.catchTag("ZkNodeExists", () => zk.set(path, encodeMember(record), -1))
      )
    }),
  removeMember: (name: string) =>
    Effect.gen(function* () {
      const existing = yield* zk.get(paths.member(name))
      const session = yield* SubscriptionRef.get(zk.session)
      if (Option.isSome(existing) && existing.value.stat.ephemeralOwner === session.sessionId) {
        yield* zk.remove(paths.member(name), existing.value.stat.version).pipe(goneAlready)
      }
    })
})

/**
 * At start, before anything watches or writes: a member record under this node's name owned by
 * another session is either this node's previous run (its session not expired yet: same Redis
 * address, replaced when the record is written) or another node under the same name. A record at
 * another address may still be a previous run with another address: it is given the session
 * timeout to expire; then the start is refused.
 */
const claimName = (zk: Zk, paths: ServicePaths, service: string, self: { readonly name: string } & RedisAddress, sessionTimeoutMs: number) =>
  Effect.gen(function* () {
    const path = paths.member(self.name)
    const now = Effect.clockWith((c) => c.currentTimeMillis)
    const since = yield* now
    let said = false
    for (;;) {
      const node = yield* zk.get(path).pipe(Effect.retry(reconnectSchedule), Effect.orDie)
      const session = yield* SubscriptionRef.get(zk.session)
      if (Option.isNone(node) || node.value.stat.ephemeralOwner === session.sessionId) return
      if (Option.getOrElse(leftByUs(node.value, self), () => true)) return
      const other = Option.getOrThrow(parseMember(node.value.data))
      const duplicate = new DuplicateNode({ service, name: self.name, other: formatAddress(other), session: node.value.stat.ephemeralOwner })
      const limit = (session.timeoutMs ?? sessionTimeoutMs) + 2000
      if ((yield* now) - since >= limit) return yield* duplicate
      if (!said) {
        said = true
        yield* Effect.logWarning(`${duplicate.message}; waiting up to ${limit} ms in case it is this node's previous run, whose session has not expired yet`)
      }
      yield* Effect.sleep("250 millis")
    }
  })

/** The operator's controls under the service's control path: maintenance and switchover requests. */
const watchControls = (zk: Zk, paths: ServicePaths) =>
  Effect.gen(function* () {
    const maintenance = yield* SubscriptionRef.make(false)
    yield* supervised("maintenance-watch")(
      zk.watchData(paths.maintenance).pipe(Stream.runForEach((node) => SubscriptionRef.set(maintenance, Option.isSome(node))))
    )
    const switchover = yield* SubscriptionRef.make<Option.Option<PendingSwitchover>>(Option.none())
    yield* supervised("switchover-watch")(
      zk.watchData(paths.switchover).pipe(
        Stream.runForEach((node) =>
          SubscriptionRef.set(
            switchover,
            Option.map(node, (n) => ({ request: parseSwitchoverRequest(n.data), raw: new TextDecoder().decode(n.data), version: n.stat.version }))
          )
        )
      )
    )
    const finishSwitchover: StoreService["finishSwitchover"] = (pending, result) =>
      Effect.gen(function* () {
        const data = encodeSwitchoverResult(result)
        const existing = yield* zk.get(paths.switchoverResult)
        const record = Option.isSome(existing)
          ? ({ op: "set", path: paths.switchoverResult, data, version: existing.value.stat.version } as const)
          : ({ op: "create", path: paths.switchoverResult, data, mode: "persistent" } as const)
        yield* zk.transaction([{ op: "remove", path: paths.switchover, version: pending.version }, record])
      })
    return { maintenance, switchover, finishSwitchover }
  })

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const zk = yield* ZooKeeper
  const paths = servicePaths(config.svc_name)
  // The service's persistent path, before anything watches or writes under it.
  yield* zk.ensurePath(paths.service).pipe(
    Effect.tapError((e) => Effect.logWarning(`cannot create ${paths.service} (${e.message}); retrying with backoff`)),
    Effect.retry(reconnectSchedule),
    Effect.orDie // the schedule never ends
  )
  yield* claimName(zk, paths, config.svc_name, config.node, config.zk_session_timeout_ms)
  const { lastMaster, master } = yield* watchMaster(zk, paths, config.zk_session_timeout_ms)
  const { departed, largestMembership, lastMasterRecordOf, members } = yield* watchMembers(zk, paths)
  yield* followOwnership(zk, master)
  const controls = yield* watchControls(zk, paths)
  const readMaster = Effect.flatMap(zk.get(paths.master), viewOf(zk, paths))
  return {
    session: zk.session,
    master,
    lastMaster: Ref.get(lastMaster),
    members,
    largestMembership,
    lastMasterRecordOf,
    departed,
    createMaster: createMaster(zk, paths),
    readMaster,
    refreshMaster: Effect.tap(readMaster, (view) => SubscriptionRef.set(master, view)),
    rereadMaster: Effect.zipRight(zk.sync(paths.master), Effect.tap(readMaster, (view) => SubscriptionRef.set(master, view))),
    removeMaster: removeMaster(zk, paths),
    confirmOwnership: confirmOwnership(zk, paths),
    checkOwnership: checkOwnership(zk, paths),
    handOver: handOver(zk, paths),
    handover: Effect.map(zk.get(paths.handover), Option.flatMap((n) => parseHandover(n.data))),
    ...memberWrites(zk, paths, config.svc_name),
    ...controls
  } satisfies StoreService
})

export const layer = Layer.scoped(Store, make)
