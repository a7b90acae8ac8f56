/**
 * A simulated world of Redis servers for tests: roles, replication links and offsets, and the
 * ways a server misbehaves (killed, frozen, loading, paused). `layer(world)` is a `Redis` service
 * whose connections talk to these servers, with the same timeout and error classification as
 * src/Redis.ts, so a frozen server times out under TestClock and a killed one refuses at once.
 *
 * The replication model is deliberately simple: a replica whose link is up has exactly its
 * master's offset and replid (no lag, instant sync, full or partial alike); a replica whose link
 * is down keeps what it had. Lag comes from links that were down while the master took writes
 * (`kill`, `freeze`, `cutLink` …). Links are recomputed after every change, so they are never stale.
 */
import { Clock, Context, Data, Deferred, Duration, Effect, Layer } from "effect"
import type { RedisAddress, RedisConnection, RedisFailure, RedisService } from "../../src/Redis.js"
import {
  formatAddress,
  parseReplication,
  Redis,
  RedisLoading,
  RedisUnavailable,
  withCommandTimeout,
  sameAddress
} from "../../src/Redis.js"

// ---------------------------------------------------------------------------------------------
// Model

/** `down`: nothing listens (refused); `frozen`: accepts but never answers (SIGSTOP); `loading`: PING/INFO fail. */
export type ServerState = "up" | "down" | "frozen" | "loading"

/** An address, or "host:port" ("[::1]:6379" for IPv6). */
export type Addr = RedisAddress | string

export interface ServerOptions {
  /** Starts as a replica of this server (linked at once if it is up). */
  readonly replicaOf?: Addr
  /** Replication offset to start from (ignored if the replica links up at once). */
  readonly offset?: number
  readonly state?: ServerState
  /** Initial config, also what a restart goes back to (CONFIG SET is not persisted). */
  readonly config?: Readonly<Record<string, string>>
  /** `redis_version` in INFO server (default 7.2.4). */
  readonly version?: string
}

export interface RestartOptions {
  /** Comes back without its dataset: offset 0. Otherwise it reloads it and keeps its offset. */
  readonly empty?: boolean
  /** Comes back still loading its dataset (see `setLoading`). */
  readonly loading?: boolean
}

/** What `inspect` shows of a server. */
export interface ServerSnapshot {
  readonly address: RedisAddress
  readonly state: ServerState
  readonly role: "master" | "replica"
  readonly master: RedisAddress | null
  /** Replicas: the replication link is up. Masters: false. */
  readonly linkUp: boolean
  /** Replicas: the link was cut with `cutLink`. */
  readonly linkCut: boolean
  readonly replid: string
  readonly offset: number
  /** CLIENT PAUSE WRITE in force now. */
  readonly paused: boolean
  /** Clock millis at which the pause ends, if one is in force. */
  readonly pausedUntil: number | null
  readonly config: Readonly<Record<string, string>>
  /** Addresses ("host:port") of the replicas linked to this server. */
  readonly replicas: ReadonlyArray<string>
}

export type WriteRejection = "refused" | "timeout" | "LOADING" | "READONLY" | "PAUSED" | "NOREPLICAS"

/** A client write that Redis would not accept (`PAUSED`: a real client would block; nothing is written). */
export class WriteRejected extends Data.TaggedError("WriteRejected")<{
  readonly address: string
  readonly reason: WriteRejection
}> {
  override get message() {
    return `write to Redis ${this.address} rejected: ${this.reason}`
  }
}

interface Server {
  readonly address: RedisAddress
  readonly initialConfig: ReadonlyMap<string, string>
  readonly version: string
  state: ServerState
  /** The state to go back to on thaw. */
  stateBeforeFreeze: "up" | "loading"
  role: "master" | "replica"
  master: RedisAddress | null
  linkUp: boolean
  linkCut: boolean
  linkDownSince: number
  replid: string
  offset: number
  pausedUntil: number | null
  config: Map<string, string>
  /** Application client connections by CLIENT KILL type (the dictator's own are not counted). */
  appClients: { normal: number; pubsub: number }
  /** Commands received while frozen: executed in order on thaw, whether or not anyone still waits. */
  pending: Array<{ readonly run: Effect.Effect<void>; readonly abort: Effect.Effect<void> }>
}

const normalizeHost = (h: string) => (h === "localhost" || h === "::1" || h === "[::1]" ? "127.0.0.1" : h)

