/**
 * The ZooKeeper driver over node-zookeeper-client: one session at a time, rebuilt after expiry,
 * with its own liveness check (DESIGN.md invariant 8). The contract it implements (model, errors,
 * watch streams) is in ZooKeeper.ts.
 *
 * Pieces, in order: options and codecs; connecting; the liveness loop; request plumbing; the
 * service. The library internals it reaches are in ZooKeeperInternals.ts, the session state
 * machine and the liveness timings (pure) in ZooKeeperSession.ts.
 */
import { Deferred, Duration, Effect, Fiber, Layer, Option, Redacted, Ref, Runtime, Scope, SubscriptionRef } from "effect"
import * as dns from "node:dns"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import zookeeper from "node-zookeeper-client"
import { reconnectSchedule } from "./Retry.js"
import { connectionManagerOf, currentServer, dropConnection, harden, withExactVersion } from "./ZooKeeperInternals.js"
import { type DriverEvent, livenessFor, nextSession } from "./ZooKeeperSession.js"
import {
  ancestors,
  type CreateMode,
  type SessionInfo,
  serviceOf,
  type TxOp,
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
// Options and codecs

export interface ZooKeeperOptions {
  /** Host list; a host without a port means 2181. */
  readonly hosts: ReadonlyArray<string>
  readonly sessionTimeout: Duration.DurationInput
  /** How long one connection attempt may take before it is retried. */
  readonly connectTimeout: Duration.DurationInput
  /** Upper bound of one request; past it the request counts as a lost connection. */
  readonly requestTimeout: Duration.DurationInput
  /**
   * Longest silence of the server before the connection counts as lost, when shorter than a
   * third of the session timeout: the node's `fence_after_ms`, so that a master cut off without
   * a reset is fenced on time, not a third of a session later.
   */
  readonly silenceLimit?: Duration.DurationInput
  /**
   * Credentials every session adds (`digest`, `user:password`). With them, every znode created
   * gets `creator all` + `world read` instead of the open ACL; without them, the open ACL.
   */
  readonly auth?: { readonly scheme: string; readonly user: string; readonly auth: Redacted.Redacted<string> }
  /**
   * A path prefix (`/teams/payments`) the sessions are rooted at: the library's `host:port/chroot`
   * connection string. The prefix itself is created first, with the same ACLs, by a session
   * without the chroot.
   */
  readonly chroot?: string
}

/** world:anyone may do anything: the original's ACL, kept without zk_auth. */
const OPEN_ACL = [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id("world", "anyone"))]

/** The ACLs of every znode created: open without credentials, `creator all` + `world read` with. */
export const aclsFor = (auth: boolean): Array<zookeeper.ACL> =>
  auth
    ? [
        new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id("auth", "")),
        new zookeeper.ACL(zookeeper.Permission.READ, new zookeeper.Id("world", "anyone"))
      ]
    : OPEN_ACL

/**
 * The ACLs of the parents of a chroot (`/teams` of `/teams/payments`): other teams may create
 * their own prefix beside ours (world create) but not delete or change ours.
 */
const chrootParentAcls = (auth: boolean): Array<zookeeper.ACL> =>
  auth
    ? [
        new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id("auth", "")),
        new zookeeper.ACL(zookeeper.Permission.READ | zookeeper.Permission.CREATE, new zookeeper.Id("world", "anyone"))
      ]
    : OPEN_ACL

/** Why ZooKeeper refused a request for want of rights, and what to fix. */
export const NO_AUTH_REASON =
  "NoAuth: the znode's ACL does not grant these credentials; every dictator of a service needs the same zk_auth user and password (was the znode made by another user or program?)"

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
    case E.NO_AUTH:
      return new ZkError({ op, path, reason: NO_AUTH_REASON })
    case E.AUTH_FAILED:
      return new ZkError({ op, path, reason: "AUTH_FAILED: the server refused the session's credentials; check zk_auth" })
    case E.INVALID_ACL:
      return new ZkError({ op, path, reason: "InvalidACL: the server refused the ACL (a `creator all` ACL needs an authenticated session; check zk_auth)" })
    default:
      return new ZkError({ op, path, reason: error instanceof Error ? error.message : String(error) })
  }
}

const isBadVersion = (error: unknown) => errorCode(error) === zookeeper.Exception.BAD_VERSION

/** Errors the client makes up itself: they are not an answer from the server. */
const isLocalError = (error: unknown) => {
  const code = errorCode(error)
  return code === zookeeper.Exception.CONNECTION_LOSS || code === zookeeper.Exception.OPERATION_TIMEOUT
}

