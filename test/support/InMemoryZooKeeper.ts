/**
 * An in-memory ZooKeeper ensemble for tests: one shared tree, any number of client sessions,
 * and controls to disconnect, reconnect and expire them. Everything is synchronous under the
 * hood (no latency, no timers), so tests driven by TestClock are deterministic; only the
 * production watch streams (which retry with backoff) ever need the clock to move.
 *
 * Semantics follow src/ZooKeeper.ts and the server it talks to:
 * - znodes have a version, a czxid (decimal string of a global zxid bumped by every write) and
 *   an ephemeralOwner (hex session id, "0" for persistent nodes);
 * - sequential names get the parent's cversion as a 10-digit suffix, like ZooKeeper;
 * - watches are one-shot and fire after the mutation that triggers them;
 * - while a client is disconnected its requests fail at once with ZkConnectionLost (the real
 *   client fails them too, after its request timeout), its session and ephemerals live on, and
 *   the events of its armed watches are held and delivered when it reconnects (what the real
 *   client gets from SetWatches on reconnection).
 */
import { Clock, Context, Effect, Either, Layer, Option, Scope, SubscriptionRef } from "effect"
import { parentOf } from "../../src/Paths.js"
import type { CreateMode, SessionInfo, SessionStatus, ZkNode, ZkStat, ZooKeeperService } from "../../src/ZooKeeper.js"
import {
  ancestors,
  type WatchPrimitives,
  serviceOf,
  ZkBadVersion,
  ZkConnectionLost,
  ZkError,
  ZkNodeExists,
  ZkNoNode,
  ZooKeeper
} from "../../src/ZooKeeper.js"

// ---------------------------------------------------------------------------------------------
// Model

interface Znode {
  data: Uint8Array
  version: number
  readonly czxid: bigint
  /** Zxid of the last data change (the creation at first). */
  mzxid: bigint
  /** "0" for persistent nodes. */
  readonly ephemeralOwner: string
  /** Bumped on every child creation and deletion: the source of sequence numbers. */
  cversion: number
  readonly children: Set<string>
}

interface Client {
  readonly session: SubscriptionRef.SubscriptionRef<SessionInfo>
  /** Server-side id of the current session (kept after expiry until the client learns of it). */
  sessionId: string
  /** Whether the client can reach the ensemble. */
  connected: boolean
  /** The scope that owned the client is closed: it never comes back. */
  closed: boolean
  /** The server expired the session while the client was away; it learns on reconnection. */
  expiredWhileAway: boolean
  /** Watch events that fired while disconnected, delivered on reconnection. */
  held: Array<() => void>
  /** The liveness probe the node asked for (`quorumProbe`); one shared tree has no other behaviour. */
  quorumProbe: boolean
}

/** A write in progress: its zxid, and the watch events to deliver if it commits. */
interface Tx {
  readonly zxid: bigint
  readonly events: Array<readonly ["data" | "children", string]>
}

interface Watch {
  readonly client: Client
  /** The session that armed it: a watch dies with its session. */
  readonly sessionId: string
  readonly trigger: () => void
}

/** A node as seen by `dump`: data decoded as UTF-8 for readable assertions. */
export interface ZnodeSnapshot {
  readonly path: string
  readonly data: string
  readonly stat: ZkStat
}

/** A client to act on: the service `session()` returned, or a hex session id (e.g. an ephemeralOwner). */
export type SessionHandle = ZooKeeperService | string

const utf8 = new TextDecoder()

/** The real client's error text, so ZkError reasons read the same in tests and production. */
const zkException = (name: string, code: number, path: string) => `Exception: ${name}[${code}]@${path}`

// ---------------------------------------------------------------------------------------------
// Ensemble

export class ZkEnsemble {
  static readonly make: Effect.Effect<ZkEnsemble> = Effect.sync(() => new ZkEnsemble())