const toAddress = (a: Addr): RedisAddress => {
  if (typeof a !== "string") return a
  const i = a.lastIndexOf(":")
  const host = a.slice(0, i)
  return { host: host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host, port: Number(a.slice(i + 1)) }
}

/** Map key: the same server whatever spelling of localhost is used, as `sameAddress` sees it. */
const keyOf = (a: Addr): string => {
  const { host, port } = toAddress(a)
  return `${normalizeHost(host)}:${port}`
}

// ---------------------------------------------------------------------------------------------
// World

export class RedisWorld {
  static readonly make: Effect.Effect<RedisWorld> = Effect.sync(() => new RedisWorld())

  private readonly servers = new Map<string, Server>()
  private readonly logs = new Map<string, Array<string>>()
  private readonly connections = new Map<string, number>()
  /** Connections waiting for their server to drop them (`RedisConnection.closed`). */
  private readonly closeWaiters = new Map<string, Array<Deferred.Deferred<void>>>()
  private replidCounter = 0

  // -------------------------------------------------------------------------------------------
  // Simulation controls

  addServer(host: string, port: number, options: ServerOptions = {}): Effect.Effect<RedisAddress> {
    return this.atNow((now) => {
      const address = { host, port }
      const key = keyOf(address)
      if (this.servers.has(key)) throw new Error(`RedisWorld: ${key} already exists`)
      const config = new Map(Object.entries(options.config ?? {}))
      const state = options.state ?? "up"
      this.servers.set(key, {
        address,
        initialConfig: new Map(config),
        version: options.version ?? "7.2.4",
        state,
        stateBeforeFreeze: "up",
        role: options.replicaOf === undefined ? "master" : "replica",
        master: options.replicaOf === undefined ? null : toAddress(options.replicaOf),
        linkUp: false,
        linkCut: false,
        linkDownSince: now,
        replid: this.newReplid(),
        offset: options.offset ?? 0,
        pausedUntil: null,
        config,
        appClients: { normal: 0, pubsub: 0 },
        pending: []
      })
      this.reconcile(now)
      return address
    })
  }