const sessionHex = (client: zookeeper.Client): string => client.getSessionId().toString("hex").replace(/^0+/, "") || "0"

/** Milliseconds on a clock that never jumps (liveness must not trust the wall clock). */
const monotonicMs = (): number => performance.now()

// ---------------------------------------------------------------------------------------------
// Connecting

/** Why a server cannot be reached, for the "unreachable" log line. */
const diagnoseServer = (server: string, timeoutMs: number): Effect.Effect<string> =>
  Effect.async<string>((resume) => {
    const i = server.lastIndexOf(":")
    const host = server.slice(0, i)
    const port = Number(server.slice(i + 1))
    const socket = net.connect({ host, port, lookup: dns.lookup })
    const done = (why: string) => {
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed(`${server} ${why}`))
    }
    const timer = setTimeout(() => done(`timed out after ${timeoutMs} ms`), timeoutMs)
    socket.once("connect", () => done("accepts TCP but gave no ZooKeeper handshake (frozen, or not ZooKeeper?)"))
    socket.once("error", (e: NodeJS.ErrnoException) =>
      done(
        e.code === "ECONNREFUSED"
          ? "refused the connection"
          : e.code === "ENOTFOUND" || e.code === "EAI_AGAIN"
            ? `has no address (DNS ${e.code})`
            : `failed (${e.code ?? e.message})`
      )
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })

/** The server refused the credentials of a new session (AUTH_FAILED): not a lost connection. */
class AuthRefused {
  readonly _tag = "AuthRefused"
}

/** Where to connect: the servers (for diagnosis), the chroot, and the credentials to add. */
interface Target {
  readonly hosts: string
  readonly chroot: string | undefined
  readonly auth: ZooKeeperOptions["auth"]
}

const describeTarget = (t: Target) => `${t.hosts}${t.chroot ?? ""}`

/**
 * One connection attempt: resolves with a connected client, or fails after connectTimeout. With
 * credentials, the client adds them before connecting (the library re-sends them on every
 * reconnection of this client) and the attempt succeeds only once a request behind them was
 * answered: the server answers the auth packet before it, or closes with AUTH_FAILED.
 */
const connectOnce = (d: Driver, target: Target, sessionTimeoutMs: number, connectTimeout: Duration.Duration, attempt: number) =>
  Effect.async<zookeeper.Client, ZkConnectionLost | AuthRefused>((resume) => {
    const connectString = `${target.hosts}${target.chroot ?? ""}`
    const c = zookeeper.createClient(connectString, { sessionTimeout: sessionTimeoutMs, spinDelay: 200, retries: 0 })
    if (target.auth !== undefined) c.addAuthInfo(target.auth.scheme, Buffer.from(Redacted.value(target.auth.auth), "utf8"))
    harden(c, (e) =>
      d.run(
        Effect.logWarning(
          `ZooKeeper reply from ${currentServer(c) ?? connectString} could not be read (${e instanceof Error ? e.message : String(e)}): dropping the connection to start afresh`
        )
      )
    )
    let done = false
    const onState = (state: zookeeper.State) => {
      if (done) return
      if (state === zookeeper.State.AUTH_FAILED) {
        done = true
        c.removeListener("state", onState)
        c.close()
        resume(Effect.fail(new AuthRefused()))
      } else if (state === zookeeper.State.SYNC_CONNECTED || state === zookeeper.State.CONNECTED_READ_ONLY) {
        if (target.auth === undefined) {
          done = true
          c.removeListener("state", onState)
          return resume(Effect.succeed(c))
        }
        // Answered in order after the auth packet: an answer means the credentials were taken.
        // Any answer but a lost connection will do (NoNode too: a chroot removed meanwhile).
        c.exists("/", (e) => {
          if (done || isLocalError(e) || errorCode(e) === zookeeper.Exception.AUTH_FAILED) return
          done = true
          c.removeListener("state", onState)
          resume(Effect.succeed(c))
        })
      }
    }
    c.on("state", onState)
    c.connect()
    return Effect.sync(() => {
      c.removeListener("state", onState)
      c.close()
    })
  }).pipe(
    Effect.timeoutFail({ duration: connectTimeout, onTimeout: () => new ZkConnectionLost({ op: "connect", path: describeTarget(target) }) }),
    Effect.tapErrorTag("AuthRefused", () =>
      Effect.logError(
        `ZooKeeper ${describeTarget(target)} refused the credentials of zk_auth (scheme ${target.auth?.scheme ?? "?"}, user ${JSON.stringify(target.auth?.user ?? "")}): AUTH_FAILED (attempt ${attempt}); fix zk_auth or the servers' authProvider settings; retrying with backoff`
      )
    ),
    Effect.tapErrorTag("ZkConnectionLost", () =>
      // Bounded so a slow resolver cannot hold the retries back for long.
      Effect.forEach(target.hosts.split(","), (s) => diagnoseServer(s, Math.min(2000, Math.max(500, Duration.toMillis(connectTimeout)))), {
        concurrency: "unbounded"
      }).pipe(
        Effect.flatMap((why) =>
          Effect.logWarning(`ZooKeeper ${describeTarget(target)} unreachable (attempt ${attempt}): ${why.join("; ")}; retrying with backoff`)
        )
      )
    )
  )