  /**
   * The session timeout every session reports as negotiated (`SessionInfo.timeoutMs`). Expiry
   * itself stays under the test's control (`expire`); this is what a node reads to check its
   * fencing timing against. Set it before opening sessions.
   */
  sessionTimeoutMs = 6000

  private readonly nodes = new Map<string, Znode>()
  private readonly dataWatches = new Map<string, Set<Watch>>()
  private readonly childWatches = new Map<string, Set<Watch>>()
  private readonly clients = new Map<ZooKeeperService, Client>()
  private zxid = 0n
  private sessionCounter = 0n

  constructor() {
    const root: Znode = { data: new Uint8Array(), version: 0, czxid: 0n, mzxid: 0n, ephemeralOwner: "0", cversion: 0, children: new Set() }
    this.nodes.set("/", root)
  }

  // -------------------------------------------------------------------------------------------
  // Inspection (synchronous: the tree never depends on time)

  /** The node at `path` as a client would read it. */
  get(path: string): Option.Option<ZkNode> {
    const n = this.nodes.get(path)
    return n === undefined ? Option.none() : Option.some({ data: n.data.slice(), stat: statOf(n) })
  }

  /** Sorted child names; empty when `path` does not exist. */
  children(path: string): ReadonlyArray<string> {
    return [...(this.nodes.get(path)?.children ?? [])].sort()
  }

