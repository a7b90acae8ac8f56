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
import { Clock, Context, Effect, Layer, Option, Scope, SubscriptionRef } from "effect"
import { parentOf } from "../../src/Paths.js"
import type { CreateMode, SessionInfo, SessionStatus, ZkNode, ZkStat, ZooKeeperService } from "../../src/ZooKeeper.js"
import {
  ancestors,
  type WatchPrimitives,
  watchChildrenStream,
  watchDataStream,
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

const validPath = (path: string): boolean =>
  path === "/" || (path.startsWith("/") && !path.endsWith("/") && !path.includes("//") && !path.includes("\0"))

// ---------------------------------------------------------------------------------------------
// Ensemble

export class ZkEnsemble {
  static readonly make: Effect.Effect<ZkEnsemble> = Effect.sync(() => new ZkEnsemble())

  private readonly nodes = new Map<string, Znode>()
  private readonly dataWatches = new Map<string, Set<Watch>>()
  private readonly childWatches = new Map<string, Set<Watch>>()
  private readonly clients = new Map<ZooKeeperService, Client>()
  private zxid = 0n
  private sessionCounter = 0n

  constructor() {
    this.nodes.set("/", { data: new Uint8Array(), version: 0, czxid: 0n, ephemeralOwner: "0", cversion: 0, children: new Set() })
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
          since: yield* Clock.currentTimeMillis
        })
        const client: Client = {
          session,
          sessionId,
          connected: true,
          closed: false,
          expiredWhileAway: false,
          held: []
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
        since
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
    for (const watches of [...this.dataWatches.values(), ...this.childWatches.values()]) {
      for (const w of watches) if (w.sessionId === sessionId) watches.delete(w)
    }
    const fired: Array<Watch> = []
    const owned = [...this.nodes.entries()].filter(([, n]) => n.ephemeralOwner === sessionId).map(([p]) => p)
    if (owned.length > 0) this.zxid += 1n // closeSession is one transaction
    for (const path of owned) this.deleteNode(path, fired)
    this.fire(fired)
  }

  private takeWatches(table: Map<string, Set<Watch>>, path: string, into: Array<Watch>): void {
    const set = table.get(path)
    if (set === undefined) return
    table.delete(path) // one-shot
    into.push(...set)
  }

  /** Delivers triggered watches, after the mutation is complete. */
  private fire(watches: ReadonlyArray<Watch>): void {
    for (const w of watches) {
      const c = w.client
      if (c.closed || c.sessionId !== w.sessionId) continue
      if (c.connected) w.trigger()
      else c.held.push(w.trigger)
    }
  }

  private deleteNode(path: string, fired: Array<Watch>): void {
    const parentPath = parentOf(path)
    const parent = this.nodes.get(parentPath)!
    this.nodes.delete(path)
    parent.children.delete(path.slice(path.lastIndexOf("/") + 1))
    parent.cversion += 1
    // NodeDeleted reaches data and child watchers of the node; NodeChildrenChanged the parent's.
    this.takeWatches(this.dataWatches, path, fired)
    this.takeWatches(this.childWatches, path, fired)
    this.takeWatches(this.childWatches, parentPath, fired)
  }

  private arm(table: Map<string, Set<Watch>>, path: string, client: Client, trigger: () => void): void {
    let set = table.get(path)
    if (set === undefined) table.set(path, (set = new Set()))
    set.add({ client, sessionId: client.sessionId, trigger })
  }

  /** The ZooKeeperService of one client. Every request first checks that the client is connected. */
  private serviceFor(client: Client): ZooKeeperService {
    const request = <A, E>(op: string, path: string, run: () => Effect.Effect<A, E>) =>
      Effect.suspend((): Effect.Effect<A, E | ZkConnectionLost> => {
        if (!validPath(path)) return Effect.dieMessage(`Invalid znode path: ${JSON.stringify(path)}`)
        if (client.closed || !client.connected) return Effect.fail(new ZkConnectionLost({ op, path }))
        return run()
      })

    const create: ZooKeeperService["create"] = (path, data, mode) =>
      Effect.suspend(() => {
        // A sequential path may end with "/": the suffix completes it.
        const checked = mode.endsWith("_sequential") && path.endsWith("/") ? `${path}x` : path
        return request("create", checked, () => this.createNode(client, path, data, mode))
      })

    const ensurePath: ZooKeeperService["ensurePath"] = (path) =>
      request("mkdirp", path, () =>
        Effect.forEach(
          ancestors(path),
          (p) =>
            this.nodes.has(p)
              ? Effect.void
              : this.createNode(client, p, new Uint8Array(), "persistent").pipe(
                  Effect.catchTag("ZkNodeExists", () => Effect.void),
                  // Cannot happen (parents come first); kept total for the type.
                  Effect.catchTag("ZkNoNode", (e) => Effect.fail(new ZkError({ op: "mkdirp", path, reason: e.message })))
                ),
          { discard: true }
        )
      )

    const get: ZooKeeperService["get"] = (path) => request("get", path, () => Effect.sync(() => this.get(path)))

    const set: ZooKeeperService["set"] = (path, data, version) =>
      request("set", path, () =>
        Effect.suspend((): Effect.Effect<ZkStat, ZkNoNode | ZkBadVersion> => {
          const n = this.nodes.get(path)
          if (n === undefined) return Effect.fail(new ZkNoNode({ path }))
          if (version !== -1 && version !== n.version) return Effect.fail(new ZkBadVersion({ path, version }))
          this.zxid += 1n
          n.data = data.slice()
          n.version += 1
          const fired: Array<Watch> = []
          this.takeWatches(this.dataWatches, path, fired)
          this.fire(fired)
          return Effect.succeed(statOf(n))
        })
      )

    const remove: ZooKeeperService["remove"] = (path, version) =>
      request("remove", path, () =>
        Effect.suspend((): Effect.Effect<void, ZkNoNode | ZkBadVersion | ZkError> => {
          if (path === "/") {
            return Effect.fail(new ZkError({ op: "remove", path, reason: zkException("BAD_ARGUMENTS", -8, path) }))
          }
          const n = this.nodes.get(path)
          if (n === undefined) return Effect.fail(new ZkNoNode({ path }))
          if (version !== -1 && version !== n.version) return Effect.fail(new ZkBadVersion({ path, version }))
          if (n.children.size > 0) {
            return Effect.fail(new ZkError({ op: "remove", path, reason: zkException("NOT_EMPTY", -111, path) }))
          }
          this.zxid += 1n
          const fired: Array<Watch> = []
          this.deleteNode(path, fired)
          this.fire(fired)
          return Effect.void
        })
      )

    const children: ZooKeeperService["children"] = (path) =>
      request("children", path, () => Effect.sync(() => this.children(path)))

    // Same shape as the real client's: an exists-watch on the path (create/change/delete), plus a
    // child watch when the node exists (child added/removed). Either firing re-reads.
    const prims: WatchPrimitives = {
      session: client.session,
      readAndArm: <A>(kind: "data" | "children", path: string, onChange: () => void) =>
        request(kind === "data" ? "watch" : "watch-children", path, () =>
          Effect.sync(() => {
            this.arm(this.dataWatches, path, client, onChange)
            if (kind === "data") return this.get(path) as A
            if (this.nodes.has(path)) this.arm(this.childWatches, path, client, onChange)
            return this.children(path) as A
          })
        )
    }

    return ZooKeeper.of({
      session: client.session,
      create,
      ensurePath,
      get,
      set,
      remove,
      children,
      watchData: (path) => watchDataStream(prims, path),
      watchChildren: (path) => watchChildrenStream(prims, path)
    })
  }

  private createNode(
    client: Client,
    path: string,
    data: Uint8Array,
    mode: CreateMode
  ): Effect.Effect<string, ZkNodeExists | ZkNoNode | ZkError> {
    return Effect.suspend((): Effect.Effect<string, ZkNodeExists | ZkNoNode | ZkError> => {
      const parentPath = parentOf(path.endsWith("/") ? `${path}x` : path)
      const parent = this.nodes.get(parentPath)
      if (parent === undefined) return Effect.fail(new ZkNoNode({ path }))
      if (parent.ephemeralOwner !== "0") {
        return Effect.fail(
          new ZkError({ op: "create", path, reason: zkException("NO_CHILDREN_FOR_EPHEMERALS", -108, path) })
        )
      }
      const actual = mode.endsWith("_sequential") ? `${path}${String(parent.cversion).padStart(10, "0")}` : path
      if (this.nodes.has(actual)) return Effect.fail(new ZkNodeExists({ path: actual }))
      this.zxid += 1n
      this.nodes.set(actual, {
        data: data.slice(),
        version: 0,
        czxid: this.zxid,
        ephemeralOwner: mode.startsWith("ephemeral") ? client.sessionId : "0",
        cversion: 0,
        children: new Set()
      })
      parent.children.add(actual.slice(parentPath === "/" ? 1 : parentPath.length + 1))
      parent.cversion += 1
      const fired: Array<Watch> = []
      this.takeWatches(this.dataWatches, actual, fired)
      this.takeWatches(this.childWatches, parentPath, fired)
      this.fire(fired)
      return Effect.succeed(actual)
    })
  }
}

const statOf = (n: Znode): ZkStat => ({
  version: n.version,
  czxid: n.czxid.toString(),
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
