/**
 * Workload and observers for the chaos suite (issue 3, "Proof 1"): real clients against the real
 * servers of `servers.ts`, each a scoped resource.
 *
 * - `followMaster`: follows the master znode (one long-lived ZooKeeper session, polled every
 *   ~20 ms), as a client library would, keeping the last known master while ZooKeeper is away.
 * - `writer`: `SADD chaos:acked <tag>:<id>` with increasing ids on whatever Redis the znode names,
 *   one write in flight, short timeouts; records every acknowledged and every failed write.
 * - `staleClient`: stays connected to one (old master) address and keeps writing there.
 * - `checker`: samples every Redis server every ~50 ms (`INFO replication` and a harmless
 *   `SET chaos:probe:<port> x` with a short timeout) and finds the intervals in which two servers
 *   accepted writes at the same time.
 * - `converged` / `awaitConverged`: exactly one master, named by the znode, writable, every other
 *   running Redis replicating from it with its link up and holding the master's latest write,
 *   every running dictator agreeing.
 * - `lostWrites`: acknowledged writes missing from the final master's set.
 *
 * Everything runs on the real clock (use it from `it.live`, or a `layer(…, { excludeTestServices: true })`).
 */
import { Clock, Data, Duration, Effect, Fiber, Option, Ref, Scope } from "effect"
import { Redis as IORedis } from "ioredis"
import zookeeper from "node-zookeeper-client"
import {
  type DictatorProcess,
  type RedisServer,
  type ZkServer,
  readMaster,
  oneShotRedis,
  redisCommand,
  reopeningZkClient,
  waitUntil
} from "./servers.js"

// ---------------------------------------------------------------------------------------------
// Shared shapes
// ---------------------------------------------------------------------------------------------

export interface Address {
  readonly host: string
  readonly port: number
}

export const formatAddress = (a: Address): string => `${a.host}:${a.port}`

/** One Redis server and its dictator. */
export interface TopologyNode {
  readonly name: string
  readonly redis: RedisServer
  readonly dictator: DictatorProcess
}

/** A service as the chaos tests run it: a ZooKeeper ensemble, and one Redis + dictator per node. */
export interface Topology {
  readonly svc: string
  readonly zk: { readonly servers: ReadonlyArray<ZkServer>; readonly hosts: ReadonlyArray<string> }
  readonly nodes: ReadonlyArray<TopologyNode>
}

export const SET_KEY = "chaos:acked"
export const STALE_KEY = "chaos:stale"

const errorText = (e: unknown): string =>
  e instanceof Error ? e.message : typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)

const now = Clock.currentTimeMillis

// ---------------------------------------------------------------------------------------------
// Redis connections: one per address, dropped (and so its queued commands with it) after a
// timeout or a broken connection, so a frozen server never piles up our commands.
// ---------------------------------------------------------------------------------------------

class Connections {
  private readonly clients = new Map<string, Promise<IORedis>>()
  private closed = false

  constructor(
    private readonly timeoutMs: number,
    private readonly connectionName: string
  ) {}

  get(a: Address): Promise<IORedis> {
    if (this.closed) return Promise.reject(new Error("closed"))
    const key = formatAddress(a)
    const existing = this.clients.get(key)
    if (existing !== undefined) return existing
    const client = oneShotRedis(a, {
      connectTimeoutMs: this.timeoutMs,
      commandTimeoutMs: this.timeoutMs,
      name: this.connectionName
    })
    // Failures surface through the command promises; the socket's own error (ECONNREFUSED …)
    // only through this event, so it is added to a failed connect's message.
    let socketError: string | undefined
    client.on("error", (e: NodeJS.ErrnoException) => {
      socketError = e.code ?? e.message
    })
    const ready = client.connect().then(
      () => client,
      (e: unknown) => {
        this.drop(a)
        client.disconnect()
        throw new Error(`connect: ${socketError ?? ""} ${errorText(e)}`)
      }
    )
    // Once ended (retryStrategy null: no reconnect), forget it so the next call connects again.
    client.once("end", () => {
      if (this.clients.get(key) === ready) this.clients.delete(key)
    })
    this.clients.set(key, ready)
    return ready
  }

  drop(a: Address): void {
    const key = formatAddress(a)
    const existing = this.clients.get(key)
    if (existing === undefined) return
    this.clients.delete(key)
    existing.then((c) => c.disconnect(), () => {})
  }

