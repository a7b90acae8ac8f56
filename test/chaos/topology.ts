/**
 * The topology every chaos file shares between its scenarios: a 3-server ZooKeeper ensemble
 * (tickTime 2000), 3 redis-servers and 3 dictators with the default timings of src/Config.ts.
 * `restoreAll` resets it between scenarios (resume what was stopped, restart what was killed,
 * wait for convergence); `scenario` runs one fault under a writer and a checker and prints one
 * summary line.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Clock, Context, Duration, Effect, Layer, Option, type Scope } from "effect"
import {
  dictator,
  readMaster,
  redisCommand,
  redisServer,
  repoRoot,
  waitUntil,
  type ZkServer,
  zooKeeperEnsemble
} from "../support/servers.js"
import {
  type Checker,
  type CheckerReport,
  type Convergence,
  type Topology,
  type TopologyNode,
  type Writer,
  type Ack,
  awaitConverged,
  checker,
  formatAddress,
  lostWrites,
  writer
} from "../support/workload.js"

// ---------------------------------------------------------------------------------------------
// The documented windows
// ---------------------------------------------------------------------------------------------

/**
 * Longest time two *placed* Redis servers may both be seen accepting writes (ms).
 *
 * When the old master cannot fence itself (its dictator is dead or frozen), it may keep taking
 * writes while it still has one linked replica (min-replicas-to-write 1): from the moment the new
 * master runs REPLICAOF NO ONE until the last replica is re-pointed by its own dictator (one watch
 * notification and one REPLICAOF, or one controller tick, check_interval_ms = 100, when a
 * notification is missed), or, after a freeze, until the woken Redis has read its replicas'
 * closed links. Add the sampling: a run of accepted probes spans from the send time of its first
 * probe to the reply time of its last, and probes go out every 50 ms. 100 + 50 ms, plus 100 ms of
 * scheduling slack on a loaded 2-core machine.
 */
export const FENCING_WINDOW_MS = 250

/**
 * Longest time a restarted redis-server, before its dictator has placed it, may be seen
 * accepting writes while that dictator runs (ms). redis-server starts as an empty master (its
 * default config, as the harness runs it), so it takes writes until its dictator's next health
 * check (check_interval_ms = 100, after the reconnect backoff of the dictator's Redis client,
 * ≤ 200 ms) sees it and runs REPLICAOF. No client that follows ZooKeeper writes there: the master
 * znode never names it. Such runs are left out of the overlap check above and bounded here.
 */
export const RESTART_WINDOW_MS = 1000

/**
 * The same when the dictator restarts with its Redis (host death, Redis first): the dictator's
 * start-up (Node, ZooKeeper session, first check; 1-2 s here) comes before its first check.
 */
export const HOST_RESTART_WINDOW_MS = 5000

/**
 * How long after a frozen old master wakes up a stale client on it may still see writes
 * acknowledged (README, How failover works: "The window"). When the host wakes, its Redis runs
 * the command already in its socket, and keeps taking writes on its count of good replicas from
 * before the freeze (refreshed by its replication cron or a replica's report) until its dictator, woken
 * too, sees it lost the znode and pauses it: the liveness loop's next turn (at most 125 ms) and
 * one CLIENT PAUSE round trip. Any write acknowledged later than this fails the scenario.
 */
export const STALE_ACK_WINDOW_MS = 250

/** Timings the scenarios derive their waits from: the defaults of src/Config.ts, which the harness keeps. */
export const DOWN_AFTER_MS = 1000
export const ZK_TICK_MS = 2000

// ---------------------------------------------------------------------------------------------
// The topology as a shared layer
// ---------------------------------------------------------------------------------------------

export class Topo extends Context.Tag("chaos/Topology")<Topo, Topology>() {}

const NAMES = ["redis1", "redis2", "redis3"] as const

/**
 * Redis args: `repl-diskless-sync-delay 0` so a restarted (empty) replica gets its full sync at
 * once rather than after Redis's default 5 s wait for more replicas (20 failovers × 5 s would
 * blow the time budget); `enable-debug-command yes` for DEBUG SLEEP (loopback only anyway).
 */
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0", "--enable-debug-command", "yes"]

