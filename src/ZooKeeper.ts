/**
 * The ZooKeeper contract: the session model, typed errors, the service Tag and the watch streams
 * that re-arm themselves. The node-zookeeper-client driver is in ZooKeeperClient.ts; the
 * in-memory one in test/support/InMemoryZooKeeper.ts. Both build the service with `serviceOf`.
 */
import {
  Context,
  Data,
  Deferred,
  Effect,
  Exit,
  Option,
  Stream,
  SubscriptionRef
} from "effect"
import { parentOf } from "./Paths.js"
import { reconnectSchedule } from "./Retry.js"

// ---------------------------------------------------------------------------------------------
// Model

export type SessionStatus = "connecting" | "connected" | "disconnected" | "expired"

export interface SessionInfo {
  readonly status: SessionStatus
  /** Hex session id of the current session; null before the first connection. */
  readonly sessionId: string | null
  /** Bumped every time a brand-new session is established (first connect, after expiry). */
  readonly generation: number
  /**
   * Clock millis at which `status` was entered. For "disconnected" it is the time of the last
   * answer from a server, not of the detection: a silent server counts as lost from then on
   * (DESIGN.md invariant 8), so a fencing clock measured from `since` starts there.
   */
  readonly since: number
  /**
   * The session timeout the server negotiated (ms), which may differ from the one asked for:
   * the quorum expires the session this long after it last heard from the client. Absent until
   * the first session is established.
   */
  readonly timeoutMs?: number
}

export interface ZkStat {
  readonly version: number
  /** Creation zxid as a decimal string: the epoch of a master znode. */
  readonly czxid: string
  /** Zxid of the last change of the data, as a decimal string. */
  readonly mzxid: string
  /** Hex session id of the owner of an ephemeral node, "0" for persistent nodes. */
  readonly ephemeralOwner: string
}

export interface ZkNode {
  readonly data: Uint8Array
  readonly stat: ZkStat
}

export type CreateMode = "persistent" | "ephemeral" | "persistent_sequential" | "ephemeral_sequential"

/** One operation of an atomic multi-op: all apply, or none. */
export type TxOp =
  | { readonly op: "create"; readonly path: string; readonly data: Uint8Array; readonly mode: CreateMode }
  | { readonly op: "set"; readonly path: string; readonly data: Uint8Array; readonly version: number }
  | { readonly op: "check"; readonly path: string; readonly version: number }
  | { readonly op: "remove"; readonly path: string; readonly version: number }

// ---------------------------------------------------------------------------------------------
// Errors

export class ZkNoNode extends Data.TaggedError("ZkNoNode")<{ readonly path: string }> {
  override get message() {
    return `znode ${this.path} does not exist`
  }
}

export class ZkNodeExists extends Data.TaggedError("ZkNodeExists")<{ readonly path: string }> {
  override get message() {
    return `znode ${this.path} already exists`
  }
}

export class ZkBadVersion extends Data.TaggedError("ZkBadVersion")<{
  readonly path: string
  readonly version: number
}> {
  override get message() {
    return `znode ${this.path} is no longer at version ${this.version}`
  }
}

/** The request may or may not have been applied: the connection went away (or timed out). */
export class ZkConnectionLost extends Data.TaggedError("ZkConnectionLost")<{
  readonly op: string
  readonly path: string
}> {
  override get message() {
    return `ZooKeeper connection lost during ${this.op} ${this.path}`
  }
}

export class ZkSessionExpired extends Data.TaggedError("ZkSessionExpired")<{
  readonly op: string
  readonly path: string
}> {
  override get message() {
    return `ZooKeeper session expired during ${this.op} ${this.path}`
  }
}

export class ZkError extends Data.TaggedError("ZkError")<{
  readonly op: string
  readonly path: string
  readonly reason: string
}> {
  override get message() {
    return `ZooKeeper ${this.op} ${this.path} failed: ${this.reason}`
  }
}

/** Failures any request can meet, whatever it is. */
export type ZkFailure = ZkConnectionLost | ZkSessionExpired | ZkError

// ---------------------------------------------------------------------------------------------
// Service

export interface ZooKeeperService {
  /** Current session state; subscribe to `.changes` to follow it. */
  readonly session: SubscriptionRef.SubscriptionRef<SessionInfo>
  readonly create: (
    path: string,
    data: Uint8Array,
    mode: CreateMode
  ) => Effect.Effect<string, ZkNodeExists | ZkNoNode | ZkFailure>
  /** Creates the persistent parents of `path` and `path` itself; a concurrent creation is fine. */
  readonly ensurePath: (path: string) => Effect.Effect<void, ZkFailure>
  readonly get: (path: string) => Effect.Effect<Option.Option<ZkNode>, ZkFailure>
  readonly set: (
    path: string,
    data: Uint8Array,
    version: number
  ) => Effect.Effect<ZkStat, ZkNoNode | ZkBadVersion | ZkFailure>
  /** `version` -1 removes whatever version is there. */
  readonly remove: (path: string, version: number) => Effect.Effect<void, ZkNoNode | ZkBadVersion | ZkFailure>
  /** Applies every op or none (ZooKeeper multi); fails with the error of the first op that failed. */
  readonly transaction: (
    ops: ReadonlyArray<TxOp>
  ) => Effect.Effect<void, ZkNodeExists | ZkNoNode | ZkBadVersion | ZkFailure>
  /**
   * A barrier for quorum-fresh reads (DESIGN.md invariant 9): completes once the server this
   * client uses has applied everything the quorum committed before the call, so a read issued
   * after it sees at least that. `path` only names the barrier in errors; it covers the whole
   * tree, as ZooKeeper's own sync does.
   */
  readonly sync: (path: string) => Effect.Effect<void, ZkFailure>
  /**
   * Which liveness probe the driver sends when nothing else answered for a probe period
   * (DESIGN.md invariant 8). Off (the default): a local read, which any live server answers,
   * even one cut off from its quorum until it notices (syncLimit × tickTime). On: a request only
   * the leader can answer, and only with a quorum behind it; while none comes, the connection
   * counts as lost from the last one (so a master fences on time) and the driver moves to
   * another server, keeping the session. For the master only: one quorum round trip per probe
   * period. Setting the mode it already has does nothing.
   */
  readonly quorumProbe: (on: boolean) => Effect.Effect<void>
  /** Children of `path`, sorted; empty when `path` does not exist. */
  readonly children: (path: string) => Effect.Effect<ReadonlyArray<string>, ZkFailure>
  /**
   * The node at `path` now and after every change (created, changed, deleted), re-arming the
   * one-shot watch each time and after a new session. Consecutive equal values are dropped.
   * While the connection is down the stream waits; it never fails on a lost connection.
   */
  readonly watchData: (path: string) => Stream.Stream<Option.Option<ZkNode>>
  /** Sorted children of `path` now and after every change, like `watchData`. */
  readonly watchChildren: (path: string) => Stream.Stream<ReadonlyArray<string>>
}