  closeAll(): void {
    this.closed = true
    for (const p of this.clients.values()) p.then((c) => c.disconnect(), () => {})
    this.clients.clear()
  }
}

const connections = (timeoutMs: number, name: string): Effect.Effect<Connections, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => new Connections(timeoutMs, name)),
    (c) => Effect.sync(() => c.closeAll())
  )

type CallResult<A> = { readonly ok: true; readonly value: A } | { readonly ok: false; readonly error: string; readonly kind: FailureKind }

/** refused: nothing listens (process gone); timeout: no answer in time; reply: an error reply (READONLY, NOREPLICAS…); broken: anything else. */
export type FailureKind = "refused" | "timeout" | "reply" | "broken"

const classify = (e: unknown): FailureKind => {
  const msg = errorText(e)
  if (typeof e === "object" && e !== null && (e as { name?: unknown }).name === "ReplyError") return "reply"
  if (/ECONNREFUSED/.test(msg)) return "refused"
  if (/timed out|timeout/i.test(msg)) return "timeout"
  return "broken"
}

/** One command on the pooled connection to `a`; the connection is dropped unless the failure was an error reply. */
const call = <A>(
  pool: Connections,
  a: Address,
  timeoutMs: number,
  f: (c: IORedis) => Promise<A>
): Effect.Effect<CallResult<A>> =>
  Effect.tryPromise({ try: () => pool.get(a).then(f), catch: (e) => e }).pipe(
    // ioredis's commandTimeout bounds commands, connectTimeout the connection; this bounds both.
    Effect.timeoutFail({ duration: Duration.millis(timeoutMs + 200), onTimeout: () => new Error("timed out (effect)") }),
    Effect.map((value): CallResult<A> => ({ ok: true, value })),
    Effect.catchAll((e) =>
      Effect.sync((): CallResult<A> => {
        const kind = classify(e)
        if (kind !== "reply") pool.drop(a)
        return { ok: false, error: errorText(e), kind }
      })
    )
  )

// ---------------------------------------------------------------------------------------------
// Following the master znode
// ---------------------------------------------------------------------------------------------

export interface MasterSeen extends Address {
  readonly name: string
  readonly czxid: string
}

export interface MasterFollower {
  /** The last master read from ZooKeeper (kept while ZooKeeper is unreachable); None when there is none. */
  readonly current: Effect.Effect<Option.Option<MasterSeen>>
  /** Every change seen: the time it was read and the new value (null: no master znode). */
  readonly history: () => ReadonlyArray<{ readonly at: number; readonly master: MasterSeen | null }>
}

const masterPath = (svc: string) => `/services/redis/${svc}/master`

/**
 * Follows `/services/redis/<svc>/master` on one long-lived ZooKeeper session, read every
 * `pollMs` (a fresh session per read would cost ZooKeeper a session every 20 ms). A new session
 * replaces an expired one.
 */