  /** Every znode but the root, sorted by path. */
  dump(): ReadonlyArray<ZnodeSnapshot> {
    return [...this.nodes.entries()]
      .filter(([path]) => path !== "/")
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([path, n]) => ({ path, data: utf8.decode(n.data), stat: statOf(n) }))
  }

  /** Paths of the ephemeral nodes owned by a session. */
  ephemeralsOf(sessionId: string): ReadonlyArray<string> {
    return this.dump()
      .filter((n) => n.stat.ephemeralOwner === sessionId)
      .map((n) => n.path)
  }

  /** Armed one-shot watches on `path` (to check that nothing leaks). */
  watchCount(path: string): { readonly data: number; readonly children: number } {
    return { data: this.dataWatches.get(path)?.size ?? 0, children: this.childWatches.get(path)?.size ?? 0 }
  }

  /** Whether a client asked for the quorum-backed liveness probe (the master's). */
  quorumProbeOf(handle: SessionHandle): boolean {
    return this.client(handle).quorumProbe
  }

  /** Current server-side session id of a client. */
  sessionIdOf(handle: SessionHandle): string {
    return this.client(handle).sessionId
  }

  // -------------------------------------------------------------------------------------------
  // Sessions

  /**
   * A client with a brand-new session (connected, generation 1). Closing the scope closes the
   * client: its session ends and its ephemerals go, unless it is disconnected at that moment —
   * then, as with a real client that cannot reach the ensemble, they stay until `expire`.
   */
  session(): Effect.Effect<ZooKeeperService, never, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.gen(this, function* () {
        const sessionId = this.newSessionId()
        const session = yield* SubscriptionRef.make<SessionInfo>({
          status: "connected",
          sessionId,
          generation: 1,
          since: yield* Clock.currentTimeMillis,
          timeoutMs: this.sessionTimeoutMs
        })
        const client: Client = {
          session,
          sessionId,
          connected: true,
          closed: false,
          expiredWhileAway: false,
          held: [],
          quorumProbe: false
        }
        const service = this.serviceFor(client)
        this.clients.set(service, client)
        return service
      }),
      (service) =>
        Effect.sync(() => {
          const client = this.clients.get(service)!
          client.closed = true
          client.held = []
          if (client.connected) this.endSession(client.sessionId)
        })
    )
  }

  /** The client loses its connection: status "disconnected", requests fail with ZkConnectionLost. */
  disconnect(handle: SessionHandle): Effect.Effect<void> {
    return Effect.suspend(() => {
      const client = this.client(handle)
      if (client.closed || !client.connected) return Effect.void
      client.connected = false
      return this.publish(client, "disconnected", false)
    })
  }

  /**
   * The client reaches the ensemble again: the same session ("connected", same generation) and the
   * watch events held meanwhile — or, if the session expired while it was away, "expired" then a
   * new session, as the real layer does.
   */
  reconnect(handle: SessionHandle): Effect.Effect<void> {
    return Effect.suspend(() => {
      const client = this.client(handle)
      if (client.closed || client.connected) return Effect.void
      client.connected = true
      if (client.expiredWhileAway) {
        client.expiredWhileAway = false
        return this.renewSession(client)
      }
      const held = client.held
      client.held = []
      return Effect.zipRight(this.publish(client, "connected", false), Effect.sync(() => held.forEach((f) => f())))
    })
  }

  /**
   * The ensemble expires the session: its ephemerals are deleted (other sessions' watches fire)
   * and its watches are gone. A connected client then sees "expired" followed by a new session
   * ("connected", generation + 1, new id); a disconnected one only learns on `reconnect`.
   */
  expire(handle: SessionHandle): Effect.Effect<void> {
    return Effect.suspend(() => {
      const client = this.clientOrUndefined(handle)
      if (client === undefined) {
        // A session id no live client owns (e.g. a closed client's, left behind by a partition).
        if (typeof handle === "string") this.endSession(handle)
        return Effect.void
      }
      if (client.expiredWhileAway) return Effect.void
      this.endSession(client.sessionId)
      client.held = []
      if (client.closed) return Effect.void
      if (!client.connected) {
        client.expiredWhileAway = true
        return Effect.void
      }
      return this.renewSession(client)
    })
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private newSessionId(): string {
    // Shaped like a real one (server id in the top byte), hex without leading zeros like src/.
    this.sessionCounter += 1n
    return ((1n << 56n) + this.sessionCounter).toString(16)
  }

  private clientOrUndefined(handle: SessionHandle): Client | undefined {
    if (typeof handle !== "string") return this.clients.get(handle)
    for (const c of this.clients.values()) if (c.sessionId === handle && !c.closed) return c
    return undefined
  }

  private client(handle: SessionHandle): Client {
    const c = this.clientOrUndefined(handle)
    if (c === undefined) throw new Error(`ZkEnsemble: unknown session ${typeof handle === "string" ? handle : "service"}`)
    return c
  }

  private publish(client: Client, status: SessionStatus, newSession: boolean): Effect.Effect<void> {
    return Effect.flatMap(Clock.currentTimeMillis, (since) =>
      SubscriptionRef.update(client.session, (s) => ({
        status,
        sessionId: client.sessionId,
        generation: newSession ? s.generation + 1 : s.generation,
        since,
        timeoutMs: this.sessionTimeoutMs
      }))
    )
  }

  /** "expired" (old id), then a new session: what the real layer publishes after an expiry. */
  private renewSession(client: Client): Effect.Effect<void> {
    return Effect.zipRight(
      this.publish(client, "expired", false),
      Effect.suspend(() => {
        client.sessionId = this.newSessionId()
        return this.publish(client, "connected", true)
      })
    )
  }

  /** Server side of a session's end: its watches vanish, its ephemerals are deleted. */
  private endSession(sessionId: string): void {
    for (const table of [this.dataWatches, this.childWatches]) {
      for (const [path, watches] of table) {
        for (const w of watches) if (w.sessionId === sessionId) watches.delete(w)
        if (watches.size === 0) table.delete(path)
      }
    }
    const owned = [...this.nodes.entries()].filter(([, n]) => n.ephemeralOwner === sessionId).map(([p]) => p)
    if (owned.length === 0) return
    // closeSession is one transaction; ephemerals have no children, so any order works.
    const tx = this.begin()
    for (const path of owned) this.deleteNode(tx, path)
    this.commit(tx)
  }

  // -------------------------------------------------------------------------------------------
  // Writes. Each runs in a transaction: one zxid for all its ops (a multi is one ZooKeeper
  // transaction, so the nodes it creates share a czxid), and watch events delivered only once
  // it commits.

  private begin(): Tx {
    return { zxid: this.zxid + 1n, events: [] }
  }

  private commit(tx: Tx): void {
    this.zxid = tx.zxid
    const fired: Array<Watch> = []
    for (const [kind, path] of tx.events) {
      const table = kind === "data" ? this.dataWatches : this.childWatches
      const watches = table.get(path)
      if (watches === undefined) continue
      table.delete(path) // one-shot
      fired.push(...watches)
    }
    // A watch armed for several paths of one transaction (exists + children) fires once.
    for (const w of new Set(fired)) {
      const c = w.client
      if (c.closed || c.sessionId !== w.sessionId) continue
      if (c.connected) w.trigger()
      else c.held.push(w.trigger)
    }
  }

  /** Runs `ops` on a copy-on-failure basis: either all apply and commit, or the tree is restored. */
  private atomically<A, E>(ops: (tx: Tx) => Either.Either<A, E>): Either.Either<A, E> {
    const saved = new Map([...this.nodes].map(([p, n]) => [p, { ...n, children: new Set(n.children) }]))
    const tx = this.begin()
    const result = ops(tx)
    if (Either.isRight(result)) this.commit(tx)
    else {
      this.nodes.clear()
      for (const [p, n] of saved) this.nodes.set(p, n)
    }
    return result
  }

  private createNode(
    tx: Tx,
    sessionId: string,
    path: string,
    data: Uint8Array,
    mode: CreateMode
  ): Either.Either<string, ZkNodeExists | ZkNoNode | ZkError> {
    const sequential = mode.endsWith("_sequential")
    // A sequential path may end with "/": the suffix completes it.
    checkPath(sequential && path.endsWith("/") ? `${path}0` : path)
    if (path === "/") return Either.left(new ZkNodeExists({ path }))
    const parentPath = parentOf(sequential && path.endsWith("/") ? `${path}0` : path)
    const parent = this.nodes.get(parentPath)
    if (parent === undefined) return Either.left(new ZkNoNode({ path }))
    if (parent.ephemeralOwner !== "0") {
      return Either.left(new ZkError({ op: "create", path, reason: zkException("NO_CHILDREN_FOR_EPHEMERALS", -108, path) }))
    }
    const actual = sequential ? `${path}${String(parent.cversion).padStart(10, "0")}` : path
    if (this.nodes.has(actual)) return Either.left(new ZkNodeExists({ path: actual }))
    this.nodes.set(actual, {
      data: data.slice(),
      version: 0,
      czxid: tx.zxid,
      mzxid: tx.zxid,
      ephemeralOwner: mode.startsWith("ephemeral") ? sessionId : "0",
      cversion: 0,
      children: new Set()
    })
    parent.children.add(actual.slice(parentPath === "/" ? 1 : parentPath.length + 1))
    parent.cversion += 1
    tx.events.push(["data", actual], ["children", parentPath])
    return Either.right(actual)
  }

  private setNode(tx: Tx, path: string, data: Uint8Array, version: number): Either.Either<ZkStat, ZkNoNode | ZkBadVersion> {
    checkPath(path)
    const n = this.nodes.get(path)
    if (n === undefined) return Either.left(new ZkNoNode({ path }))
    if (version !== -1 && version !== n.version) return Either.left(new ZkBadVersion({ path, version }))
    n.data = data.slice()
    n.version += 1
    n.mzxid = tx.zxid
    tx.events.push(["data", path])
    return Either.right(statOf(n))
  }

  private checkNode(path: string, version: number): Either.Either<void, ZkNoNode | ZkBadVersion> {
    checkPath(path)
    const n = this.nodes.get(path)
    if (n === undefined) return Either.left(new ZkNoNode({ path }))
    if (version !== -1 && version !== n.version) return Either.left(new ZkBadVersion({ path, version }))
    return Either.void
  }

  private removeNode(tx: Tx, path: string, version: number): Either.Either<void, ZkNoNode | ZkBadVersion | ZkError> {
    checkPath(path)
    if (path === "/") return Either.left(new ZkError({ op: "remove", path, reason: zkException("BAD_ARGUMENTS", -8, path) }))
    const n = this.nodes.get(path)
    if (n === undefined) return Either.left(new ZkNoNode({ path }))
    if (version !== -1 && version !== n.version) return Either.left(new ZkBadVersion({ path, version }))
    if (n.children.size > 0) return Either.left(new ZkError({ op: "remove", path, reason: zkException("NOT_EMPTY", -111, path) }))
    this.deleteNode(tx, path)
    return Either.void
  }

  private deleteNode(tx: Tx, path: string): void {
    const parentPath = parentOf(path)
    const parent = this.nodes.get(parentPath)!
    this.nodes.delete(path)
    parent.children.delete(path.slice(path.lastIndexOf("/") + 1))
    parent.cversion += 1
    // NodeDeleted reaches data and child watchers of the node; NodeChildrenChanged the parent's.
    tx.events.push(["data", path], ["children", path], ["children", parentPath])
  }

  private arm(table: Map<string, Set<Watch>>, path: string, client: Client, trigger: () => void): void {
    let set = table.get(path)
    if (set === undefined) table.set(path, (set = new Set()))
    set.add({ client, sessionId: client.sessionId, trigger })
  }

  /** The ZooKeeperService of one client. Every request first checks that the client is connected. */
  private serviceFor(client: Client): ZooKeeperService {
    const request = <A, E>(op: string, path: string, run: () => Either.Either<A, E>) =>
      Effect.suspend((): Effect.Effect<A, E | ZkConnectionLost> =>
        client.closed || !client.connected ? Effect.fail(new ZkConnectionLost({ op, path })) : run()
      )
    const single = <A, E>(op: (tx: Tx) => Either.Either<A, E>) => this.atomically(op)

    const create: ZooKeeperService["create"] = (path, data, mode) =>
      request("create", path, () => single((tx) => this.createNode(tx, client.sessionId, path, data, mode)))

    // Like the real client's mkdirp: each missing component is its own create.
    const ensurePath: ZooKeeperService["ensurePath"] = (path) =>
      request("mkdirp", path, (): Either.Either<void, ZkError> => {
        checkPath(path)
        for (const p of ancestors(path)) {
          if (this.nodes.has(p)) continue
          const created = single((tx) => this.createNode(tx, client.sessionId, p, new Uint8Array(), "persistent"))
          // Only a NO_CHILDREN_FOR_EPHEMERALS can get here: parents come first.
          if (Either.isLeft(created)) {
            const e = created.left
            return Either.left(e._tag === "ZkError" ? e : new ZkError({ op: "mkdirp", path, reason: e.message }))
          }
        }
        return Either.void
      })

    const get: ZooKeeperService["get"] = (path) =>
      request("get", path, () => {
        checkPath(path)
        return Either.right(this.get(path))
      })

    const set: ZooKeeperService["set"] = (path, data, version) =>
      request("set", path, () => single((tx) => this.setNode(tx, path, data, version)))

    const remove: ZooKeeperService["remove"] = (path, version) =>
      request("remove", path, () => single((tx) => this.removeNode(tx, path, version)))

    // Errors carry every path of the multi, as src/ZooKeeper.ts reports them (a failed multi does
    // not tell which op failed there either).
    const transaction: ZooKeeperService["transaction"] = (ops) => {
      const paths = ops.map((o) => o.path).join(", ")
      return request("multi", paths, () =>
        Either.mapLeft(
          this.atomically((tx): Either.Either<void, ZkNodeExists | ZkNoNode | ZkBadVersion | ZkError> => {
            for (const o of ops) {
              const r: Either.Either<unknown, ZkNodeExists | ZkNoNode | ZkBadVersion | ZkError> =
                o.op === "create"
                  ? this.createNode(tx, client.sessionId, o.path, o.data, o.mode)
                  : o.op === "set"
                    ? this.setNode(tx, o.path, o.data, o.version)
                    : o.op === "check"
                      ? this.checkNode(o.path, o.version)
                      : this.removeNode(tx, o.path, o.version)
              if (Either.isLeft(r)) return Either.left(r.left)
            }
            return Either.void
          }),
          (e): ZkNodeExists | ZkNoNode | ZkBadVersion | ZkError =>
            e._tag === "ZkBadVersion"
              ? new ZkBadVersion({ path: paths, version: -1 })
              : e._tag === "ZkNoNode"
                ? new ZkNoNode({ path: paths })
                : e._tag === "ZkNodeExists"
                  ? new ZkNodeExists({ path: paths })
                  : new ZkError({ op: "multi", path: paths, reason: e.reason })
        )
      )
    }

    // One shared tree: every read is already as fresh as the quorum; only a lost connection fails.
    const sync: ZooKeeperService["sync"] = (path) =>
      request("sync", path, () => {
        checkPath(path)
        return Either.void
      })

    const children: ZooKeeperService["children"] = (path) =>
      request("children", path, () => {
        checkPath(path)
        return Either.right(this.children(path))
      })

    // Same shape as the real client's: an exists-watch on the path (create/change/delete), plus a
    // child watch when the node exists (child added/removed). Either firing re-reads.
    const prims: WatchPrimitives = {
      session: client.session,
      readAndArm: <A>(kind: "data" | "children", path: string, onChange: () => void) =>
        request(kind === "data" ? "watch" : "watch-children", path, (): Either.Either<A, never> => {
          checkPath(path)
          this.arm(this.dataWatches, path, client, onChange)
          if (kind === "data") return Either.right(this.get(path) as A)
          if (this.nodes.has(path)) this.arm(this.childWatches, path, client, onChange)
          return Either.right(this.children(path) as A)
        })
    }

    const quorumProbe: ZooKeeperService["quorumProbe"] = (on) => Effect.sync(() => void (client.quorumProbe = on))

    return serviceOf({ create, ensurePath, get, set, remove, transaction, sync, children, quorumProbe }, prims)
  }
}

