/**
 * The ZooKeeper driver over node-zookeeper-client: one session at a time, rebuilt after expiry.
 * The contract it implements (model, errors, watch streams) is in ZooKeeper.ts.
 */
import { Deferred, Duration, Effect, Fiber, Layer, Option, Scope, SubscriptionRef } from "effect"
import zookeeper from "node-zookeeper-client"
import { reconnectSchedule } from "./Retry.js"
import {
  type CreateMode,
  type SessionInfo,
  type SessionStatus,
  serviceOf,
  type WatchPrimitives,
  ZkBadVersion,
  ZkConnectionLost,
  ZkError,
  type ZkFailure,
  ZkNoNode,
  ZkNodeExists,
  type ZkNode,
  ZkSessionExpired,
  type ZkStat,
  ZooKeeper,
  type ZooKeeperService
} from "./ZooKeeper.js"

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