export const followMaster = (
  hosts: ReadonlyArray<string>,
  svc: string,
  opts?: { readonly pollMs?: number }
): Effect.Effect<MasterFollower, never, Scope.Scope> =>
  Effect.gen(function* () {
    const pollMs = opts?.pollMs ?? 20
    const path = masterPath(svc)
    const current = yield* Ref.make<Option.Option<MasterSeen>>(Option.none())
    const history: Array<{ at: number; master: MasterSeen | null }> = []
    const zkClient = yield* reopeningZkClient(hosts)
    const read = Effect.suspend(() => {
      const c = zkClient()
      return Effect.async<Option.Option<MasterSeen> | "unknown">((resume) => {
        c.getData(path, (error, data, stat) => {
          if (error) {
            const code = (error as { code?: unknown }).code
            resume(Effect.succeed(code === zookeeper.Exception.NO_NODE ? Option.none() : "unknown"))
            return
          }
          try {
            const j = JSON.parse((data ?? Buffer.alloc(0)).toString("utf8")) as Record<string, unknown>
            const port = Number(j.port)
            resume(
              Effect.succeed(
                typeof j.host === "string" && typeof j.name === "string" && Number.isInteger(port)
                  ? Option.some({ host: j.host, port, name: j.name, czxid: stat.czxid.readBigUInt64BE(0).toString() })
                  : "unknown"
              )
            )
          } catch {
            resume(Effect.succeed("unknown"))
          }
        })
      }).pipe(Effect.timeoutTo({ duration: Duration.seconds(1), onTimeout: () => "unknown" as const, onSuccess: (x) => x }))
    })
    /** One read; false when ZooKeeper gave no definite answer (the last known master stays). */
    const step = Effect.gen(function* () {
      const seen = yield* read
      if (seen === "unknown") return false
      const before = yield* Ref.get(current)
      const same = Option.isNone(seen)
        ? Option.isNone(before)
        : Option.isSome(before) && before.value.czxid === seen.value.czxid
      if (!same) {
        history.push({ at: yield* now, master: Option.getOrNull(seen) })
        yield* Ref.set(current, seen)
      }
      return true
    })
    // A first definite read before returning, so a writer starts with a master when there is one.
    yield* waitUntil(
      "a first read of the master znode",
      Effect.map(step, (ok) => (ok ? Option.some(true) : Option.none())),
      { timeout: "10 seconds", interval: "20 millis" }
    ).pipe(Effect.ignore)
    yield* step.pipe(Effect.zipRight(Effect.sleep(Duration.millis(pollMs))), Effect.forever, Effect.forkScoped, Effect.interruptible)
    return { current: Ref.get(current), history: () => history }
  })

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

export interface Ack {
  readonly id: number
  readonly member: string
  /** "host:port" of the Redis that acknowledged it. */
  readonly address: string
  readonly sentAt: number
  readonly at: number
}

export interface FailedWrite {
  readonly id: number
  readonly address: string
  readonly at: number
  readonly kind: FailureKind
  readonly error: string
}

export interface WriterStats {
  readonly attempted: number
  readonly acked: number
  readonly failed: number
  /** Write slots skipped because no master was known. */
  readonly noMaster: number
}

export interface Writer {
  readonly tag: string
  readonly key: string
  readonly acks: () => ReadonlyArray<Ack>
  readonly failures: () => ReadonlyArray<FailedWrite>
  readonly stats: () => WriterStats
  readonly follower: MasterFollower
  /** Stops writing (the write in flight completes or times out first). */
  readonly stop: Effect.Effect<void>
}

/**
 * Writes `SADD <key> <tag>:<id>` (ids 1, 2, …) to the master named by the znode, one write in
 * flight, `pauseMs` between writes, each bounded by `timeoutMs`. A write counts as acknowledged
 * only when the reply arrived in time.
 */
export const writer = (
  t: Pick<Topology, "svc" | "zk">,
  opts: { readonly tag: string; readonly key?: string; readonly timeoutMs?: number; readonly pauseMs?: number }
): Effect.Effect<Writer, never, Scope.Scope> =>
  Effect.gen(function* () {
    const key = opts.key ?? SET_KEY
    const timeoutMs = opts.timeoutMs ?? 500
    const pause = Duration.millis(opts.pauseMs ?? 5)
    const follower = yield* followMaster(t.zk.hosts, t.svc)
    const pool = yield* connections(timeoutMs, "chaos-writer")
    const acks: Array<Ack> = []
    const failures: Array<FailedWrite> = []
    let nextId = 1
    let noMaster = 0
    const writeOnce = Effect.gen(function* () {
      const master = yield* follower.current
      if (Option.isNone(master)) {
        noMaster++
        return yield* Effect.sleep("20 millis")
      }
      const a = master.value
      const id = nextId++
      const member = `${opts.tag}:${id}`
      const sentAt = yield* now
      const result = yield* call(pool, a, timeoutMs, (c) => c.sadd(key, member))
      const at = yield* now
      if (result.ok) acks.push({ id, member, address: formatAddress(a), sentAt, at })
      else failures.push({ id, address: formatAddress(a), at, kind: result.kind, error: result.error })
      yield* Effect.sleep(pause)
    })
    const fiber = yield* writeOnce.pipe(Effect.forever, Effect.forkScoped, Effect.interruptible)
    let stopped = false
    return {
      tag: opts.tag,
      key,
      acks: () => acks,
      failures: () => failures,
      stats: () => ({ attempted: nextId - 1, acked: acks.length, failed: failures.length, noMaster }),
      follower,
      stop: Effect.suspend(() => {
        if (stopped) return Effect.void
        stopped = true
        return Fiber.interrupt(fiber).pipe(Effect.asVoid)
      })
    }
  })