// ---------------------------------------------------------------------------------------------
// The driver

/** The live client of the current session, with what the liveness loop needs to know about it. */
interface Connection {
  readonly client: zookeeper.Client
  readonly generation: number
  readonly timeoutMs: number
  /** Completed when this session expires. */
  readonly expired: Deferred.Deferred<void>
  /** Monotonic ms of the last answer from a server (any reply, or the handshake). */
  lastAnswer: number
  /**
   * Monotonic ms at which the last request the quorum answered was sent (a write or a sync that
   * succeeded, the session handshake): the quorum was there at some point after it. The clock
   * of the quorum-backed probe; the send time, not the reply's, so it never claims too much.
   */
  lastQuorumAnswer: number
  /** Monotonic ms since which the library is trying to reconnect; undefined while connected. */
  reconnectingSince: number | undefined
  /** The socket of the reconnection attempt in progress and when the liveness loop first saw it. */
  handshake: { readonly socket: object; readonly since: number } | undefined
}

interface Driver {
  readonly session: SubscriptionRef.SubscriptionRef<SessionInfo>
  /** The probe in use: quorum-backed (the master's) or a local read. Read from library callbacks too. */
  readonly probe: { quorum: boolean }
  readonly current: Ref.Ref<Connection | undefined>
  readonly publish: (e: DriverEvent) => Effect.Effect<void>
  /** Wall-clock millis of a monotonic instant, for `since`. */
  readonly wallOf: (mono: number) => Effect.Effect<number>
  /** Runs an effect from a library callback with the layer's runtime (its logger, its clock). */
  readonly run: (effect: Effect.Effect<void>) => void
}

const makeDriverState = Effect.gen(function* () {
  const session = yield* SubscriptionRef.make<SessionInfo>({
    status: "connecting",
    sessionId: null,
    generation: 0,
    since: yield* Effect.clockWith((c) => c.currentTimeMillis)
  })
  const current = yield* Ref.make<Connection | undefined>(undefined)
  const runtime = yield* Effect.runtime<never>()
  const lock = yield* Effect.makeSemaphore(1)
  const driver: Driver = {
    run: (effect) => void Runtime.runFork(runtime)(effect),
    session,
    probe: { quorum: false },
    current,
    // Only a change is published (SubscriptionRef publishes every set, even of the same value):
    // subscribers see each state once. The lock orders events that arrive from several fibers.
    publish: (e) =>
      lock.withPermits(1)(
        Effect.flatMap(SubscriptionRef.get(session), (s) => {
          const next = nextSession(s, e)
          return next === s ? Effect.void : SubscriptionRef.set(session, next)
        })
      ),
    wallOf: (mono) => Effect.clockWith((c) => Effect.map(c.currentTimeMillis, (now) => Math.round(now - (monotonicMs() - mono))))
  }
  return driver
})

/** The answer the liveness check and the fencing clock go by: the quorum's in quorum mode. */
const livenessClock = (d: Driver, conn: Connection): number => (d.probe.quorum ? conn.lastQuorumAnswer : conn.lastAnswer)

/**
 * Follows the library's state events of one client. They arrive from its callbacks, outside
 * any fiber; each becomes a driver event of this connection's generation, so a late event of a
 * replaced client changes nothing.
 */