/** What a chaos file may change: dictator config keys, and the ZooKeeper hosts the dictators list. */
export interface TopologyOptions {
  readonly extra?: Record<string, unknown>
  /** The dictators' zk_hosts from the ensemble's servers (default: the servers' own addresses). */
  readonly dictatorZkHosts?: (zk: { readonly servers: ReadonlyArray<ZkServer>; readonly hosts: ReadonlyArray<string> }) => Effect.Effect<ReadonlyArray<string>, unknown, Scope.Scope>
  /** redis.conf lines of every Redis (e.g. an ACL user for the dictators). */
  readonly redisConfigLines?: ReadonlyArray<string>
  /** Bound of each dictator's start (its /ping), for a loaded machine; the harness's default otherwise. */
  readonly readyTimeout?: Duration.DurationInput
}

export const makeTopology = (svc: string, opts?: TopologyOptions): Effect.Effect<Topology, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const zk = yield* zooKeeperEnsemble(3, { tickTime: ZK_TICK_MS })
    const zkHosts = opts?.dictatorZkHosts === undefined ? zk.hosts : yield* opts.dictatorZkHosts(zk)
    const redis = yield* Effect.forEach(NAMES, () =>
      redisServer({ args: REDIS_ARGS, ...(opts?.redisConfigLines === undefined ? {} : { configLines: opts.redisConfigLines }) })
    )
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) =>
        dictator({
          name,
          svc,
          zkHosts,
          redisPort: redis[i]!.port,
          ...(opts?.extra === undefined ? {} : { extra: opts.extra }),
          ...(opts?.readyTimeout === undefined ? {} : { readyTimeout: opts.readyTimeout })
        }),
      { concurrency: "unbounded" }
    )
    // Registered last, so it runs first: no graceful handovers one after the other at teardown.
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    const t: Topology = {
      svc,
      zk,
      nodes: NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! }))
    }
    yield* awaitConverged(t, "60 seconds")
    return t
  })

export const layer = (svc: string, opts?: TopologyOptions) => Layer.scoped(Topo, makeTopology(svc, opts))

// ---------------------------------------------------------------------------------------------
// Reset and helpers
// ---------------------------------------------------------------------------------------------

export const nodeNamed = (t: Topology, name: string): TopologyNode => {
  const n = t.nodes.find((x) => x.name === name)
  if (n === undefined) throw new Error(`no node ${name}`)
  return n
}

export const redisAddresses = (t: Topology) => t.nodes.map((n) => ({ name: n.name, host: n.redis.host, port: n.redis.port }))

/** The ZooKeeper ensemble serves again: one leader, every other running server a follower. */
export const awaitQuorum = (t: Topology, timeout: Duration.DurationInput = "60 seconds") =>
  waitUntil(
    "a ZooKeeper quorum of every server",
    Effect.forEach(t.zk.servers, (s) => s.mode, { concurrency: "unbounded" }).pipe(
      Effect.map((modes) =>
        modes.filter((m) => m === "leader").length === 1 && modes.every((m) => m === "leader" || m === "follower")
          ? Option.some(modes)
          : Option.none()
      )
    ),
    { timeout, interval: "200 millis" }
  )

/**
 * Back to a healthy service: resume every process (SIGCONT is harmless to a running one),
 * restart whatever is not running (ZooKeeper, then Redis, then dictators), wait for convergence.
 */
export const restoreAll = (t: Topology): Effect.Effect<Convergence, unknown> =>
  Effect.gen(function* () {
    const all = [...t.zk.servers, ...t.nodes.flatMap((n) => [n.redis, n.dictator])]
    yield* Effect.forEach(all, (p) => p.signal("SIGCONT"), { discard: true })
    const zkDown = yield* Effect.filter(t.zk.servers, (s) => Effect.map(s.running, (r) => !r))
    yield* Effect.forEach(zkDown, (s) => s.start, { concurrency: "unbounded", discard: true })
    yield* awaitQuorum(t)
    for (const n of t.nodes) if (!(yield* n.redis.running)) yield* n.redis.start
    const dictatorsDown = yield* Effect.filter(t.nodes, (n) => Effect.map(n.dictator.running, (r) => !r))
    yield* Effect.forEach(dictatorsDown, (n) => n.dictator.start, { concurrency: "unbounded", discard: true })
    return yield* awaitConverged(t, "90 seconds")
  })