/**
 * The longest time between two consecutive acknowledged writes of one writer whose interval
 * touches [from, to] (a gap that began before `from` counts whole), and when it began.
 */
export const longestAckGap = (
  acks: ReadonlyArray<Ack>,
  from: number,
  to: number
): { readonly ms: number; readonly start: number } => {
  let best = { ms: 0, start: from }
  for (let i = 1; i < acks.length; i++) {
    const prev = acks[i - 1]!
    const next = acks[i]!
    if (next.at < from || prev.at > to) continue
    if (next.at - prev.at > best.ms) best = { ms: next.at - prev.at, start: prev.at }
  }
  return best
}

// ---------------------------------------------------------------------------------------------
// Stale client
// ---------------------------------------------------------------------------------------------

export interface StaleClient {
  readonly address: string
  readonly acks: () => ReadonlyArray<Ack>
  readonly failures: () => ReadonlyArray<FailedWrite>
  /** Writes acknowledged at or after `t`. */
  readonly ackedSince: (t: number) => ReadonlyArray<Ack>
  readonly stop: Effect.Effect<void>
}

/**
 * A client that does not follow ZooKeeper: it stays on `address` (an old master) and keeps
 * writing `SADD <key> <tag>:<id>` there, one write in flight at a time. Its timeout is long on
 * purpose, so a write sent to a frozen server is still waiting when the server wakes up: that is
 * the write "already in its socket" the freeze scenario counts.
 */
export const staleClient = (
  address: Address,
  opts: { readonly tag: string; readonly key?: string; readonly timeoutMs?: number; readonly pauseMs?: number }
): Effect.Effect<StaleClient, never, Scope.Scope> =>
  Effect.gen(function* () {
    const key = opts.key ?? STALE_KEY
    const timeoutMs = opts.timeoutMs ?? 10_000
    const pause = Duration.millis(opts.pauseMs ?? 10)
    const pool = yield* connections(timeoutMs, "chaos-stale")
    const acks: Array<Ack> = []
    const failures: Array<FailedWrite> = []
    const addr = formatAddress(address)
    let nextId = 1
    const writeOnce = Effect.gen(function* () {
      const id = nextId++
      const member = `${opts.tag}:${id}`
      const sentAt = yield* now
      const result = yield* call(pool, address, timeoutMs, (c) => c.sadd(key, member))
      const at = yield* now
      if (result.ok) acks.push({ id, member, address: addr, sentAt, at })
      else failures.push({ id, address: addr, at, kind: result.kind, error: result.error })
      yield* Effect.sleep(pause)
    })
    const fiber = yield* writeOnce.pipe(Effect.forever, Effect.forkScoped, Effect.interruptible)
    return {
      address: addr,
      acks: () => acks,
      failures: () => failures,
      ackedSince: (t) => acks.filter((a) => a.at >= t),
      stop: Fiber.interrupt(fiber).pipe(Effect.asVoid)
    }
  })

// ---------------------------------------------------------------------------------------------
// Checker: who accepts writes, sampled
// ---------------------------------------------------------------------------------------------

export interface Sample {
  readonly name: string
  readonly port: number
  readonly sentAt: number
  readonly at: number
  /** From INFO replication; "unreachable" when it did not answer. */
  readonly role: "master" | "replica" | "unreachable"
  readonly masterPort: number | null
  readonly linkUp: boolean
  /** The probe `SET chaos:probe:<port> x` was answered OK in time. */
  readonly accepted: boolean
  /** Why the probe was not accepted (an error reply, a timeout, refused …). */
  readonly probe: string
  readonly refused: boolean
}

/** Consecutive accepted samples of one server: it took writes from `from` to `to` (sent time of the first, reply time of the last). */
export interface AcceptRun {
  readonly name: string
  readonly port: number
  readonly from: number
  readonly to: number
  readonly samples: number
  /**
   * The server had been seen down (connection refused: a new process) and not yet as a replica
   * since: a redis-server comes up as an empty master by default, before its dictator places it.
   */
  readonly unplaced: boolean
}

export interface Overlap {
  readonly a: string
  readonly b: string
  readonly from: number
  readonly to: number
  readonly ms: number
}