export class ZooKeeper extends Context.Tag("dictator/ZooKeeper")<ZooKeeper, ZooKeeperService>() {}

// ---------------------------------------------------------------------------------------------
// Shared helpers for any implementation (real or in-memory)

/** A client that answers a request with "armed" + a one-shot trigger: what watch streams need. */
export interface WatchPrimitives {
  readonly session: SubscriptionRef.SubscriptionRef<SessionInfo>
  /** Reads the value and arms a one-shot watch that calls `onChange` on the next change. */
  readonly readAndArm: <A>(
    kind: "data" | "children",
    path: string,
    onChange: () => void
  ) => Effect.Effect<A, ZkFailure>
}

const sameNode = (a: Option.Option<ZkNode>, b: Option.Option<ZkNode>): boolean =>
  Option.isNone(a)
    ? Option.isNone(b)
    : Option.isSome(b) &&
      a.value.stat.czxid === b.value.stat.czxid &&
      a.value.stat.version === b.value.stat.version

const sameChildren = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i])

/**
 * Turns "read and arm a one-shot watch" into a stream of values. A re-read happens when the
 * watch fires or when a new session is established (watches of an expired session are gone).
 * Transient failures (connection lost, expired) are retried with backoff: a watch stream
 * stalls while ZooKeeper is away instead of failing its reader. Any other failure (e.g. NoAuth)
 * is retried too, but logged: once when it starts or changes, once when the watch works again.
 */
export const watchStream = <A>(
  prims: WatchPrimitives,
  kind: "data" | "children",
  path: string,
  same: (a: A, b: A) => boolean
): Stream.Stream<A> =>
  Stream.suspend(() => {
    let pending: { readonly fired: Deferred.Deferred<void>; readonly generation: number } | undefined
    let failing: string | undefined
    const noteFailure = (e: ZkFailure) =>
      e._tag === "ZkConnectionLost" || e._tag === "ZkSessionExpired" || e.message === failing
        ? Effect.void
        : Effect.zipRight(
            Effect.sync(() => void (failing = e.message)),
            Effect.logWarning(`watch of ${path} failed: ${e.message}; retrying with backoff until it works`)
          )
    const noteSuccess = Effect.suspend(() =>
      failing === undefined
        ? Effect.void
        : Effect.zipRight(Effect.sync(() => void (failing = undefined)), Effect.logInfo(`watch of ${path} works again`))
    )
    const waitForChange = Effect.suspend(() => {
      if (pending === undefined) return Effect.void
      const { fired, generation } = pending
      const newSession = prims.session.changes.pipe(
        Stream.filter((s) => s.status === "connected" && s.generation !== generation),
        Stream.take(1),
        Stream.runDrain
      )
      return Effect.raceFirst(Deferred.await(fired), newSession)
    })
    const step = Effect.gen(function* () {
      yield* waitForChange
      const fired = yield* Deferred.make<void>()
      const generation = (yield* SubscriptionRef.get(prims.session)).generation
      pending = { fired, generation }
      return yield* prims.readAndArm<A>(kind, path, () => Deferred.unsafeDone(fired, Exit.void))
    }).pipe(
      // A failed read leaves no watch behind: read again without waiting for one.
      Effect.tapError((e) => Effect.zipRight(Effect.sync(() => void (pending = undefined)), noteFailure(e))),
      Effect.tap(() => noteSuccess),
      Effect.retry(reconnectSchedule),
      // The schedule never ends: this only turns the unreachable failure channel into a defect.
      Effect.orDie
    )
    return Stream.repeatEffect(step).pipe(Stream.changesWith(same))
  })

/** The whole service from its requests and its watch primitives (real and in-memory alike). */
export const serviceOf = (
  requests: Omit<ZooKeeperService, "session" | "watchData" | "watchChildren">,
  prims: WatchPrimitives
): ZooKeeperService =>
  ZooKeeper.of({
    ...requests,
    session: prims.session,
    watchData: (path) => watchDataStream(prims, path),
    watchChildren: (path) => watchChildrenStream(prims, path)
  })

export const watchDataStream = (prims: WatchPrimitives, path: string) =>
  watchStream<Option.Option<ZkNode>>(prims, "data", path, sameNode)

export const watchChildrenStream = (prims: WatchPrimitives, path: string) =>
  watchStream<ReadonlyArray<string>>(prims, "children", path, sameChildren)

/** Parent paths of a znode, outermost first; used by implementations of ensurePath. */
export const ancestors = (path: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (let p = path; p !== "/"; p = parentOf(p)) out.unshift(p)
  return out
}