const followClientState = (d: Driver, conn: Connection) => {
  const run = d.run
  const onState = (state: zookeeper.State) => {
    const now = monotonicMs()
    if (state === zookeeper.State.SYNC_CONNECTED || state === zookeeper.State.CONNECTED_READ_ONLY) {
      const away = conn.reconnectingSince === undefined ? 0 : Math.round(now - conn.reconnectingSince)
      conn.lastAnswer = now
      // A session re-attached through a follower was revalidated by the leader; either way the
      // quorum-backed probe gets a full deadline on the new server before it must answer.
      conn.lastQuorumAnswer = now
      conn.reconnectingSince = undefined
      run(
        Effect.zipRight(
          Effect.flatMap(d.wallOf(now), (at) => d.publish({ _tag: "Resumed", generation: conn.generation, at })),
          Effect.logInfo(
            `ZooKeeper session 0x${sessionHex(conn.client)} recovered via ${currentServer(conn.client) ?? "?"} after ${away} ms without a server`
          )
        )
      )
    } else if (state === zookeeper.State.DISCONNECTED) {
      conn.reconnectingSince ??= now
      run(Effect.flatMap(d.wallOf(livenessClock(d, conn)), (lastAnswerAt) => d.publish({ _tag: "Lost", generation: conn.generation, lastAnswerAt })))
    } else if (state === zookeeper.State.EXPIRED || state === zookeeper.State.AUTH_FAILED) {
      // AUTH_FAILED on a reconnection: the library closes the client for good, so the session is
      // as lost as an expired one; the session loop opens a new one (and logs why it cannot).
      run(
        Effect.flatMap(d.wallOf(now), (at) => d.publish({ _tag: "Expired", generation: conn.generation, at })).pipe(
          Effect.zipRight(Deferred.succeed(conn.expired, undefined))
        )
      )
    }
  }
  conn.client.on("state", onState)
  return () => void conn.client.removeListener("state", onState)
}

/** Runs one request of a bare client (the chroot's creation), as a callback turned into an effect. */
const call = <A>(what: string, path: string, run: (cb: (error: unknown, value?: A) => void) => void) =>
  Effect.async<A | undefined, ZkFailure | ZkNoNode | ZkNodeExists>((resume) =>
    run((error, value) => resume(error ? Effect.fail(toFailure(what, path, error)) : Effect.succeed(value)))
  )

/**
 * Creates the chroot and its parents if missing, with a session that is not rooted there (a
 * rooted one cannot see above its root): the chroot gets the ACLs of every created znode, its
 * parents also let other teams create their own prefix beside it. Retried with backoff; a refusal
 * (NoAuth on a parent made by someone else) is logged once per reason.
 */
const ensureChroot = (d: Driver, options: ZooKeeperOptions, hosts: string, chroot: string) =>
  Effect.gen(function* () {
    const sessionTimeoutMs = Duration.toMillis(options.sessionTimeout)
    const connectTimeout = Duration.decode(options.connectTimeout)
    const auth = options.auth !== undefined
    let attempt = 0
    let lastReason: string | undefined
    const once = Effect.scoped(
      Effect.gen(function* () {
        const c = yield* Effect.acquireRelease(
          connectOnce(d, { hosts, chroot: undefined, auth: options.auth }, sessionTimeoutMs, connectTimeout, ++attempt),
          (c) => Effect.sync(() => c.close())
        )
        for (const path of ancestors(chroot)) {
          const acls = path === chroot ? aclsFor(auth) : chrootParentAcls(auth)
          yield* call<string>("create", path, (cb) => c.create(path, Buffer.alloc(0), acls, zookeeper.CreateMode.PERSISTENT, cb)).pipe(
            Effect.catchTag("ZkNodeExists", () => Effect.void)
          )
        }
      })
    ).pipe(
      Effect.timeoutFail({ duration: Duration.times(connectTimeout, 2), onTimeout: () => new ZkConnectionLost({ op: "create", path: chroot }) }),
      Effect.tapError((e) =>
        e._tag === "AuthRefused" || e.message === lastReason
          ? Effect.void
          : Effect.zipRight(
              Effect.sync(() => void (lastReason = e.message)),
              Effect.logWarning(`cannot create the zk_chroot ${chroot} on ZooKeeper ${hosts} (${e.message}); retrying with backoff`)
            )
      )
    )
    yield* Effect.retry(once, reconnectSchedule).pipe(Effect.orDie)
  })