export interface CheckerReport {
  readonly samples: number
  readonly runs: ReadonlyArray<AcceptRun>
  /** Two placed servers accepting writes at the same time. */
  readonly overlaps: ReadonlyArray<Overlap>
  readonly maxOverlapMs: number
  /** Accepting runs of restarted servers not yet placed by their dictator. */
  readonly unplacedRuns: ReadonlyArray<AcceptRun>
  readonly maxUnplacedMs: number
}

export interface Checker {
  readonly samples: () => ReadonlyArray<Sample>
  /** The first sample sent at or after `t` in which a server other than `exceptPort` accepted a write. */
  readonly firstAcceptSince: (t: number, exceptPort?: number) => Sample | undefined
  readonly report: () => CheckerReport
  readonly stop: Effect.Effect<void>
}

const infoField = (text: string, field: string): string | undefined => {
  const m = new RegExp(`^${field}:(.*)$`, "m").exec(text)
  return m?.[1]?.trim()
}

/** Splits one server's samples into runs of accepted writes, marking those of a restarted, unplaced server. */
const acceptRuns = (samples: ReadonlyArray<Sample>): Array<AcceptRun> => {
  const runs: Array<AcceptRun> = []
  let unplaced = false
  let open: { first: Sample; last: Sample; count: number; unplaced: boolean } | undefined
  const close = () => {
    if (open !== undefined) {
      runs.push({
        name: open.first.name,
        port: open.first.port,
        from: open.first.sentAt,
        to: open.last.at,
        samples: open.count,
        unplaced: open.unplaced
      })
    }
    open = undefined
  }
  for (const s of samples) {
    if (s.refused) unplaced = true
    if (s.role === "replica") unplaced = false
    if (s.accepted) {
      if (open === undefined) open = { first: s, last: s, count: 1, unplaced }
      else {
        open.last = s
        open.count++
      }
    } else close()
  }
  close()
  return runs
}

const overlapsOf = (runs: ReadonlyArray<AcceptRun>): Array<Overlap> => {
  const out: Array<Overlap> = []
  for (let i = 0; i < runs.length; i++) {
    for (let j = i + 1; j < runs.length; j++) {
      const x = runs[i]!
      const y = runs[j]!
      if (x.port === y.port) continue
      const from = Math.max(x.from, y.from)
      const to = Math.min(x.to, y.to)
      if (from <= to) out.push({ a: x.name, b: y.name, from, to, ms: to - from })
    }
  }
  return out.sort((p, q) => p.from - q.from)
}

/**
 * Samples every server of `servers` every `intervalMs`: `INFO replication` and the probe
 * `SET chaos:probe:<port> x`, sent together on one connection, each bounded by `timeoutMs`. A
 * paused master (CLIENT PAUSE WRITE) leaves the probe unanswered: not accepting. A connection is
 * dropped after a timeout, so nothing of ours queues up on a frozen server.
 */
