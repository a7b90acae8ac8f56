/**
 * The service's state in ZooKeeper, in the node's words: the master znode (watched, created,
 * removed epoch-safely), the member records (watched, written), ownership checks. The only
 * module that knows ZooKeeper paths, znode versions and transactions.
 */
import { Context, Effect, FiberMap, Layer, Option, Ref, Stream, type Subscribable, SubscriptionRef } from "effect"
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
  /** Creates the master znode naming `record` and bumps the epoch, atomically; false when another exists. */
  readonly createMaster: (record: MasterRecord, extra: Record<string, unknown>) => Effect.Effect<boolean, ZkFailure | ZkNoNode | ZkBadVersion>
  /** Reads the master znode through the server and publishes it as `master`. */
  readonly refreshMaster: Effect.Effect<MasterView, ZkFailure>
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
  /** Rewrites this node's member record; false when it is not there (a new session must create it). */
  readonly updateMember: (record: MemberRecord) => Effect.Effect<boolean, ZkFailure | ZkBadVersion>
  /** Creates this node's member record in `session`, replacing one left by an older session. */
  readonly createMember: (record: MemberRecord, session: SessionInfo) => Effect.Effect<void, ZkFailure | ZkNodeExists | ZkNoNode | ZkBadVersion>
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

/** The master znode as a SubscriptionRef kept current by a watch; the last present one kept apart. */
const watchMaster = (zk: Zk, paths: ServicePaths) =>
  Effect.gen(function* () {
    const master = yield* SubscriptionRef.make<MasterView | null>(null)
    const lastMaster = yield* Ref.make<PresentMaster | null>(null)
    yield* supervised("master-watch")(
      zk.watchData(paths.master).pipe(
        Stream.mapEffect(viewOf(zk, paths)),
        Stream.runForEach((view) =>
          Effect.gen(function* () {
            if (view._tag === "Malformed") {
              yield* Effect.logError(`master znode ${paths.master} is malformed (${view.reason}): ${JSON.stringify(view.raw)}; not following it`)
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
    const watched = new Set<string>()
    const follow = (names: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const current = new Set(names)
        for (const name of (yield* SubscriptionRef.get(members)).keys()) {
          if (!current.has(name)) yield* setMember(name, Option.none())
        }
        for (const name of [...watched]) {
          if (current.has(name)) continue
          watched.delete(name)
          yield* FiberMap.remove(watchers, name)
        }
        for (const name of names) {
          watched.add(name)
          const watch = zk.watchData(paths.member(name)).pipe(
            Stream.runForEach((node) => setMember(name, Option.flatMap(node, (n) => parseMember(n.data))))
          )
          yield* FiberMap.run(watchers, name, watch, { onlyIfMissing: true })
        }
      })
    yield* supervised("members-watch")(Stream.runForEach(zk.watchChildren(paths.members), follow))
    const largest = yield* Ref.make(0)
    yield* supervised("members-size")(Stream.runForEach(members.changes, (m) => Ref.update(largest, (n) => Math.max(n, m.size))))
    return { members, largestMembership: Ref.get(largest) }
  })

/**
 * Removes the master znode of `view` and never a newer one. The epoch znode's version is checked
 * in the same transaction: a znode's own version starts at 0 again when it is re-created, so it
 * cannot tell "this master" from a newer one. For a master znode made by another program (no
 * epoch), the czxid is checked just before a versioned delete: a narrow race, logged.
 */
const removeMaster = (zk: Zk, paths: ServicePaths): StoreService["removeMaster"] => (view) =>
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
const confirmOwnership = (zk: Zk, paths: ServicePaths) =>
  Effect.gen(function* () {
    yield* zk.sync(paths.master)
    const node = yield* zk.get(paths.master)
    const session = yield* SubscriptionRef.get(zk.session)
    return Option.isSome(node) && session.status === "connected" && node.value.stat.ephemeralOwner === session.sessionId
  }).pipe(Effect.catchAll(() => Effect.succeed(false)))

const memberWrites = (zk: Zk, paths: ServicePaths) => ({
  updateMember: (record: MemberRecord) =>
    zk.set(paths.member(record.name), encodeMember(record), -1).pipe(
      Effect.as(true),
      Effect.catchTag("ZkNoNode", () => Effect.succeed(false))
    ),
  createMember: (record: MemberRecord, session: SessionInfo) =>
    Effect.gen(function* () {
      const path = paths.member(record.name)
      // A new session: our record from an older one may still be there until it expires.
      const existing = yield* zk.get(path)
      if (Option.isSome(existing) && existing.value.stat.ephemeralOwner !== session.sessionId) {
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
  const { lastMaster, master } = yield* watchMaster(zk, paths)
  const { largestMembership, members } = yield* watchMembers(zk, paths)
  const controls = yield* watchControls(zk, paths)
  const readMaster = Effect.flatMap(zk.get(paths.master), viewOf(zk, paths))
  return {
    session: zk.session,
    master,
    lastMaster: Ref.get(lastMaster),
    members,
    largestMembership,
    createMaster: createMaster(zk, paths),
    readMaster,
    refreshMaster: Effect.tap(readMaster, (view) => SubscriptionRef.set(master, view)),
    removeMaster: removeMaster(zk, paths),
    confirmOwnership: confirmOwnership(zk, paths),
    handOver: handOver(zk, paths),
    handover: Effect.map(zk.get(paths.handover), Option.flatMap((n) => parseHandover(n.data))),
    ...memberWrites(zk, paths),
    ...controls
  } satisfies StoreService
})

export const layer = Layer.scoped(Store, make)