/** Opens a new session (retrying with backoff) and makes it the current connection. */
const establish = (d: Driver, target: Target, options: ZooKeeperOptions) =>
  Effect.gen(function* () {
    const sessionTimeoutMs = Duration.toMillis(options.sessionTimeout)
    const connectTimeout = Duration.decode(options.connectTimeout)
    if (target.chroot !== undefined) yield* ensureChroot(d, options, target.hosts, target.chroot)
    yield* Effect.logInfo(
      `connecting to ZooKeeper ${describeTarget(target)}${target.auth === undefined ? "" : ` as ${target.auth.scheme} user ${JSON.stringify(target.auth.user)}`}`
    )
    let attempt = 0
    const client = yield* Effect.suspend(() => connectOnce(d, target, sessionTimeoutMs, connectTimeout, ++attempt)).pipe(
      Effect.retry(reconnectSchedule),
      Effect.orDie
    )
    const previous = yield* SubscriptionRef.get(d.session)
    const connectedAt = monotonicMs()
    const conn: Connection = {
      client,
      generation: previous.generation + 1,
      timeoutMs: client.getSessionTimeout(),
      expired: yield* Deferred.make<void>(),
      lastAnswer: connectedAt,
      // A new session is created through the leader, with a quorum.
      lastQuorumAnswer: connectedAt,
      reconnectingSince: undefined,
      handshake: undefined
    }
    const detach = followClientState(d, conn)
    yield* Ref.set(d.current, conn)
    yield* d.publish({ _tag: "Established", sessionId: sessionHex(client), timeoutMs: conn.timeoutMs, at: yield* d.wallOf(conn.lastAnswer) })
    yield* Effect.logInfo(
      `ZooKeeper session 0x${sessionHex(client)} established (negotiated timeout ${conn.timeoutMs} ms) via ${currentServer(client) ?? target.hosts}`
    )
    return { conn, detach }
  })

/**
 * The session lifecycle: establish, watch the connection until the session expires, then drop
 * the dead client (its listeners first, so its late events cannot touch the next session) and
 * start again. Runs for the life of the scope.
 */
const sessionLoop = (d: Driver, target: Target, options: ZooKeeperOptions, first: { conn: Connection; detach: () => void }) =>
  Effect.gen(function* () {
    let live = first
    for (;;) {
      const limit = options.silenceLimit === undefined ? undefined : Duration.toMillis(options.silenceLimit)
      yield* Effect.raceFirst(Deferred.await(live.conn.expired), livenessLoop(d, live.conn, limit))
      yield* Effect.logWarning("ZooKeeper session expired: everything it owned is gone; opening a new session")
      live.detach()
      live.conn.client.close()
      live = yield* establish(d, target, options)
    }
  }).pipe(Effect.annotateLogs({ loop: "zk-session" }))

/**
 * Client-side liveness (DESIGN.md invariant 8): node-zookeeper-client keeps a socket to a frozen
 * or silently partitioned server "connected" forever. While connected, probe when nothing else
 * answered for `probeEveryMs`; when no answer came for `deadlineMs`, report the session lost as
 * of the last answer and drop the connection so the library moves to the next server. While the
 * library reconnects, a handshake that hangs past the deadline (a frozen server still accepts
 * TCP) is dropped too. Never ends; the session loop interrupts it on expiry.
 *
 * In quorum mode (`quorumProbe(true)`, the master's) only answers the quorum stands behind count
 * (`lastQuorumAnswer`) and the probe is one: a server cut off from its quorum that still answers
 * reads locally is dropped like a silent one, within the same deadline.
 */
const livenessLoop = (d: Driver, conn: Connection, silenceLimitMs: number | undefined) => {
  const { probeEveryMs, deadlineMs } = livenessFor(conn.timeoutMs, silenceLimitMs)
  const sleepMs = Math.max(20, Math.floor(probeEveryMs / 4))
  // Lateness past which this process itself was not running (frozen with its host, starved):
  // its own pause is no evidence against the server, whose answer may be unread in the socket.
  const stallMs = Math.max(100, Math.floor(probeEveryMs / 2))
  let lastTickEnd = monotonicMs()
  const tick = Effect.gen(function* () {
    const now = monotonicMs()
    const stalled = now - lastTickEnd > sleepMs + stallMs
    if (conn.reconnectingSince !== undefined) return yield* watchHandshake(conn, deadlineMs, now)
    const quorum = d.probe.quorum
    const last = livenessClock(d, conn)
    if (now - last < probeEveryMs) return
    const ask = quorum ? quorumProbe : probe
    // After a stall of our own, the server gets a fresh probe period to answer.
    let heard = yield* ask(conn, Math.max(deadlineMs - (now - last), stalled ? probeEveryMs : 0))
    if (!heard && monotonicMs() - now > Math.max(deadlineMs - (now - last), 0) + stallMs) {
      // The wait itself overran (timers run before pending reads when a paused process resumes).
      heard = yield* ask(conn, probeEveryMs)
    }
    if (heard) return
    const lastNow = livenessClock(d, conn)
    const silentFor = monotonicMs() - lastNow
    const server = currentServer(conn.client) ?? "server"
    yield* d.publish({ _tag: "Lost", generation: conn.generation, lastAnswerAt: yield* d.wallOf(lastNow) })
    yield* Effect.logWarning(
      quorum
        ? `ZooKeeper ${server} gave no quorum-backed answer for ${Math.round(silentFor)} ms (deadline ${deadlineMs} ms of a ${conn.timeoutMs} ms session; cut off from its quorum, or silent): dropping the connection to move to another server`
        : `ZooKeeper ${server} silent for ${Math.round(silentFor)} ms (deadline ${deadlineMs} ms of a ${conn.timeoutMs} ms session): dropping the connection to move to another server`
    )
    conn.reconnectingSince = monotonicMs()
    dropConnection(conn.client)
  })
  return tick.pipe(
    // A failed tick must not end the only guard against a silent server: log it, tick again.
    Effect.catchAllCause((cause) => Effect.logError("ZooKeeper liveness check failed; checking again", cause)),
    Effect.zipRight(Effect.sync(() => void (lastTickEnd = monotonicMs()))),
    Effect.zipRight(Effect.sleep(Duration.millis(sleepMs))),
    Effect.forever,
    Effect.annotateLogs({ loop: "zk-liveness" })
  )
}