/** A bad path is a bug of the caller: the real client throws, which Effect turns into a defect. */
const checkPath = (path: string): void => {
  const ok = path === "/" || (path.startsWith("/") && !path.endsWith("/") && !path.includes("//") && !path.includes("\0"))
  if (!ok) throw new Error(`Invalid znode path: ${JSON.stringify(path)}`)
}

const statOf = (n: Znode): ZkStat => ({
  version: n.version,
  czxid: n.czxid.toString(),
  mzxid: n.mzxid.toString(),
  ephemeralOwner: n.ephemeralOwner
})

// ---------------------------------------------------------------------------------------------
// Layers

/** The ensemble behind `layerTest`, for tests that drive it. */
export class TestZooKeeper extends Context.Tag("test/ZkEnsemble")<TestZooKeeper, ZkEnsemble>() {}

/** One client session on `ensemble`, closed with the layer. */
export const layerSession = (ensemble: ZkEnsemble): Layer.Layer<ZooKeeper> =>
  Layer.scoped(ZooKeeper, ensemble.session())

/** A fresh ensemble and one session on it. */
export const layerTest: Layer.Layer<ZooKeeper | TestZooKeeper> = Layer.unwrapEffect(
  Effect.map(ZkEnsemble.make, (ensemble) =>
    Layer.merge(layerSession(ensemble), Layer.succeed(TestZooKeeper, ensemble))
  )
)