export const checker = (
  servers: ReadonlyArray<{ readonly name: string; readonly host: string; readonly port: number }>,
  opts?: { readonly intervalMs?: number; readonly timeoutMs?: number }
): Effect.Effect<Checker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const interval = Duration.millis(opts?.intervalMs ?? 50)
    const timeoutMs = opts?.timeoutMs ?? 300
    const pool = yield* connections(timeoutMs, "chaos-checker")
    const byPort = new Map<number, Array<Sample>>(servers.map((s) => [s.port, []]))
    const sampleOnce = (s: { readonly name: string; readonly host: string; readonly port: number }) =>
      Effect.gen(function* () {
        const sentAt = yield* now
        const [info, probe] = yield* Effect.all(
          [
            call(pool, s, timeoutMs, (c) => c.info("replication")),
            call(pool, s, timeoutMs, (c) => c.set(`chaos:probe:${s.port}`, "x"))
          ],
          { concurrency: "unbounded" }
        )
        const at = yield* now
        const role = !info.ok ? "unreachable" : infoField(info.value, "role") === "slave" ? "replica" : "master"
        const masterPort = info.ok ? Number(infoField(info.value, "master_port") ?? NaN) : NaN
        byPort.get(s.port)!.push({
          name: s.name,
          port: s.port,
          sentAt,
          at,
          role,
          masterPort: Number.isInteger(masterPort) ? masterPort : null,
          linkUp: info.ok && infoField(info.value, "master_link_status") === "up",
          accepted: probe.ok && probe.value === "OK",
          probe: probe.ok ? String(probe.value) : `${probe.kind}: ${probe.error}`,
          refused: (!info.ok && info.kind === "refused") || (!probe.ok && probe.kind === "refused")
        })
        yield* Effect.sleep(interval)
      })
    const fibers = yield* Effect.forEach(servers, (s) =>
      sampleOnce(s).pipe(Effect.forever, Effect.forkScoped, Effect.interruptible)
    )
    const all = () => [...byPort.values()].flat().sort((x, y) => x.sentAt - y.sentAt)
    return {
      samples: all,
      firstAcceptSince: (t, exceptPort) => all().find((s) => s.sentAt >= t && s.accepted && s.port !== exceptPort),
      report: () => {
        const runs = [...byPort.values()].flatMap(acceptRuns)
        const placed = runs.filter((r) => !r.unplaced)
        const unplacedRuns = runs.filter((r) => r.unplaced)
        const overlaps = overlapsOf(placed)
        return {
          samples: [...byPort.values()].reduce((n, xs) => n + xs.length, 0),
          runs,
          overlaps,
          maxOverlapMs: overlaps.reduce((m, o) => Math.max(m, o.ms), 0),
          unplacedRuns,
          maxUnplacedMs: unplacedRuns.reduce((m, r) => Math.max(m, r.to - r.from), 0)
        }
      },
      stop: Fiber.interruptAll(fibers)
    }
  })

// ---------------------------------------------------------------------------------------------
// Convergence and lost writes
// ---------------------------------------------------------------------------------------------

export class NotConverged extends Data.TaggedError("NotConverged")<{ readonly message: string }> {}

export interface Convergence {
  readonly master: MasterSeen
  /** Names of the replicas linked to it. */
  readonly replicas: ReadonlyArray<string>
}

const field = (v: unknown, ...keys: ReadonlyArray<string>): unknown =>
  keys.reduce<unknown>((o, k) => (typeof o === "object" && o !== null ? (o as Record<string, unknown>)[k] : undefined), v)

/** One write with a short timeout on a fresh connection: "OK" or why not. */
const probeWrite = (a: Address, key: string, timeoutMs: number): Effect.Effect<string> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const c = oneShotRedis(a, { connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs })
      c.on("error", () => {})
      return c
    }),
    (c) =>
      Effect.tryPromise(async () => {
        await c.connect()
        return await c.set(key, "x")
      }).pipe(
        Effect.timeout(Duration.millis(timeoutMs + 200)),
        Effect.map(String),
        Effect.catchAll((e) => Effect.succeed(errorText(e)))
      ),
    (c) => Effect.sync(() => c.disconnect())
  )

/**
 * The service has converged: exactly one running Redis is master; it is the one the master
 * znode names and it accepts a write; every other running Redis replicates from it with
 * master_link_status up and has received that write (its offset reached the master's); every
 * running dictator is connected to ZooKeeper, sees that master, finds its Redis healthy and
 * reports the matching role. Fails with what is not so yet.
 */