/**
 * While the library reconnects: a socket that reached a server (a frozen one still accepts TCP)
 * but got no handshake within the deadline is dropped, so the library tries the next server.
 * Dialling itself has the library's own connect timeout.
 */
const watchHandshake = (conn: Connection, deadlineMs: number, now: number) =>
  Effect.suspend(() => {
    const server = currentServer(conn.client)
    const socket = connectionManagerOf(conn.client).socket
    if (server === undefined || socket === undefined) return Effect.void
    if (conn.handshake?.socket !== socket) {
      conn.handshake = { socket, since: now }
      return Effect.void
    }
    if (now - conn.handshake.since <= deadlineMs) return Effect.void
    dropConnection(conn.client)
    return Effect.logWarning(`ZooKeeper ${server} accepted the connection but gave no handshake within ${deadlineMs} ms; trying the next server`)
  })

/**
 * Asks the server something cheap (exists "/") and waits at most `budgetMs`. True when the
 * server answered (which refreshed `lastAnswer`), or when the library failed the probe with a
 * lost connection itself (its DISCONNECTED event covers that); false after `budgetMs` of silence.
 */
const probe = (conn: Connection, budgetMs: number): Effect.Effect<boolean> =>
  Effect.async<void>((resume) => {
    conn.client.exists("/", (e) => {
      if (!isLocalError(e)) conn.lastAnswer = monotonicMs()
      resume(Effect.void)
    })
  }).pipe(Effect.timeoutOption(Duration.millis(Math.max(0, budgetMs))), Effect.map(Option.isSome))

/**
 * The quorum-backed probe: a multi holding one `check` of "/" at any version (it always succeeds
 * and changes nothing), which a follower forwards to the leader and the leader commits only with
 * a quorum — ZooKeeper's own `sync` would not do: a leader cut off from its quorum answers it
 * until it notices (and node-zookeeper-client cannot parse its reply). True when the quorum
 * answered (which moves `lastQuorumAnswer` to the send time), or when the library failed it with
 * a lost connection itself (its DISCONNECTED event covers that); false after `budgetMs` without
 * a quorum-backed answer, or when the server refused it (it answers, but not for the quorum).
 */
const quorumProbe = (conn: Connection, budgetMs: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const sentAt = monotonicMs()
    conn.client
      .transaction()
      .check("/", -1)
      .commit((e) => {
        if (!e) conn.lastQuorumAnswer = Math.max(conn.lastQuorumAnswer, sentAt)
        if (!isLocalError(e)) conn.lastAnswer = monotonicMs()
        resume(Effect.succeed(!e || isLocalError(e)))
      })
  }).pipe(Effect.timeoutTo({ duration: Duration.millis(Math.max(0, budgetMs)), onTimeout: () => false, onSuccess: (heard) => heard }))

// ---------------------------------------------------------------------------------------------
// Requests

type Request = <A, E>(
  op: string,
  path: string,
  run: (c: zookeeper.Client, cb: (error: unknown, value?: A) => void) => void,
  mapError: (error: unknown) => E
) => Effect.Effect<A, E | ZkConnectionLost>

/** Requests a server applies only through the leader and a quorum, when they succeed. */
const quorumOps: ReadonlySet<string> = new Set(["create", "mkdirp", "set", "remove", "multi", "sync"])

