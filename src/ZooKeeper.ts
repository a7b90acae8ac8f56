/**
 * The ZooKeeper service: one session at a time, rebuilt after expiry, with typed errors and
 * watches modelled as streams that re-arm themselves.
 */
import {
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Option,
  Scope,
  Stream,
  SubscriptionRef
} from "effect"
import zookeeper from "node-zookeeper-client"
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
  /** Clock millis at which `status` was entered. */
  readonly since: number
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
 * stalls while ZooKeeper is away instead of failing its reader.
 */
export const watchStream = <A>(
  prims: WatchPrimitives,
  kind: "data" | "children",
  path: string,
  same: (a: A, b: A) => boolean
): Stream.Stream<A> =>
  Stream.suspend(() => {
    let pending: { readonly fired: Deferred.Deferred<void>; readonly generation: number } | undefined
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
      Effect.tapError(() => Effect.sync(() => void (pending = undefined))),
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

// ---------------------------------------------------------------------------------------------
// Real implementation (node-zookeeper-client)

export interface ZooKeeperOptions {
  /** Host list; a host without a port means 2181. */
  readonly hosts: ReadonlyArray<string>
  readonly sessionTimeout: Duration.DurationInput
  /** How long one connection attempt may take before it is retried. */
  readonly connectTimeout: Duration.DurationInput
  /** Upper bound of one request; past it the request counts as a lost connection. */
  readonly requestTimeout: Duration.DurationInput
}

export const connectionString = (hosts: ReadonlyArray<string>): string =>
  hosts.map((h) => (/:\d+$/.test(h) ? h : `${h}:2181`)).join(",")

const modeCode = (mode: CreateMode): number =>
  ({
    persistent: zookeeper.CreateMode.PERSISTENT,
    ephemeral: zookeeper.CreateMode.EPHEMERAL,
    persistent_sequential: zookeeper.CreateMode.PERSISTENT_SEQUENTIAL,
    ephemeral_sequential: zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL
  })[mode]

const toStat = (stat: zookeeper.Stat): ZkStat => ({
  version: stat.version,
  czxid: stat.czxid.readBigUInt64BE(0).toString(),
  mzxid: stat.mzxid.readBigUInt64BE(0).toString(),
  ephemeralOwner: stat.ephemeralOwner.readBigUInt64BE(0).toString(16)
})

const errorCode = (error: unknown): number | undefined =>
  typeof error === "object" && error !== null && "getCode" in error && typeof error.getCode === "function"
    ? (error.getCode() as number)
    : undefined

const toFailure = (op: string, path: string, error: unknown): ZkFailure | ZkNoNode | ZkNodeExists => {
  const code = errorCode(error)
  const E = zookeeper.Exception
  switch (code) {
    case E.NO_NODE:
      return new ZkNoNode({ path })
    case E.NODE_EXISTS:
      return new ZkNodeExists({ path })
    case E.CONNECTION_LOSS:
    case E.OPERATION_TIMEOUT:
      return new ZkConnectionLost({ op, path })
    case E.SESSION_EXPIRED:
      return new ZkSessionExpired({ op, path })
    default:
      return new ZkError({ op, path, reason: error instanceof Error ? error.message : String(error) })
  }
}

const isBadVersion = (error: unknown) => errorCode(error) === zookeeper.Exception.BAD_VERSION

const sessionHex = (client: zookeeper.Client): string => client.getSessionId().toString("hex").replace(/^0+/, "") || "0"

export const make = (options: ZooKeeperOptions) =>
  Effect.gen(function* () {
    const connectString = connectionString(options.hosts)
    const sessionTimeoutMs = Duration.toMillis(options.sessionTimeout)
    const connectTimeout = Duration.decode(options.connectTimeout)
    const requestTimeout = Duration.decode(options.requestTimeout)
    const scope = yield* Effect.scope
    const now = Effect.clockWith((c) => c.currentTimeMillis)
    const session = yield* SubscriptionRef.make<SessionInfo>({
      status: "connecting",
      sessionId: null,
      generation: 0,
      since: yield* now
    })
    let client: zookeeper.Client | undefined
    // Completed when the current session expires; replaced with every new session.
    let expiredSignal = yield* Deferred.make<void>()

    const publish = (status: SessionStatus, c: zookeeper.Client, newGeneration: boolean) =>
      Effect.flatMap(now, (since) =>
        SubscriptionRef.update(session, (s) => ({
          status,
          sessionId: status === "expired" ? s.sessionId : sessionHex(c),
          generation: newGeneration ? s.generation + 1 : s.generation,
          since
        }))
      )

    /** One connection attempt: resolves when the session is established, or fails after connectTimeout. */
    const connectOnce = (attempt: number) =>
      Effect.async<zookeeper.Client, ZkConnectionLost>((resume) => {
        const c = zookeeper.createClient(connectString, {
          sessionTimeout: sessionTimeoutMs,
          spinDelay: 200,
          retries: 0
        })
        const onState = (state: zookeeper.State) => {
          if (state === zookeeper.State.SYNC_CONNECTED || state === zookeeper.State.CONNECTED_READ_ONLY) {
            c.removeListener("state", onState)
            resume(Effect.succeed(c))
          }
        }
        c.on("state", onState)
        c.connect()
        return Effect.sync(() => {
          c.removeListener("state", onState)
          c.close()
        })
      }).pipe(
        Effect.timeoutFail({
          duration: connectTimeout,
          onTimeout: () => new ZkConnectionLost({ op: "connect", path: connectString })
        }),
        Effect.tapError(() =>
          Effect.logWarning(`ZooKeeper ${connectString} unreachable (attempt ${attempt}); retrying with backoff`)
        )
      )

    const connectWithRetry = Effect.gen(function* () {
      yield* Effect.logInfo(`connecting to ZooKeeper ${connectString}`)
      let attempt = 0
      const c = yield* Effect.suspend(() => connectOnce(++attempt)).pipe(
        Effect.retry(reconnectSchedule),
        Effect.orDie
      )
      const fresh = yield* Deferred.make<void>()
      expiredSignal = fresh
      c.on("state", (state: zookeeper.State) => {
        const effect =
          state === zookeeper.State.SYNC_CONNECTED || state === zookeeper.State.CONNECTED_READ_ONLY
            ? publish("connected", c, false)
            : state === zookeeper.State.DISCONNECTED
              ? publish("disconnected", c, false)
              : state === zookeeper.State.EXPIRED
                ? Effect.zipRight(publish("expired", c, false), Deferred.succeed(fresh, undefined))
                : Effect.void
        Effect.runFork(effect)
      })
      client = c
      yield* publish("connected", c, true)
      yield* Effect.logInfo(
        `ZooKeeper session 0x${sessionHex(c)} established (timeout ${c.getSessionTimeout()} ms) via ${connectString}`
      )
    })

    yield* connectWithRetry
    // Rebuilds the session after expiry: the old client is dead for good once expired.
    const sessionLoop = Effect.gen(function* () {
      yield* Deferred.await(expiredSignal)
      yield* Effect.logWarning("ZooKeeper session expired: everything it owned is gone; opening a new session")
      client?.close()
      yield* connectWithRetry
    }).pipe(Effect.forever, Effect.annotateLogs({ loop: "zk-session" }))
    const loopFiber = yield* Effect.forkIn(sessionLoop, scope)
    yield* Scope.addFinalizer(
      scope,
      Effect.zipRight(
        Fiber.interrupt(loopFiber),
        Effect.sync(() => client?.close())
      )
    )

    const request = <A, E>(
      op: string,
      path: string,
      run: (c: zookeeper.Client, cb: (error: unknown, value?: A) => void) => void,
      mapError: (error: unknown) => E
    ): Effect.Effect<A, E | ZkConnectionLost> =>
      Effect.async<A, E>((resume) => {
        const c = client!
        run(c, (error, value) => (error ? resume(Effect.fail(mapError(error))) : resume(Effect.succeed(value as A))))
      }).pipe(
        Effect.timeoutFail({
          duration: requestTimeout,
          onTimeout: () => new ZkConnectionLost({ op, path })
        })
      )

    type Common = ZkFailure
    const create: ZooKeeperService["create"] = (path, data, mode) =>
      request<string, Common | ZkNoNode | ZkNodeExists>(
        "create",
        path,
        (c, cb) => c.create(path, Buffer.from(data), modeCode(mode), cb),
        (e) => toFailure("create", path, e)
      )

    const ensurePath: ZooKeeperService["ensurePath"] = (path) =>
      request<string, Common | ZkNoNode | ZkNodeExists>(
        "mkdirp",
        path,
        (c, cb) => c.mkdirp(path, cb),
        (e) => toFailure("mkdirp", path, e)
      ).pipe(
        Effect.asVoid,
        Effect.catchTags({ ZkNodeExists: () => Effect.void, ZkNoNode: () => ensurePath(path) })
      )

    const get: ZooKeeperService["get"] = (path) =>
      request<ZkNode, Common | ZkNoNode | ZkNodeExists>(
        "get",
        path,
        (c, cb) =>
          c.getData(path, (e, data, stat) =>
            cb(e, e ? undefined : { data: new Uint8Array(data ?? Buffer.alloc(0)), stat: toStat(stat) })
          ),
        (e) => toFailure("get", path, e)
      ).pipe(
        Effect.map(Option.some),
        Effect.catchTag("ZkNoNode", () => Effect.succeedNone),
        Effect.catchTag("ZkNodeExists", (e) => Effect.fail(new ZkError({ op: "get", path, reason: e.message })))
      )

    const set: ZooKeeperService["set"] = (path, data, version) =>
      request<ZkStat, Common | ZkNoNode | ZkBadVersion>(
        "set",
        path,
        (c, cb) => c.setData(path, Buffer.from(data), version, (e, stat) => cb(e, e ? undefined : toStat(stat))),
        (e) =>
          isBadVersion(e)
            ? new ZkBadVersion({ path, version })
            : (toFailure("set", path, e) as Common | ZkNoNode)
      )

    const remove: ZooKeeperService["remove"] = (path, version) =>
      request<void, Common | ZkNoNode | ZkBadVersion>(
        "remove",
        path,
        (c, cb) => c.remove(path, version, (e) => cb(e)),
        (e) =>
          isBadVersion(e)
            ? new ZkBadVersion({ path, version })
            : (toFailure("remove", path, e) as Common | ZkNoNode)
      )

    const children: ZooKeeperService["children"] = (path) =>
      request<ReadonlyArray<string>, Common | ZkNoNode | ZkNodeExists>(
        "children",
        path,
        (c, cb) => c.getChildren(path, (e, kids) => cb(e, e ? undefined : [...kids].sort())),
        (e) => toFailure("children", path, e)
      ).pipe(
        Effect.catchTag("ZkNoNode", () => Effect.succeed([] as ReadonlyArray<string>)),
        Effect.catchTag("ZkNodeExists", (e) => Effect.fail(new ZkError({ op: "children", path, reason: e.message })))
      )

    const transaction: ZooKeeperService["transaction"] = (ops) =>
      request<void, Common | ZkNoNode | ZkNodeExists | ZkBadVersion>(
        "multi",
        ops.map((o) => `${o.op} ${o.path}`).join(", "),
        (c, cb) => {
          let tx = c.transaction()
          for (const o of ops) {
            tx =
              o.op === "create"
                ? tx.create(o.path, Buffer.from(o.data), modeCode(o.mode))
                : o.op === "set"
                  ? tx.setData(o.path, Buffer.from(o.data), o.version)
                  : o.op === "check"
                    ? tx.check(o.path, o.version)
                    : tx.remove(o.path, o.version)
          }
          tx.commit((e) => cb(e))
        },
        (e) =>
          isBadVersion(e)
            ? new ZkBadVersion({ path: ops.map((o) => o.path).join(", "), version: -1 })
            : toFailure("multi", ops.map((o) => o.path).join(", "), e)
      )

    const prims: WatchPrimitives = {
      session,
      readAndArm: <A>(kind: "data" | "children", path: string, onChange: () => void) =>
        kind === "data"
          ? (request<Option.Option<ZkNode>, Common | ZkNoNode | ZkNodeExists>(
              "watch",
              path,
              // exists() leaves a watch whether or not the node is there; getData() then reads it.
              (c, cb) =>
                c.exists(path, () => onChange(), (e, stat) => {
                  if (e) return cb(e)
                  if (!stat) return cb(null, Option.none())
                  c.getData(path, (e2, data, stat2) => {
                    if (e2 && errorCode(e2) === zookeeper.Exception.NO_NODE) return cb(null, Option.none())
                    if (e2) return cb(e2)
                    cb(null, Option.some({ data: new Uint8Array(data ?? Buffer.alloc(0)), stat: toStat(stat2) }))
                  })
                }),
              (e) => toFailure("watch", path, e)
            ) as unknown as Effect.Effect<A, ZkFailure>)
          : (request<ReadonlyArray<string>, Common | ZkNoNode | ZkNodeExists>(
              "watch-children",
              path,
              (c, cb) =>
                c.exists(path, () => onChange(), (e, stat) => {
                  if (e) return cb(e)
                  if (!stat) return cb(null, [])
                  c.getChildren(path, () => onChange(), (e2, kids) => {
                    if (e2 && errorCode(e2) === zookeeper.Exception.NO_NODE) return cb(null, [])
                    if (e2) return cb(e2)
                    cb(null, [...kids].sort())
                  })
                }),
              (e) => toFailure("watch-children", path, e)
            ) as unknown as Effect.Effect<A, ZkFailure>)
    }

    return serviceOf({ create, ensurePath, get, set, remove, transaction, children }, prims)
  })

export const layer = (options: ZooKeeperOptions): Layer.Layer<ZooKeeper> => Layer.scoped(ZooKeeper, make(options))

/** Parent paths of a znode, outermost first; used by implementations of ensurePath. */
export const ancestors = (path: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (let p = path; p !== "/"; p = parentOf(p)) out.unshift(p)
  return out
}