  /**
   * A client write of `n` bytes of replication stream. Accepted only by an up master, not paused,
   * with at least `min-replicas-to-write` linked replicas (when that config is set); linked
   * replicas follow at once. Returns the new offset. Application traffic: not in `commands`.
   */
  write(addr: Addr, n = 1): Effect.Effect<number, WriteRejected> {
    return Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        const s = this.servers.get(keyOf(addr))
        const reject = (reason: WriteRejection) =>
          Effect.fail(new WriteRejected({ address: formatAddress(toAddress(addr)), reason }))
        if (s === undefined || s.state === "down") return reject("refused")
        if (s.state === "frozen") return reject("timeout")
        if (s.state === "loading") return reject("LOADING")
        if (s.role === "replica") return reject("READONLY")
        if (this.isPaused(s, now)) return reject("PAUSED")
        const minReplicas = Number.parseInt(s.config.get("min-replicas-to-write") ?? "0", 10) || 0
        if (this.linkedReplicas(s).length < minReplicas) return reject("NOREPLICAS")
        s.offset += n
        this.reconcile(now)
        return Effect.succeed(s.offset)
      })
    )
  }

  /** The process dies: connections are refused, its replicas' links go down. */
  kill(addr: Addr): Effect.Effect<void> {
    return Effect.suspend(() => {
      const s = this.server(addr)
      const aborted = s.pending
      s.pending = []
      s.state = "down"
      s.pausedUntil = null
      s.appClients = { normal: 0, pubsub: 0 }
      const waiters = this.closeWaiters.get(keyOf(addr)) ?? []
      this.closeWaiters.delete(keyOf(addr))
      return Effect.zipRight(
        Effect.forEach([...aborted.map((p) => p.abort), ...waiters.map((d) => Deferred.succeed(d, undefined))], (e) => e, {
          discard: true
        }),
        this.atNow((now) => this.reconcile(now))
      )
    })
  }

  /**
   * Starts the process again (killing it first if it runs). Like a redis-server started from a
   * config file with no `replicaof` line, it comes back as a master, with its initial config and a
   * new replid; with its dataset (offset kept) unless `empty`. Replicas pointing at it link again,
   * and take its offset — an empty restart wipes them, as in Redis.
   */
  restart(addr: Addr, options: RestartOptions = {}): Effect.Effect<void> {
    return Effect.zipRight(
      this.kill(addr),
      this.atNow((now) => {
        const s = this.server(addr)
        s.state = options.loading === true ? "loading" : "up"
        s.role = "master"
        s.master = null
        s.linkUp = false
        s.linkCut = false
        s.linkDownSince = now
        s.replid = this.newReplid()
        if (options.empty === true) s.offset = 0
        s.config = new Map(s.initialConfig)
        this.reconcile(now)
      })
    )
  }

  /** SIGSTOP: connections are accepted but nothing is answered; its replicas' links go down. */
  freeze(addr: Addr): Effect.Effect<void> {
    return this.atNow((now) => {
      const s = this.server(addr)
      if (s.state !== "up" && s.state !== "loading") return
      s.stateBeforeFreeze = s.state
      s.state = "frozen"
      this.reconcile(now)
    })
  }

  /** SIGCONT: commands sent meanwhile are executed now, in order (their callers may have given up). */
  thaw(addr: Addr): Effect.Effect<void> {
    return Effect.suspend(() => {
      const s = this.server(addr)
      if (s.state !== "frozen") return Effect.void
      s.state = s.stateBeforeFreeze
      const queued = s.pending
      s.pending = []
      return Effect.zipRight(
        Effect.forEach(queued, (p) => p.run, { discard: true }),
        this.atNow((now) => this.reconcile(now))
      )
    })
  }

  /** Enters or leaves the loading state (PING, INFO, REPLICAOF and writes fail with LOADING). */
  setLoading(addr: Addr, loading: boolean): Effect.Effect<void> {
    return this.atNow((now) => {
      const s = this.server(addr)
      if (s.state === "up" || s.state === "loading") s.state = loading ? "loading" : "up"
      else s.stateBeforeFreeze = loading ? "loading" : "up"
      this.reconcile(now)
    })
  }

  /** Cuts (or heals) the network between a replica and its master: the link goes down (or back up). */
  cutLink(addr: Addr, cut = true): Effect.Effect<void> {
    return this.atNow((now) => {
      this.server(addr).linkCut = cut
      this.reconcile(now)
    })
  }

  healLink(addr: Addr): Effect.Effect<void> {
    return this.cutLink(addr, false)
  }

  // -------------------------------------------------------------------------------------------
  // Inspection

  inspect(addr: Addr): Effect.Effect<ServerSnapshot> {
    return this.atNow((now) => {
      const s = this.server(addr)
      const paused = this.isPaused(s, now)
      return {
        address: s.address,
        state: s.state,
        role: s.role,
        master: s.master,
        linkUp: s.role === "replica" && s.linkUp,
        linkCut: s.linkCut,
        replid: s.replid,
        offset: s.offset,
        paused,
        pausedUntil: paused ? s.pausedUntil : null,
        config: Object.fromEntries(s.config),
        replicas: this.linkedReplicas(s).map((r) => formatAddress(r.address))
      }
    })
  }

  /** Commands a server received and answered, in order, as Redis spells them ("REPLICAOF NO ONE"). */
  commands(addr: Addr): Effect.Effect<ReadonlyArray<string>> {
    return Effect.sync(() => [...(this.logs.get(keyOf(addr)) ?? [])])
  }

  /** An application client connects (`pubsub`: it subscribed); the server must be up. */
  connectClient(addr: Addr, type: "normal" | "pubsub" = "normal"): Effect.Effect<void> {
    return Effect.sync(() => {
      const s = this.server(addr)
      if (s.state === "down") throw new Error(`RedisWorld: ${keyOf(addr)} is down`)
      s.appClients[type] += 1
    })
  }

  /** Application client connections open on `addr`. */
  clients(addr: Addr): Effect.Effect<{ readonly normal: number; readonly pubsub: number }> {
    return Effect.sync(() => ({ ...this.server(addr).appClients }))
  }

  /** Connections to `addr` whose scope is still open. */
  openConnections(addr: Addr): Effect.Effect<number> {
    return Effect.sync(() => this.connections.get(keyOf(addr)) ?? 0)
  }

  // -------------------------------------------------------------------------------------------
  // The Redis service

  readonly service: RedisService = {
    connect: (address, timeoutInput) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const key = keyOf(address)
          this.connections.set(key, (this.connections.get(key) ?? 0) + 1)
          return this.connection(address, Duration.decode(timeoutInput))
        }),
        () =>
          Effect.sync(() => {
            const key = keyOf(address)
            this.connections.set(key, (this.connections.get(key) ?? 1) - 1)
          })
      )
  }

  private connection(address: RedisAddress, timeout: Duration.Duration): RedisConnection {
    const ping = this.call(address, timeout, "PING", false, () => undefined)
    // Real Redis answers INFO while loading; failing it here lets tests take the RedisLoading path.
    const replication = this.call(address, timeout, "INFO replication", false, (s, now) =>
      parseReplication(this.infoReplication(s, now))
    )
    return {
      address,
      ping,
      replication,
      // As the real client's pipeline: PING's failure first, then INFO's.
      check: Effect.zipRight(ping, replication),
      serverVersion: this.call(address, timeout, "INFO server", false, (s) => s.version),
      replicaOf: (target) =>
        this.call(
          address,
          timeout,
          target === null ? "REPLICAOF NO ONE" : `REPLICAOF ${target.host} ${target.port}`,
          false,
          (s, now) => {
            if (target === null) {
              if (s.role === "master") return
              // Promotion keeps the data and starts a new replication history.
              s.role = "master"
              s.master = null
              s.linkUp = false
              s.replid = this.newReplid()
            } else {
              if (s.role === "replica" && s.master !== null && sameAddress(s.master, target)) return
              s.role = "replica"
              s.master = target
              s.linkUp = false
              s.linkDownSince = now
            }
          }
        ),
      pauseWrites: (duration) => {
        const ms = Math.max(1, Math.round(Duration.toMillis(duration)))
        return this.call(address, timeout, `CLIENT PAUSE ${ms} WRITE`, true, (s, now) => {
          s.pausedUntil = now + ms
        })
      },
      unpause: this.call(address, timeout, "CLIENT UNPAUSE", true, (s) => {
        s.pausedUntil = null
      }),
      configSet: (key, value) =>
        this.call(address, timeout, `CONFIG SET ${key} ${value}`, true, (s) => {
          s.config.set(key, value)
        }),
      killClients: Effect.zipWith(
        this.call(address, timeout, "CLIENT KILL TYPE normal SKIPME yes", true, (s) => {
          const n = s.appClients.normal
          s.appClients.normal = 0
          return n
        }),
        this.call(address, timeout, "CLIENT KILL TYPE pubsub SKIPME yes", true, (s) => {
          const n = s.appClients.pubsub
          s.appClients.pubsub = 0
          return n
        }),
        (a, b) => a + b
      ),
      closed: Effect.flatMap(Deferred.make<void>(), (d) =>
        Effect.zipRight(
          Effect.sync(() => {
            const key = keyOf(address)
            this.closeWaiters.set(key, [...(this.closeWaiters.get(key) ?? []), d])
          }),
          Deferred.await(d)
        )
      )
    }
  }

  /**
   * One command on one server: refused if nothing listens, queued if the server is frozen,
   * LOADING if it is loading (unless `whileLoading`), and bounded by the connection's timeout
   * exactly like src/Redis.ts.
   */
  private call<A>(
    address: RedisAddress,
    timeout: Duration.Duration,
    command: string,
    /** Served while loading: CLIENT and CONFIG are, like in Redis; PING, INFO and REPLICAOF are not. */
    whileLoading: boolean,
    handler: (s: Server, now: number) => A
  ): Effect.Effect<A, RedisFailure> {
    const name = formatAddress(address)
    const refused = (detail: string) => new RedisUnavailable({ address: name, reason: "refused", detail })
    const execute = (s: Server): Effect.Effect<A, RedisFailure> =>
      Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<A, RedisFailure> => {
        // Killed while the command sat in a frozen server's queue.
        if (s.state === "down") return Effect.fail(refused("ECONNRESET"))
        this.log(s, command)
        if (s.state === "loading" && !whileLoading) return Effect.fail(new RedisLoading({ address: name }))
        const result = handler(s, now)
        this.reconcile(now)
        return Effect.succeed(result)
      })
    return Effect.suspend((): Effect.Effect<A, RedisFailure> => {
      const s = this.servers.get(keyOf(address))
      if (s === undefined || s.state === "down") return Effect.fail(refused("ECONNREFUSED"))
      if (s.state !== "frozen") return execute(s)
      return Effect.flatMap(Deferred.make<A, RedisFailure>(), (answer) => {
        s.pending.push({
          run: Effect.asVoid(Deferred.complete(answer, execute(s))),
          abort: Effect.asVoid(Deferred.fail(answer, refused("ECONNRESET")))
        })
        return Deferred.await(answer)
      })
    }).pipe(
      withCommandTimeout(name, command, timeout)
    )
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private atNow<A>(f: (now: number) => A): Effect.Effect<A> {
    return Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => f(now)))
  }

  private server(addr: Addr): Server {
    const s = this.servers.get(keyOf(addr))
    if (s === undefined) throw new Error(`RedisWorld: no server ${keyOf(addr)}`)
    return s
  }

  private log(s: Server, command: string): void {
    const key = keyOf(s.address)
    const log = this.logs.get(key) ?? []
    log.push(command)
    this.logs.set(key, log)
  }

  private newReplid(): string {
    this.replidCounter += 1
    return this.replidCounter.toString(16).padStart(40, "0")
  }

  private isPaused(s: Server, now: number): boolean {
    return s.pausedUntil !== null && s.pausedUntil > now
  }

  private linkedReplicas(s: Server): ReadonlyArray<Server> {
    return [...this.servers.values()].filter(
      (r) => r.role === "replica" && r.linkUp && r.master !== null && sameAddress(r.master, s.address)
    )
  }

  /**
   * Recomputes every replication link from the servers' states and brings linked replicas to
   * their master's offset and replid, until nothing changes (chains of replicas take a few rounds).
   */
  private reconcile(now: number): void {
    for (let round = 0; round <= this.servers.size; round++) {
      let changed = false
      for (const s of this.servers.values()) {
        if (s.role !== "replica" || s.master === null) continue
        const target = this.servers.get(keyOf(s.master))
        const up = s.state === "up" && !s.linkCut && target !== undefined && target !== s && target.state === "up"
        if (up !== s.linkUp) {
          s.linkUp = up
          if (!up) s.linkDownSince = now
          changed = true
        }
        if (up && (s.offset !== target.offset || s.replid !== target.replid)) {
          s.offset = target.offset
          s.replid = target.replid
          changed = true
        }
      }
      if (!changed) return
    }
  }

  /** The `INFO replication` text of a server, as Redis 7 writes it (parsed by src/Redis.ts). */
  private infoReplication(s: Server, now: number): string {
    const lines = ["# Replication"]
    if (s.role === "master") {
      const replicas = this.linkedReplicas(s)
      lines.push("role:master", `connected_slaves:${replicas.length}`)
      replicas.forEach((r, i) =>
        lines.push(`slave${i}:ip=${r.address.host},port=${r.address.port},state=online,offset=${r.offset},lag=0`)
      )
      lines.push("master_failover_state:no-failover")
    } else {
      lines.push(
        "role:slave",
        `master_host:${s.master?.host ?? ""}`,
        `master_port:${s.master?.port ?? 0}`,
        `master_link_status:${s.linkUp ? "up" : "down"}`,
        `master_last_io_seconds_ago:${s.linkUp ? 0 : -1}`,
        "master_sync_in_progress:0",
        `slave_read_repl_offset:${s.offset}`,
        `slave_repl_offset:${s.offset}`
      )
      if (!s.linkUp) lines.push(`master_link_down_since_seconds:${Math.floor((now - s.linkDownSince) / 1000)}`)
      lines.push("slave_priority:100", "slave_read_only:1", "replica_announced:1", "connected_slaves:0")
    }
    lines.push(
      `master_replid:${s.replid}`,
      "master_replid2:0000000000000000000000000000000000000000",
      `master_repl_offset:${s.offset}`,
      "second_repl_offset:-1",
      "repl_backlog_active:1",
      "repl_backlog_size:1048576",
      "repl_backlog_first_byte_offset:1",
      `repl_backlog_histlen:${s.offset}`
    )
    return lines.join("\r\n") + "\r\n"
  }
}

// ---------------------------------------------------------------------------------------------
// Layers

/** The world behind `layerTest`, for tests that drive it. */
export class TestRedis extends Context.Tag("test/RedisWorld")<TestRedis, RedisWorld>() {}

/** The Redis service on a given world. */
export const layer = (world: RedisWorld): Layer.Layer<Redis> => Layer.succeed(Redis, world.service)

/** A fresh, empty world and the Redis service on it. */
export const layerTest: Layer.Layer<Redis | TestRedis> = Layer.unwrapEffect(
  Effect.map(RedisWorld.make, (world) => Layer.merge(layer(world), Layer.succeed(TestRedis, world)))
)