export const converged = (t: Topology): Effect.Effect<Convergence, NotConverged> =>
  Effect.gen(function* () {
    const notYet = (message: string) => Effect.fail(new NotConverged({ message }))
    const znode = yield* readMaster(t.zk.hosts, t.svc).pipe(Effect.mapError((e) => new NotConverged({ message: e.message })))
    if (Option.isNone(znode)) return yield* notYet("no master znode")
    const m = znode.value
    const running = yield* Effect.filter(t.nodes, (n) => n.redis.running)
    const infos = yield* Effect.forEach(
      running,
      (n) =>
        redisCommand(n.redis.port, ["INFO", "replication"], n.redis.host).pipe(
          Effect.timeout("2 seconds"),
          Effect.mapError((e) => new NotConverged({ message: `${n.name}: INFO replication: ${errorText(e)}` })),
          Effect.map((text) => ({ node: n, text }))
        ),
      { concurrency: "unbounded" }
    )
    const masters = infos.filter((i) => infoField(i.text, "role") === "master")
    if (masters.length !== 1) return yield* notYet(`${masters.length} Redis masters (${masters.map((i) => i.node.name).join(", ")})`)
    const master = masters[0]!.node
    if (master.name !== m.name || master.redis.port !== m.port) {
      return yield* notYet(`the master znode names ${m.name} (:${m.port}) but the Redis master is ${master.name} (:${master.redis.port})`)
    }
    const replicas: Array<string> = []
    for (const i of infos) {
      if (i.node === master) continue
      const port = Number(infoField(i.text, "master_port"))
      const link = infoField(i.text, "master_link_status")
      if (port !== m.port || link !== "up") {
        return yield* notYet(`${i.node.name} replicates from :${port} with link ${link}, not from ${m.name} (:${m.port})`)
      }
      replicas.push(i.node.name)
    }
    const accepted = yield* probeWrite(m, "chaos:converged", 500)
    if (accepted !== "OK") return yield* notYet(`master ${m.name} does not accept a write: ${accepted}`)
    // "Linked" must mean "receiving the stream": after a diskless full sync, Redis shows the link
    // up but holds the stream back until the replica's next REPLCONF ACK (up to a second later).
    // So every replica must hold the write just made.
    const info = (n: TopologyNode) =>
      redisCommand(n.redis.port, ["INFO", "replication"], n.redis.host).pipe(
        Effect.timeout("2 seconds"),
        Effect.mapError((e) => new NotConverged({ message: `${n.name}: INFO replication: ${errorText(e)}` }))
      )
    const masterOffset = Number(infoField(yield* info(master), "master_repl_offset"))
    for (const i of infos) {
      if (i.node === master) continue
      const offset = Number(infoField(yield* info(i.node), "slave_repl_offset"))
      if (!(offset >= masterOffset)) {
        // A replica whose master link is blocked (CLIENT PAUSE WRITE blocks it too) counts it here.
        const blocked = yield* redisCommand(i.node.redis.port, ["INFO", "clients"], i.node.redis.host).pipe(
          Effect.map((text) => infoField(text, "blocked_clients") ?? "?"),
          Effect.orElseSucceed(() => "?")
        )
        return yield* notYet(
          `${i.node.name} is at offset ${offset}, behind ${m.name}'s ${masterOffset}: link up but the stream is not applied (yet); blocked_clients ${blocked}`
        )
      }
    }
    const dictators = yield* Effect.filter(t.nodes, (n) => n.dictator.running)
    for (const n of dictators) {
      const s = yield* n.dictator.status.pipe(Effect.mapError((e) => new NotConverged({ message: `${n.name}: ${e.message}` })))
      const wantRole = n.name === m.name ? "master" : "replica"
      const problems = [
        field(s, "session", "state") === "connected" ? null : `session ${String(field(s, "session", "state"))}`,
        field(s, "enabled") === true ? null : "disabled",
        field(s, "role") === wantRole ? null : `role ${String(field(s, "role"))} (want ${wantRole})`,
        field(s, "master", "name") === m.name && field(s, "master", "epoch") === m.czxid
          ? null
          : `master ${String(field(s, "master", "name"))}@${String(field(s, "master", "epoch"))} (want ${m.name}@${m.czxid})`,
        field(s, "redis", "state") === "healthy" ? null : `redis ${String(field(s, "redis", "state"))}`,
        field(s, "redis", "role") === wantRole ? null : `redis role ${String(field(s, "redis", "role"))}`
      ].filter((p) => p !== null)
      if (problems.length > 0) return yield* notYet(`dictator ${n.name}: ${problems.join(", ")}`)
    }
    return { master: m, replicas }
  })

/** Waits (real clock) for `converged`; the timeout error quotes what was still wrong. */
export const awaitConverged = (t: Topology, timeout: Duration.DurationInput = "60 seconds") =>
  waitUntil("the service to converge", Effect.map(converged(t), Option.some), { timeout, interval: "200 millis" })

/** The acknowledged writes missing from `key` on the Redis at `master` (the final master). */
export const lostWrites = (acks: ReadonlyArray<Ack>, master: Address, key: string = SET_KEY) =>
  Effect.gen(function* () {
    if (acks.length === 0) return []
    const members = new Set((yield* redisCommand(master.port, ["SMEMBERS", key], master.host)).split("\n"))
    return acks.filter((a) => !members.has(a.member))
  })