export const masterOf = (t: Topology, c: Convergence): TopologyNode => nodeNamed(t, c.master.name)

/** Waits until the master znode names a node other than `oldName` and that node's Redis takes a write. */
export const awaitNewMaster = (t: Topology, oldName: string, timeout: Duration.DurationInput = "60 seconds") =>
  waitUntil(
    `a writable master other than ${oldName}`,
    Effect.gen(function* () {
      const m = yield* readMaster(t.zk.hosts, t.svc)
      if (Option.isNone(m) || m.value.name === oldName) return Option.none()
      const ok = yield* redisCommand(m.value.port, ["SET", "chaos:new-master", "x"], m.value.host).pipe(Effect.timeout("1 second"))
      return ok === "OK" ? Option.some(m.value) : Option.none()
    }),
    { timeout, interval: "50 millis" }
  )

/** Scenario a's fault: kill -9 the master's Redis, wait for another writable master, start it again. */
export const killMasterRedis = ({ before, t }: Workload) =>
  Effect.gen(function* () {
    const old = masterOf(t, before)
    const faultAt = yield* Clock.currentTimeMillis
    yield* old.redis.kill9
    yield* awaitNewMaster(t, old.name)
    yield* old.redis.start
    return { faultAt, oldPort: old.redis.port, old: old.name }
  })

/** Time from the fault to the first write a server other than the failed one accepted. */
export const newWritableAfter = (o: Outcome<{ readonly faultAt: number; readonly oldPort: number }>) => {
  const first = o.checker.firstAcceptSince(o.result.faultAt, o.result.oldPort)
  return first === undefined ? undefined : first.at - o.result.faultAt
}

export const sinceMs = (t0: number) => Effect.map(Clock.currentTimeMillis, (t) => t - t0)

// ---------------------------------------------------------------------------------------------
// Logs of a failed scenario
// ---------------------------------------------------------------------------------------------

const tailLines = (s: string, n: number) => s.split("\n").slice(-n).join("\n")

/** Writes every process's full output to .vitest-tmp/chaos-logs/<svc>-<tag>/; returns the dir. */
export const saveLogs = (t: Topology, tag: string): string => {
  const dir = path.join(repoRoot(), ".vitest-tmp", "chaos-logs", `${t.svc}-${tag.replace(/[^A-Za-z0-9_.-]+/g, "_")}`)
  try {
    fs.mkdirSync(dir, { recursive: true })
    for (const n of t.nodes) {
      fs.writeFileSync(path.join(dir, `dictator-${n.name}.log`), n.dictator.output())
      fs.writeFileSync(path.join(dir, `redis-${n.name}.log`), n.redis.output())
    }
    for (const s of t.zk.servers) fs.writeFileSync(path.join(dir, `zookeeper-${s.id}.log`), s.output())
  } catch {
    // best effort
  }
  return dir
}

/**
 * On failure: every process's full output goes to .vitest-tmp/chaos-logs/<svc>-<tag>/, and the
 * last lines of each dictator's to stderr, so CI shows what the dictators did.
 * (CHAOS_KEEP_LOGS=1 saves them after every scenario.)
 */