/**
 * Sends a request on the current client; any reply from the server counts as an answer, a
 * successful write (or sync) as one from the quorum too, as of when it was sent.
 */
const requestOn = (d: Driver, requestTimeout: Duration.Duration): Request => <A, E>(op: string, path: string, run: Parameters<Request>[2], mapError: (error: unknown) => E) =>
  Effect.flatMap(Ref.get(d.current), (conn) =>
    Effect.async<A, E>((resume) => {
      const sentAt = monotonicMs()
      run(conn!.client, (error, value) => {
        if (!isLocalError(error)) conn!.lastAnswer = monotonicMs()
        if (!error && quorumOps.has(op)) conn!.lastQuorumAnswer = Math.max(conn!.lastQuorumAnswer, sentAt)
        resume(error ? Effect.fail(mapError(error)) : Effect.succeed(value as A))
      })
    })
  ).pipe(Effect.timeoutFail({ duration: requestTimeout, onTimeout: () => new ZkConnectionLost({ op, path }) }))

const addOp = (acls: Array<zookeeper.ACL>) => (tx: zookeeper.Transaction, o: TxOp): zookeeper.Transaction =>
  o.op === "create"
    ? tx.create(o.path, Buffer.from(o.data), acls, modeCode(o.mode))
    : o.op === "set"
      ? withExactVersion(tx.setData(o.path, Buffer.from(o.data), o.version), o.version)
      : o.op === "check"
        ? withExactVersion(tx.check(o.path, o.version), o.version)
        : withExactVersion(tx.remove(o.path, o.version), o.version)

const readNode = (c: zookeeper.Client, path: string, cb: (error: unknown, value?: Option.Option<ZkNode>) => void) =>
  c.getData(path, (e, data, stat) => {
    if (e && errorCode(e) === zookeeper.Exception.NO_NODE) return cb(null, Option.none())
    if (e) return cb(e)
    cb(null, Option.some({ data: new Uint8Array(data ?? Buffer.alloc(0)), stat: toStat(stat) }))
  })

/** Switches the liveness probe; one log line per change. */
const setQuorumProbe = (d: Driver) => (on: boolean): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (d.probe.quorum === on) return Effect.void
    d.probe.quorum = on
    return Effect.logInfo(
      on
        ? "ZooKeeper liveness probe: through the quorum (this node holds the master znode)"
        : "ZooKeeper liveness probe: a local read (this node does not hold the master znode)"
    )
  })