export const dumpOnFailure = (t: Topology, tag: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    self.pipe(
      Effect.tapErrorCause((cause) =>
        Effect.sync(() => {
          if (Cause.isInterruptedOnly(cause)) return
          const dir = saveLogs(t, tag)
          for (const n of t.nodes) {
            console.error(`----- dictator ${n.name} (last 40 lines; full logs in ${dir}) -----\n${tailLines(n.dictator.output(), 40)}`)
          }
        })
      ),
      Effect.tap(() => (process.env.CHAOS_KEEP_LOGS === "1" ? Effect.sync(() => saveLogs(t, tag)) : Effect.void))
    )

// ---------------------------------------------------------------------------------------------
// One scenario under load
// ---------------------------------------------------------------------------------------------

export interface Workload {
  readonly t: Topology
  readonly before: Convergence
  readonly writer: Writer
  readonly checker: Checker
}

export interface Outcome<A> {
  readonly result: A
  readonly before: Convergence
  readonly after: Convergence
  readonly acks: ReadonlyArray<Ack>
  readonly stats: ReturnType<Writer["stats"]>
  readonly lost: ReadonlyArray<Ack>
  readonly report: CheckerReport
  readonly checker: Checker
  readonly writer: Writer
}

/**
 * Resets the topology, starts a checker and a writer, waits for some acknowledged writes, runs
 * `body` (the fault, and the restart of what it broke), waits for convergence again, lets the
 * writer run a little on the final master, stops both and collects the figures.
 */
export const scenario = <A, E>(
  t: Topology,
  tag: string,
  body: (w: Workload) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<Outcome<A>, unknown> =>
  Effect.gen(function* () {
    const before = yield* restoreAll(t)
    const chk = yield* checker(redisAddresses(t))
    const w = yield* writer(t, { tag })
    yield* waitUntil(
      "the writer's first acknowledged writes",
      Effect.sync(() => (w.acks().length >= 20 ? Option.some(true) : Option.none())),
      { timeout: "20 seconds", interval: "20 millis" }
    )
    const result = yield* body({ t, before, writer: w, checker: chk })
    // Convergence takes seconds; a scenario that has not converged in 45 s has found a bug.
    const after = yield* awaitConverged(t, "45 seconds")
    // A few writes on the final master, seen by the writer through ZooKeeper.
    const settled = w.acks().length
    yield* waitUntil(
      "acknowledged writes on the final master",
      Effect.sync(() =>
        w.acks().slice(settled).filter((a) => a.address === formatAddress(after.master)).length >= 10
          ? Option.some(true)
          : Option.none()
      ),
      { timeout: "20 seconds", interval: "20 millis" }
    )
    yield* w.stop
    yield* chk.stop
    const lost = yield* lostWrites(w.acks(), after.master)
    if (process.env.CHAOS_KEEP_LOGS === "1") {
      const dir = saveLogs(t, tag)
      fs.writeFileSync(
        path.join(dir, "workload.json"),
        JSON.stringify({ result, before, after, lost, acks: w.acks(), failures: w.failures(), history: w.follower.history(), samples: chk.samples() })
      )
    }
    return {
      result,
      before,
      after,
      acks: w.acks(),
      stats: w.stats(),
      lost,
      report: chk.report(),
      checker: chk,
      writer: w
    }
  }).pipe(Effect.scoped, dumpOnFailure(t, tag))

export const fmtMs = (ms: number | undefined) => (ms === undefined ? "-" : `${Math.round(ms)} ms`)

/** One line for CI output: the figures of a scenario. */
export const summary = (
  label: string,
  o: Outcome<unknown>,
  extra: Record<string, string> = {}
): string => {
  const parts = [
    `acked ${o.stats.acked}`,
    `failed ${o.stats.failed}`,
    `lost ${o.lost.length}`,
    `max overlap ${fmtMs(o.report.maxOverlapMs)} (${o.report.overlaps.length})`,
    `unplaced writable ${fmtMs(o.report.maxUnplacedMs)}`,
    ...Object.entries(extra).map(([k, v]) => `${k} ${v}`)
  ]
  const faultAt = (o.result as { readonly faultAt?: unknown } | null)?.faultAt
  if (o.lost.length > 0 && typeof faultAt === "number") {
    const rel = o.lost.map((a) => a.at - faultAt)
    parts.push(`lost writes acked ${Math.min(...rel)}..${Math.max(...rel)} ms from the fault by ${[...new Set(o.lost.map((a) => a.address))].join(", ")}`)
  }
  return `[chaos] ${label}: ${o.before.master.name} -> ${o.after.master.name}; ${parts.join(", ")}`
}

export const describeOverlaps = (r: CheckerReport): string =>
  r.overlaps.map((o) => `${o.a}+${o.b} ${o.ms} ms @${new Date(o.from).toISOString()}`).join("; ")