/** The requests of the service over `request`; every znode created gets `acls`. */
const requests = (request: Request, acls: Array<zookeeper.ACL>): Omit<ZooKeeperService, "session" | "watchData" | "watchChildren" | "quorumProbe"> => {
  type Common = ZkFailure
  const versioned = (op: string, path: string, version: number) => (e: unknown) =>
    isBadVersion(e) ? new ZkBadVersion({ path, version }) : (toFailure(op, path, e) as Common | ZkNoNode)
  const noExists = (op: string, path: string) => (e: ZkNodeExists) => Effect.fail(new ZkError({ op, path, reason: e.message }))

  // A path that exists is left alone: creating an existing znode needs CREATE on its parent,
  // which a session with other credentials lacks (NoAuth) even though there is nothing to do.
  const ensurePath: ZooKeeperService["ensurePath"] = (path) =>
    request<boolean, Common | ZkNoNode | ZkNodeExists>("exists", path, (c, cb) => c.exists(path, (e, stat) => cb(e, !!stat)), (e) =>
      toFailure("exists", path, e)
    ).pipe(
      Effect.flatMap((exists) =>
        exists
          ? Effect.void
          : request<string, Common | ZkNoNode | ZkNodeExists>("mkdirp", path, (c, cb) => c.mkdirp(path, acls, cb), (e) => toFailure("mkdirp", path, e))
      ),
      Effect.asVoid,
      Effect.catchTags({ ZkNodeExists: () => Effect.void, ZkNoNode: () => ensurePath(path) })
    )

  return {
    create: (path, data, mode) =>
      request<string, Common | ZkNoNode | ZkNodeExists>(
        "create",
        path,
        (c, cb) => c.create(path, Buffer.from(data), acls, modeCode(mode), cb),
        (e) => toFailure("create", path, e)
      ),
    ensurePath,
    get: (path) =>
      request<Option.Option<ZkNode>, Common | ZkNoNode | ZkNodeExists>("get", path, (c, cb) => readNode(c, path, cb), (e) => toFailure("get", path, e)).pipe(
        Effect.catchTag("ZkNoNode", () => Effect.succeedNone),
        Effect.catchTag("ZkNodeExists", noExists("get", path))
      ),
    set: (path, data, version) =>
      request<ZkStat, Common | ZkNoNode | ZkBadVersion>(
        "set",
        path,
        (c, cb) => c.setData(path, Buffer.from(data), version, (e, stat) => cb(e, e ? undefined : toStat(stat))),
        versioned("set", path, version)
      ),
    remove: (path, version) =>
      request<void, Common | ZkNoNode | ZkBadVersion>("remove", path, (c, cb) => c.remove(path, version, (e) => cb(e)), versioned("remove", path, version)),
    children: (path) =>
      request<ReadonlyArray<string>, Common | ZkNoNode | ZkNodeExists>(
        "children",
        path,
        (c, cb) => c.getChildren(path, (e, kids) => cb(e, e ? undefined : [...kids].sort())),
        (e) => toFailure("children", path, e)
      ).pipe(
        Effect.catchTag("ZkNoNode", () => Effect.succeed([] as ReadonlyArray<string>)),
        Effect.catchTag("ZkNodeExists", noExists("children", path))
      ),
    transaction: (ops) => {
      const paths = ops.map((o) => o.path).join(", ")
      return request<void, Common | ZkNoNode | ZkNodeExists | ZkBadVersion>(
        "multi",
        ops.map((o) => `${o.op} ${o.path}`).join(", "),
        (c, cb) => ops.reduce(addOp(acls), c.transaction()).commit((e) => cb(e)),
        (e) => (isBadVersion(e) ? new ZkBadVersion({ path: paths, version: -1 }) : toFailure("multi", paths, e))
      )
    },
    sync: (path) =>
      // node-zookeeper-client has no SYNC (its response parser drops the connection on opcode 9).
      // A multi goes through the leader and the quorum like any write, and the server answers us
      // only once it has applied it, in order: every read after it sees all that was committed
      // before it, which is what sync-then-read gives. A lone `check` of "/" at any version
      // always succeeds and changes nothing.
      request<void, Common | ZkNoNode | ZkNodeExists>("sync", path, (c, cb) => c.transaction().check("/", -1).commit((e) => cb(e)), (e) =>
        toFailure("sync", path, e)
      ).pipe(Effect.catchTags({ ZkNoNode: (e) => Effect.fail(new ZkError({ op: "sync", path, reason: e.message })), ZkNodeExists: noExists("sync", path) }))
  }
}

/** Reads and arms one-shot watches: an exists-watch on the path, plus a child watch for children. */
const watchPrimitives = (d: Driver, request: Request): WatchPrimitives => ({
  session: d.session,
  readAndArm: <A>(kind: "data" | "children", path: string, onChange: () => void) =>
    (kind === "data"
      ? request<Option.Option<ZkNode>, ZkFailure | ZkNoNode | ZkNodeExists>(
          "watch",
          path,
          // exists() leaves a watch whether or not the node is there; getData() then reads it.
          (c, cb) =>
            c.exists(path, () => onChange(), (e, stat) => {
              if (e) return cb(e)
              if (!stat) return cb(null, Option.none())
              readNode(c, path, cb)
            }),
          (e) => toFailure("watch", path, e)
        )
      : request<ReadonlyArray<string>, ZkFailure | ZkNoNode | ZkNodeExists>(
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
        )) as unknown as Effect.Effect<A, ZkFailure>
})

export const make = (options: ZooKeeperOptions) =>
  Effect.gen(function* () {
    const target: Target = { hosts: connectionString(options.hosts), chroot: options.chroot, auth: options.auth }
    const scope = yield* Effect.scope
    const d = yield* makeDriverState
    const first = yield* establish(d, target, options)
    const loop = yield* Effect.forkIn(sessionLoop(d, target, options, first), scope)
    yield* Scope.addFinalizer(
      scope,
      Effect.zipRight(
        Fiber.interrupt(loop),
        Effect.flatMap(Ref.get(d.current), (conn) => Effect.sync(() => conn?.client.close()))
      )
    )
    const request = requestOn(d, Duration.decode(options.requestTimeout))
    return serviceOf({ ...requests(request, aclsFor(options.auth !== undefined)), quorumProbe: setQuorumProbe(d) }, watchPrimitives(d, request))
  })

export const layer = (options: ZooKeeperOptions): Layer.Layer<ZooKeeper> => Layer.scoped(ZooKeeper, make(options))
