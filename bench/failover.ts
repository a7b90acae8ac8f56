/**
 * Failover benchmark (issue 3, "Proof 2"): Dictator against Redis Sentinel on the same machine,
 * in the same run, on the same 3-Redis topology (redis-server on free ports of 127.0.0.1).
 *
 *   npm run bench                                   every case, 5 rounds each
 *   npm run bench -- --rounds 3                     3 rounds each
 *   npm run bench -- --cases dictator-handover,sentinel-redis-killed
 *   npm run bench -- --cases sentinel --logs /tmp/bench-logs
 *
 * Dictator: a 3-server ZooKeeper ensemble (tickTime 2000), 3 dictators with the default settings
 * of src/Config.ts. Sentinel: 3 `redis-sentinel`, quorum 2, down-after-milliseconds 1000,
 * failover-timeout 10000, parallel-syncs 1.
 *
 * Each round starts from a converged service, runs a writer that follows the system's own
 * discovery (`SADD bench:<case>:<round>:acked <id>`, one write in flight, every acknowledgment
 * recorded with its time and server), injects the fault, and measures (times from the fault):
 *   (a) the first write acknowledged by a server other than the old master;
 *   (b) every other running replica linked (`master_link_status:up`) to that new master;
 *   (c) acknowledged writes missing on the final master once the topology is restored;
 *   (d) frozen cases: writes the old master acknowledged, to a client pinned to it, after the new
 *       master took its first write (SIGCONT comes 3 s after that);
 *   (e) the longest interval without an acknowledged write.
 * Then it restores the topology (resume, restart, converge, settle). Every wait is bounded; a
 * round that fails is recorded with its error and the logs' tails, and the run goes on.
 * Prints a table and writes every round, the summary and the machine to bench/results/<date>.json.
 */
// Children in their own process group: a Ctrl-C reaches only this process, which then stops
// them in order (read by the harness at spawn time).
process.env.HARNESS_DETACH = "1"

import { spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Duration, Effect, Exit, Fiber, Option, type Scope } from "effect"
import { DictatorConfig } from "../src/Config.js"
import * as Operator from "../src/Operator.js"
import {
  type DictatorProcess,
  type RedisServer,
  type ZkServer,
  dictator,
  redisServer,
  repoRoot,
  waitUntil,
  zkSessionsOn,
  zooKeeperEnsemble
} from "../test/support/servers.js"
import {
  type Ack,
  type Address,
  type Discovery,
  type Link,
  Link as RedisLink,
  errorText,
  failureSummary,
  formatAddress,
  isLinkedTo,
  links,
  now,
  replication,
  sentinelDiscovery,
  staleWriter,
  writer,
  zkDiscovery
} from "./clients.js"
import {
  CASE_IDS,
  type CaseId,
  type MemoryLine,
  type RoundResult,
  compare,
  summarize,
  table,
  targets
} from "./report.js"
import { type SentinelOptions, type SentinelProcess, sentinelProcess } from "./sentinel.js"

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const NAMES = ["redis1", "redis2", "redis3"] as const
const SVC = "bench"
const ZK_TICK_MS = 2000
/**
 * Both systems run the same redis-server args. `repl-diskless-sync-delay 0`: a restarted (empty)
 * replica gets its full sync at once instead of after Redis's default 5 s wait (restores only).
 */
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]
const SENTINEL: Omit<SentinelOptions, "masterPort"> = {
  masterName: "bench",
  quorum: 2,
  downAfterMs: 1000,
  failoverTimeoutMs: 10000,
  parallelSyncs: 1
}
/** Writes acknowledged on the master before the fault, and how long to let things run after. */
const WARMUP_ACKS = 200
const FREEZE_AFTER_WRITABLE_MS = 3000
const AFTER_MS = 1000
const SETTLE_MS = 3000
const FAILOVER_TIMEOUT_MS = 30000
const CONVERGE_TIMEOUT_MS = 90000

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

interface Options {
  readonly rounds: number
  readonly cases: ReadonlyArray<CaseId>
  readonly logsDir?: string
}

const USAGE = `usage: npm run bench -- [--rounds N] [--cases a,b,...] [--logs DIR]
  --rounds N    rounds per case (default 5)
  --cases LIST  comma-separated case ids, or "dictator" / "sentinel" / "all" (default all):
                ${CASE_IDS.join("\n                ")}
  --logs DIR    also write every process's full output to DIR at the end of each system's run`

const parseArgs = (argv: ReadonlyArray<string>): Options => {
  let rounds = 5
  let cases: Array<CaseId> = [...CASE_IDS]
  let logsDir: string | undefined
  const fail = (msg: string): never => {
    console.error(`bench: ${msg}\n${USAGE}`)
    process.exit(2)
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`)
    switch (flag) {
      case "--rounds": {
        const v = value()
        rounds = Number(v)
        if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) fail(`--rounds ${v}: must be an integer from 1 to 1000`)
        break
      }
      case "--cases": {
        const picked = new Set<CaseId>()
        for (const name of value().split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
          const matching = name === "all" ? CASE_IDS : CASE_IDS.filter((c) => c === name || c.startsWith(`${name}-`))
          if (matching.length === 0) fail(`unknown case "${name}"`)
          matching.forEach((c) => picked.add(c))
        }
        cases = CASE_IDS.filter((c) => picked.has(c))
        break
      }
      case "--logs":
        logsDir = path.resolve(value())
        break
      case "--help":
      case "-h":
        console.log(USAGE)
        process.exit(0)
        break
      default:
        fail(`unknown argument ${arg}`)
    }
  }
  return { rounds, cases, ...(logsDir === undefined ? {} : { logsDir }) }
}

// ---------------------------------------------------------------------------------------------
// The two systems behind one interface
// ---------------------------------------------------------------------------------------------

interface Node {
  readonly name: string
  readonly redis: RedisServer
  /** Dictator only. */
  readonly dictator?: DictatorProcess
}

interface System {
  readonly kind: "dictator" | "sentinel"
  readonly nodes: ReadonlyArray<Node>
  readonly discovery: Discovery
  /** Short-timeout connections for INFO and probes. */
  readonly monitor: (a: Address) => Link
  /** Resume what is stopped, restart what was killed, wait until converged, settle; the master. */
  readonly restore: Effect.Effect<Node, unknown>
  /** Tails (or full text) of every process's output. */
  readonly outputs: (lines?: number) => Record<string, string>
  /** The system's own processes (dictators or sentinels), for their memory. */
  readonly daemons: () => ReadonlyArray<{ readonly name: string; readonly pid: number | undefined }>
  /** ZooKeeper's hosts (the dictator system's; none for Sentinel). */
  readonly zkHosts: ReadonlyArray<string>
}

const addressOf = (n: Node): Address => ({ host: n.redis.host, port: n.redis.port })

const tailLines = (s: string, n: number) => s.split("\n").slice(-n).join("\n")

const field = (v: unknown, k: string): unknown =>
  typeof v === "object" && v !== null ? (v as Record<string, unknown>)[k] : undefined

/** Polls `probe` (a failure counts as "not yet") until it yields a value; bounded. */
const waitFor = <A>(
  what: string,
  probe: () => Promise<A | undefined | null> | A | undefined | null,
  timeoutMs: number,
  intervalMs = 10
): Effect.Effect<NonNullable<A>, unknown> =>
  waitUntil(
    what,
    Effect.tryPromise(async () => Option.fromNullable(await probe())),
    { timeout: Duration.millis(timeoutMs), interval: Duration.millis(intervalMs) }
  )

/** The master named by discovery, if it is one of the nodes. */
const discoveredNode = (sys: System): Node | undefined => {
  const m = sys.discovery.current()
  return m === null ? undefined : sys.nodes.find((n) => n.redis.port === m.port)
}

/** Every node's Redis: the master role on `master`, every other one linked to it. */
const redisConverged = async (sys: System, master: Node): Promise<boolean> => {
  const reps = await Promise.all(sys.nodes.map((n) => replication(sys.monitor(addressOf(n))).catch(() => null)))
  return sys.nodes.every((n, i) => {
    const r = reps[i]
    if (r === null || r === undefined) return false
    return n === master ? r.role === "master" : isLinkedTo(r, addressOf(master))
  })
}

const writable = async (sys: System, n: Node): Promise<boolean> =>
  sys.monitor(addressOf(n)).call("SET", "bench:probe", "x").then((r) => r === "OK", () => false)

// --- Dictator ---------------------------------------------------------------------------------

interface DictatorSystem extends System {
  readonly dictators: ReadonlyArray<DictatorProcess>
  readonly zkPorts: ReadonlyArray<number>
  readonly zkServers: ReadonlyArray<ZkServer>
}

const dictatorSystem: Effect.Effect<DictatorSystem, unknown, Scope.Scope> =
  Effect.gen(function* () {
    log("dictator: starting a 3-server ZooKeeper ensemble (tickTime 2000), 3 redis-servers, 3 dictators")
    const zk = yield* zooKeeperEnsemble(3, { tickTime: ZK_TICK_MS })
    const redis = yield* Effect.forEach(NAMES, () => redisServer({ args: REDIS_ARGS }))
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) =>
        dictator({
          name,
          svc: SVC,
          zkHosts: zk.hosts,
          redisPort: redis[i]!.port,
          // For diagnosis only (timings are measured at the default, INFO).
          ...(process.env.BENCH_DICTATOR_LOG_LEVEL === undefined ? {} : { logLevel: process.env.BENCH_DICTATOR_LOG_LEVEL })
        }),
      { concurrency: "unbounded" }
    )
    // Registered after the dictators, so it runs before their own release: no chain of graceful
    // handovers at teardown.
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    // Runs first: a process left SIGSTOPped by a failed round would never act on the SIGTERM of
    // its release (and the harness's stop would wait for it forever).
    yield* Effect.addFinalizer(() => Effect.forEach([...redis, ...dictators], (p) => p.signal("SIGCONT"), { discard: true }))
    const nodes: ReadonlyArray<Node> = NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! }))
    const discovery = yield* zkDiscovery(zk.hosts, SVC)
    const monitor = yield* links({ commandTimeoutMs: 500, name: "bench-monitor" })

    /** Converged: the znode names a writable master, every Redis placed, every dictator agreeing. */
    const converged = Effect.gen(function* () {
      const master = discoveredNode(sys)
      if (master === undefined) return Option.none()
      if (!(yield* Effect.promise(() => redisConverged(sys, master)))) return Option.none()
      const statuses = yield* Effect.forEach(nodes, (n) => n.dictator!.status, { concurrency: "unbounded" })
      const agree = statuses.every((st, i) => {
        const members = field(st, "members")
        return (
          field(st, "role") === (nodes[i] === master ? "master" : "replica") &&
          Array.isArray(members) &&
          members.length === nodes.length &&
          members.every((m) => field(m, "healthy") === true)
        )
      })
      if (!agree) return Option.none()
      return (yield* Effect.promise(() => writable(sys, master))) ? Option.some(master) : Option.none()
    })

    /** Restarts what is not running (Redis first, then dictators); a no-op when all run. */
    const restartDead = Effect.gen(function* () {
      for (const n of nodes) if (!(yield* n.redis.running)) yield* n.redis.start
      yield* Effect.forEach(
        nodes,
        (n) => Effect.flatMap(n.dictator!.running, (up) => (up ? Effect.void : n.dictator!.start)),
        { concurrency: "unbounded", discard: true }
      )
    })

    const restore = Effect.gen(function* () {
      for (const n of nodes) {
        yield* n.redis.signal("SIGCONT")
        yield* n.dictator!.signal("SIGCONT")
      }
      // Restarts inside the wait: a process may still be on its way out (a SIGTERMed dictator
      // handing over) when the restore begins.
      const master = yield* waitUntil("a converged Dictator service", Effect.zipRight(restartDead, converged), {
        timeout: Duration.millis(CONVERGE_TIMEOUT_MS),
        interval: "200 millis"
      })
      yield* Effect.sleep(Duration.millis(SETTLE_MS))
      return master
    })

    const sys: DictatorSystem = {
      kind: "dictator",
      zkHosts: zk.hosts,
      nodes,
      discovery,
      monitor,
      restore,
      dictators,
      zkPorts: zk.servers.map((s) => s.clientPort),
      zkServers: zk.servers,
      daemons: () => dictators.map((d) => ({ name: `dictator-${d.name}`, pid: d.pid() })),
      outputs: (lines) => {
        const pick = (s: string) => (lines === undefined ? s : tailLines(s, lines))
        const out: Record<string, string> = {}
        for (const n of nodes) {
          out[`dictator-${n.name}`] = pick(n.dictator!.output())
          out[`redis-${n.name}`] = pick(n.redis.output())
        }
        for (const s of zk.servers) out[`zookeeper-${s.id}`] = pick(s.output())
        return out
      }
    }
    yield* restore
    return sys
  })

// --- Sentinel ---------------------------------------------------------------------------------

const sentinelSystem: Effect.Effect<System & { readonly sentinels: ReadonlyArray<SentinelProcess> }, unknown, Scope.Scope> =
  Effect.gen(function* () {
    log("sentinel: starting 3 redis-servers (1 master, 2 replicas) and 3 redis-sentinels (quorum 2, down-after 1000 ms)")
    const redis = yield* Effect.forEach(NAMES, () => redisServer({ args: REDIS_ARGS }))
    const nodes: ReadonlyArray<Node> = NAMES.map((name, i) => ({ name, redis: redis[i]! }))
    const first = redis[0]!
    for (const r of redis.slice(1)) yield* r.cli("REPLICAOF", first.host, String(first.port))
    const sentinels = yield* Effect.forEach([1, 2, 3], () => sentinelProcess({ ...SENTINEL, masterPort: first.port }))
    // Runs before the servers' release: a redis-server left SIGSTOPped by a failed round would
    // never act on its SIGTERM.
    yield* Effect.addFinalizer(() => Effect.forEach(redis, (r) => r.signal("SIGCONT"), { discard: true }))
    const discovery = yield* sentinelDiscovery(sentinels, SENTINEL.masterName)
    const monitor = yield* links({ commandTimeoutMs: 500, name: "bench-monitor" })

    const pairs = (reply: unknown): Record<string, string> => {
      const out: Record<string, string> = {}
      if (Array.isArray(reply)) for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1])
      return out
    }

    /** Every sentinel names the same master, sees it healthy with 2 linked replicas and the 2 other sentinels. */
    const sentinelsAgree = async (master: Node): Promise<boolean> => {
      for (const s of sentinels) {
        const l = monitor(s)
        const addr = (await l.call("SENTINEL", "get-master-addr-by-name", SENTINEL.masterName)) as Array<string>
        if (Number(addr[1]) !== master.redis.port) return false
        const m = pairs(await l.call("SENTINEL", "master", SENTINEL.masterName))
        if (m.flags !== "master" || m["num-slaves"] !== "2" || m["num-other-sentinels"] !== "2") return false
        const replicas = (await l.call("SENTINEL", "replicas", SENTINEL.masterName)) as Array<unknown>
        const ok = replicas.map(pairs).every((r) => r.flags === "slave" && r["master-link-status"] === "ok" && Number(r["master-port"]) === master.redis.port)
        if (!ok) return false
      }
      return true
    }

    const converged = Effect.promise(async () => {
      const master = discoveredNode(sys)
      if (master === undefined) return Option.none<Node>()
      const ok = (await redisConverged(sys, master)) && (await sentinelsAgree(master).catch(() => false)) && (await writable(sys, master))
      return ok ? Option.some(master) : Option.none<Node>()
    })

    /**
     * Restarts a killed redis-server. It comes up as an empty master (no config file to remember
     * REPLICAOF in): point it at the current master, as its config file would, rather than
     * waiting for Sentinel to convert it.
     */
    const restartDead = Effect.gen(function* () {
      for (const n of nodes) {
        if (yield* n.redis.running) continue
        yield* n.redis.start
        const master = discoveredNode(sys)
        if (master !== undefined && master !== n) yield* n.redis.cli("REPLICAOF", master.redis.host, String(master.redis.port))
      }
    })

    const restore = Effect.gen(function* () {
      for (const n of nodes) yield* n.redis.signal("SIGCONT")
      const master = yield* waitUntil("a converged Sentinel service", Effect.zipRight(restartDead, converged), {
        timeout: Duration.millis(CONVERGE_TIMEOUT_MS),
        interval: "200 millis"
      })
      yield* Effect.sleep(Duration.millis(SETTLE_MS))
      return master
    })

    const sys: System & { readonly sentinels: ReadonlyArray<SentinelProcess> } = {
      kind: "sentinel",
      zkHosts: [],
      nodes,
      discovery,
      monitor,
      restore,
      sentinels,
      daemons: () => sentinels.map((s, i) => ({ name: `sentinel-${i + 1}`, pid: s.pid() })),
      outputs: (lines) => {
        const pick = (s: string) => (lines === undefined ? s : tailLines(s, lines))
        const out: Record<string, string> = {}
        sentinels.forEach((s, i) => (out[`sentinel-${i + 1}`] = pick(s.output())))
        for (const n of nodes) out[`redis-${n.name}`] = pick(n.redis.output())
        return out
      }
    }
    yield* restore
    return sys
  })

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

interface CaseDef {
  readonly id: CaseId
  readonly system: "dictator" | "sentinel"
  /** Freeze the old master; `resume` after the new master is writable + 3 s. */
  readonly freeze: boolean
  /** The old master's Redis keeps running (and must become a replica of the new master). */
  readonly oldRedisRuns: boolean
  readonly fault: (n: Node, sys: System) => Effect.Effect<void, unknown>
  readonly resume?: (n: Node) => Effect.Effect<void>
  /** Freeze the ZooKeeper server the master's dictator is connected to instead (issue 7). */
  readonly zkFreeze?: boolean
  /** The old master's dictator keeps running (a switchover); otherwise, with oldRedisRuns, it exits. */
  readonly dictatorStays?: boolean
}

const CASES: Record<CaseId, CaseDef> = {
  "dictator-redis-killed": {
    id: "dictator-redis-killed",
    system: "dictator",
    freeze: false,
    oldRedisRuns: false,
    fault: (n) => n.redis.signal("SIGKILL")
  },
  "dictator-host-killed": {
    id: "dictator-host-killed",
    system: "dictator",
    freeze: false,
    oldRedisRuns: false,
    fault: (n) => Effect.zipRight(n.redis.signal("SIGKILL"), n.dictator!.signal("SIGKILL"))
  },
  "dictator-host-frozen": {
    id: "dictator-host-frozen",
    system: "dictator",
    freeze: true,
    oldRedisRuns: false,
    fault: (n) => Effect.zipRight(n.redis.signal("SIGSTOP"), n.dictator!.signal("SIGSTOP")),
    resume: (n) => Effect.zipRight(n.redis.signal("SIGCONT"), n.dictator!.signal("SIGCONT"))
  },
  "dictator-handover": {
    id: "dictator-handover",
    system: "dictator",
    freeze: false,
    oldRedisRuns: true,
    fault: (n) => n.dictator!.signal("SIGTERM")
  },
  "dictator-zookeeper-frozen": {
    id: "dictator-zookeeper-frozen",
    system: "dictator",
    freeze: true,
    oldRedisRuns: true,
    zkFreeze: true,
    fault: () => Effect.void
  },
  "dictator-switchover": {
    id: "dictator-switchover",
    system: "dictator",
    freeze: false,
    oldRedisRuns: true,
    dictatorStays: true,
    // The operator's command, run in this process (no node start-up in the figures): it writes
    // the request znode and returns once the old master's dictator recorded the outcome.
    fault: (_n, sys) =>
      Effect.flatMap(Effect.scoped(Operator.run(["switchover", SVC, `--zk=${sys.zkHosts.join(",")}`, "--wait=30"])), (code) =>
        code === 0 ? Effect.void : Effect.fail(new Error(`dictator switchover exited ${code}`))
      )
  },
  "sentinel-redis-killed": {
    id: "sentinel-redis-killed",
    system: "sentinel",
    freeze: false,
    oldRedisRuns: false,
    fault: (n) => n.redis.signal("SIGKILL")
  },
  "sentinel-master-frozen": {
    id: "sentinel-master-frozen",
    system: "sentinel",
    freeze: true,
    oldRedisRuns: false,
    fault: (n) => n.redis.signal("SIGSTOP"),
    resume: (n) => n.redis.signal("SIGCONT")
  }
}

// ---------------------------------------------------------------------------------------------
// One round
// ---------------------------------------------------------------------------------------------

/** The first ack at or after `from` matching `pred`; scans only what it has not seen. */
const ackFinder = (acks: () => ReadonlyArray<Ack>, from: number, pred: (a: Ack) => boolean) => {
  let i = 0
  return (): Ack | undefined => {
    const all = acks()
    for (; i < all.length; i++) {
      const a = all[i]!
      if (a.at >= from && pred(a)) return a
    }
    return undefined
  }
}

const maxGap = (acks: ReadonlyArray<Ack>, from: number): number | undefined => {
  let prev: number | undefined
  let gap: number | undefined
  for (const a of acks) {
    if (a.at < from) continue
    if (prev !== undefined) gap = Math.max(gap ?? 0, a.at - prev)
    prev = a.at
  }
  return gap
}

const round2 = (x: number) => Math.round(x * 100) / 100

/** Members of a set on `node`, over a connection with a generous timeout. */
const members = (node: Node, key: string): Promise<Set<string>> => {
  const link = new RedisLink(addressOf(node), { commandTimeoutMs: 20000, name: "bench-check" })
  return link
    .call("SMEMBERS", key)
    .then((r) => new Set((r as Array<unknown>).map(String)))
    .finally(() => link.close())
}

/** How long the ZooKeeper server stays frozen: longer than a session (6 s), so staying on it would lose the session. */
const ZK_FREEZE_MS = 8000

/**
 * The ZooKeeper server of the master's dictator frozen (SIGSTOP) while the quorum lives (issue 7):
 * expected, no failover at all (the dictator moves to another server, keeping its session); if
 * one happens anyway, the time to the new master's first write, the old master's acknowledgments
 * after it (two writers) and their span.
 */
const runZkFreezeRound = (sys: DictatorSystem, c: CaseDef, round: number, r: RoundResult): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const old = yield* sys.restore
    r.oldMaster = old.name
    const key = `bench:${c.id}:${round}:acked`
    const staleKey = `bench:${c.id}:${round}:stale`
    const w = yield* writer(sys.discovery, key)
    yield* waitFor(`${WARMUP_ACKS} writes acknowledged by ${old.name}`, () => w.acks().filter((a) => a.port === old.redis.port).length >= WARMUP_ACKS || undefined, 20000, 20)
    const stale = yield* staleWriter(addressOf(old), staleKey)
    yield* waitFor(`${WARMUP_ACKS} writes of the pinned client`, () => stale.acks().length >= WARMUP_ACKS || undefined, 20000, 20)
    // The server that lists the master's dictator's session.
    const st = yield* old.dictator!.status
    const sid = String(field(field(st, "session"), "id") ?? "").replace(/^0x0*/i, "").toLowerCase()
    let frozenServer: ZkServer | undefined
    for (const s of sys.zkServers) {
      const sids = yield* Effect.option(zkSessionsOn(s.clientPort))
      if (Option.isSome(sids) && sids.value.has(sid)) frozenServer = s
    }
    if (frozenServer === undefined) return yield* Effect.fail(new Error(`no ZooKeeper server lists ${old.name}'s session ${sid}`))
    yield* Effect.sleep("500 millis")

    const faultAt = now()
    yield* frozenServer.signal("SIGSTOP")
    r.faultAt = new Date(faultAt).toISOString()
    r.load1 = round2(os.loadavg()[0]!)
    const ms = (t: number) => round2(t - faultAt)
    r.ackRateBefore = w.acks().filter((a) => a.at >= faultAt - 1000).length
    yield* Effect.sleep(Duration.millis(ZK_FREEZE_MS)).pipe(Effect.ensuring(frozenServer.signal("SIGCONT")))
    r.resumedMs = ms(now())
    yield* Effect.sleep(Duration.millis(AFTER_MS))
    yield* w.stop
    yield* stale.stop
    const acks = w.acks()
    const first = acks.find((a) => a.at >= faultAt && a.port !== old.redis.port)
    r.failedOver = first !== undefined
    r.newMaster = first === undefined ? old.name : (sys.nodes.find((n) => n.redis.port === first.port)?.name ?? "?")
    r.acked = acks.length
    r.writerFailures = failureSummary(w.failures(), faultAt)
    r.maxGapMs = round2(maxGap(acks, faultAt - 1000) ?? 0)
    r.staleAckedTotal = stale.acks().length
    r.staleFailures = failureSummary(stale.failures(), faultAt)
    if (first === undefined) {
      r.staleAfterWritable = 0
      r.staleSentAfterWritable = 0
      r.twoWritersMs = 0
    } else {
      r.writableMs = ms(first.at)
      const late = stale.acks().filter((a) => a.at > first.at)
      r.staleAfterWritable = late.length
      r.staleSentAfterWritable = late.filter((a) => a.sentAt > first.at).length
      r.twoWritersMs = late.length === 0 ? 0 : round2(late[late.length - 1]!.at - first.at)
      if (late.length > 0) r.staleLastAfterWritableMs = r.twoWritersMs
    }
    const final = yield* sys.restore
    r.finalMaster = final.name
    const present = yield* Effect.promise(() => members(final, key))
    r.lost = acks.filter((a) => !present.has(String(a.id))).length
    const stalePresent = yield* Effect.promise(() => members(final, staleKey))
    r.staleLost = stale.acks().filter((a) => !stalePresent.has(String(a.id))).length
    yield* Effect.promise(() => sys.monitor(addressOf(final)).call("DEL", key, staleKey).catch(() => 0))
    r.ok = true
  })

const runRound = (sys: System, c: CaseDef, round: number, r: RoundResult): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    if (c.zkFreeze === true) return yield* runZkFreezeRound(sys as DictatorSystem, c, round, r)
    const old = yield* sys.restore
    r.oldMaster = old.name
    const key = `bench:${c.id}:${round}:acked`
    const staleKey = `bench:${c.id}:${round}:stale`
    const w = yield* writer(sys.discovery, key)
    yield* waitFor(
      `${WARMUP_ACKS} writes acknowledged by ${old.name}`,
      () => w.acks().filter((a) => a.port === old.redis.port).length >= WARMUP_ACKS || undefined,
      20000,
      20
    )
    const stale = c.freeze ? yield* staleWriter(addressOf(old), staleKey) : undefined
    if (stale !== undefined) {
      yield* waitFor(`${WARMUP_ACKS} writes of the pinned client`, () => stale.acks().length >= WARMUP_ACKS || undefined, 20000, 20)
    }
    yield* Effect.sleep("500 millis")

    // --- the fault ---
    const faultAt = now()
    yield* c.fault(old, sys)
    r.faultAt = new Date(faultAt).toISOString()
    r.load1 = round2(os.loadavg()[0]!)
    const ms = (t: number) => round2(t - faultAt)
    r.ackRateBefore = w.acks().filter((a) => a.at >= faultAt - 1000).length
    // Handover: when the SIGTERMed dictator exits (it hands over first).
    const exited = c.oldRedisRuns && c.dictatorStays !== true
      ? yield* Effect.fork(old.dictator!.exitCode.pipe(Effect.map(() => now()), Effect.timeout("20 seconds")))
      : undefined

    // (a) a write acknowledged by another server, found through discovery
    const first = yield* waitFor(
      "a write acknowledged by a new master",
      ackFinder(w.acks, faultAt, (a) => a.port !== old.redis.port),
      FAILOVER_TIMEOUT_MS,
      5
    )
    const writableAt = first.at
    const next = sys.nodes.find((n) => n.redis.port === first.port)!
    r.newMaster = next.name
    r.writableMs = ms(writableAt)
    const seen = sys.discovery.history().find((h) => h.at >= faultAt && h.master !== null && h.master.port !== old.redis.port)
    if (seen !== undefined) r.discoveredMs = ms(seen.at)

    // (b) every other running replica linked to it (the frozen old master is not running)
    const others = sys.nodes.filter((n) => n !== next && (n !== old || c.oldRedisRuns))
    const linked = yield* Effect.fork(
      waitFor(
        `${others.map((n) => n.name).join(", ")} linked to ${next.name}`,
        async () => {
          const reps = await Promise.all(others.map((n) => replication(sys.monitor(addressOf(n)))))
          return reps.every((x) => isLinkedTo(x, addressOf(next))) ? now() : undefined
        },
        FAILOVER_TIMEOUT_MS
      )
    )

    if (c.freeze) {
      // SIGCONT 3 s after the new master took its first write; the pinned client writes on.
      yield* Effect.sleep(Duration.millis(Math.max(0, writableAt + FREEZE_AFTER_WRITABLE_MS - now())))
      const resumedAt = now()
      yield* c.resume!(old)
      r.resumedMs = ms(resumedAt)
      const rejoined = yield* waitFor(
        `${old.name} (resumed) replicating from ${next.name}`,
        async () => (isLinkedTo(await replication(sys.monitor(addressOf(old))), addressOf(next)) ? now() : undefined),
        FAILOVER_TIMEOUT_MS,
        20
      )
      r.rejoinAfterResumeMs = round2(rejoined - resumedAt)
    }
    r.linkedMs = ms(yield* Fiber.join(linked))

    if (exited !== undefined) {
      const at = yield* Fiber.join(exited).pipe(
        Effect.mapError(() => new Error(`${old.name}'s dictator did not exit within 20 s of SIGTERM`))
      )
      r.dictatorExitMs = ms(at)
    }

    // A little more writing on the new master, then stop and look.
    yield* Effect.sleep(Duration.millis(AFTER_MS))
    yield* w.stop
    if (stale !== undefined) yield* stale.stop
    const acks = w.acks()
    r.acked = acks.length
    r.writerFailures = failureSummary(w.failures(), faultAt)
    r.maxGapMs = round2(maxGap(acks, faultAt - 1000) ?? 0)
    r.discoveryHistory = sys.discovery
      .history()
      .filter((h) => h.at >= faultAt - 1000)
      .map((h) => ({ ms: ms(h.at), master: h.master === null ? null : formatAddress(h.master) }))
    if (stale !== undefined) {
      const late = stale.acks().filter((a) => a.at > writableAt)
      r.staleAckedTotal = stale.acks().length
      r.staleAfterWritable = late.length
      r.staleSentAfterWritable = late.filter((a) => a.sentAt > writableAt).length
      if (late.length > 0) r.staleLastAfterWritableMs = round2(late[late.length - 1]!.at - writableAt)
      r.staleFailures = failureSummary(stale.failures(), faultAt)
    }

    // (c) restore, then the acknowledged writes missing on the final master
    const restoreStart = now()
    const final = yield* sys.restore
    r.restoreMs = Math.round(now() - restoreStart)
    r.finalMaster = final.name
    const present = yield* Effect.promise(() => members(final, key))
    r.lost = acks.filter((a) => !present.has(String(a.id))).length
    if (stale !== undefined) {
      const stalePresent = yield* Effect.promise(() => members(final, staleKey))
      r.staleLost = stale.acks().filter((a) => !stalePresent.has(String(a.id))).length
    }
    yield* Effect.promise(() => sys.monitor(addressOf(final)).call("DEL", key, staleKey).catch(() => 0))
    r.rssKb = {}
    for (const d of sys.daemons()) {
      const kb = procStatus(d.pid).rssKb
      if (kb !== undefined) r.rssKb[d.name] = kb
    }
    r.ok = true
  })

const describe = (r: RoundResult): string => {
  if (!r.ok) return `FAILED (${(r.error ?? "?").split("\n")[0]!.slice(0, 200)})`
  if (r.failedOver === false) {
    return `no failover (${r.oldMaster} stayed master), lost ${r.lost}, gap ${Math.round(r.maxGapMs ?? NaN)} ms, two writers 0 ms (${r.acked} acked; load ${r.load1})`
  }
  if (r.failedOver === true) {
    return `FAILOVER ${r.oldMaster} -> ${r.newMaster}: writable ${Math.round(r.writableMs ?? NaN)} ms, old-master acks after new writable ${r.staleAfterWritable}, two writers ${r.twoWritersMs} ms, lost ${r.lost}, gap ${Math.round(r.maxGapMs ?? NaN)} ms`
  }
  const parts = [
    `${r.oldMaster} -> ${r.newMaster}`,
    `writable ${Math.round(r.writableMs ?? NaN)} ms`,
    `discovered ${Math.round(r.discoveredMs ?? NaN)} ms`,
    `linked ${Math.round(r.linkedMs ?? NaN)} ms`,
    `lost ${r.lost}`,
    `gap ${Math.round(r.maxGapMs ?? NaN)} ms`
  ]
  if (r.staleAfterWritable !== undefined) {
    parts.push(`old-master acks after writable ${r.staleAfterWritable} (${r.staleSentAfterWritable} sent after)`)
  }
  if (r.rejoinAfterResumeMs !== undefined) parts.push(`rejoined ${Math.round(r.rejoinAfterResumeMs)} ms after SIGCONT`)
  parts.push(`(${r.acked} acked; load ${r.load1}; restore ${((r.restoreMs ?? 0) / 1000).toFixed(1)} s)`)
  return parts.join(", ")
}

const runCase = (sys: System, c: CaseDef, rounds: number, results: Array<RoundResult>) =>
  Effect.gen(function* () {
    for (let i = 1; i <= rounds; i++) {
      const r: RoundResult = { case: c.id, round: i, ok: false, startedAt: new Date().toISOString() }
      results.push(r)
      const exit = yield* runRound(sys, c, i, r).pipe(
        Effect.scoped,
        Effect.timeoutFail({ duration: "4 minutes", onTimeout: () => new Error("round took more than 4 minutes") }),
        Effect.exit
      )
      if (Exit.isFailure(exit)) {
        if (Cause.isInterruptedOnly(exit.cause)) {
          r.error = "interrupted"
          return yield* Effect.interrupt
        }
        r.ok = false
        r.error = Cause.pretty(exit.cause).split("\n").slice(0, 12).join("\n")
        r.logs = sys.outputs(80)
      }
      log(`${c.id} #${i}: ${describe(r)}`)
    }
  })

// ---------------------------------------------------------------------------------------------
// Machine, memory, results
// ---------------------------------------------------------------------------------------------

const log = (msg: string) => console.log(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}`)

/** stdout, else stderr (java -version), of a short command. */
const run = (cmd: string, args: ReadonlyArray<string>): string => {
  const r = spawnSync(cmd, [...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10000 })
  if (r.error !== undefined) return `unavailable (${errorText(r.error)})`
  return (r.stdout.trim() || r.stderr.trim()).trim()
}

const zkVersion = (port: number): Promise<string> =>
  new Promise((resolve) => {
    let data = ""
    const s = net.createConnection({ host: "127.0.0.1", port }, () => s.write("srvr"))
    s.setTimeout(2000, () => s.destroy())
    s.setEncoding("utf8")
    s.on("data", (d: string) => (data += d))
    s.on("close", () => resolve(/^Zookeeper version: (.*)$/m.exec(data)?.[1] ?? "unknown"))
    s.on("error", () => resolve("unknown"))
  })

const procStatus = (pid: number | undefined): { rssKb?: number; hwmKb?: number } => {
  if (pid === undefined || !existsSync(`/proc/${pid}/status`)) return {}
  const text = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)
    return m === null ? undefined : Number(m[1])
  }
  const rss = kb("VmRSS")
  const hwm = kb("VmHWM")
  return { ...(rss === undefined ? {} : { rssKb: rss }), ...(hwm === undefined ? {} : { hwmKb: hwm }) }
}

const restarts = (output: string) => (output.match(/----- harness: restart #/g) ?? []).length

const saveLogs = (dir: string, system: string, outputs: Record<string, string>) =>
  Effect.promise(async () => {
    const d = path.join(dir, system)
    await fs.mkdir(d, { recursive: true })
    for (const [name, text] of Object.entries(outputs)) await fs.writeFile(path.join(d, `${name}.log`), text)
  })

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const main = Effect.gen(function* () {
  const opts = parseArgs(process.argv.slice(2))
  const started = new Date()
  // The code under test: the commit at the start (the build was made just before).
  const gitCommit = run("git", ["-C", repoRoot(), "rev-parse", "HEAD"])
  const gitDirtySrc = run("git", ["-C", repoRoot(), "status", "--porcelain", "--", "src"]).length > 0
  const results: Array<RoundResult> = []
  const memory: Array<MemoryLine> = []
  const systemErrors: Record<string, string> = {}
  let zookeeperVersion = "not run"
  const dictatorCases = opts.cases.filter((c) => CASES[c].system === "dictator")
  const sentinelCases = opts.cases.filter((c) => CASES[c].system === "sentinel")
  log(`cases ${opts.cases.join(", ")}; ${opts.rounds} round(s) each`)

  const finish = (interrupted: boolean) =>
    Effect.promise(async () => {
      const summary = summarize(results, opts.cases)
      const comparisons = compare(summary)
      const goals = targets(summary)
      const finished = new Date()
      console.log("")
      console.log(`Failover benchmark — ${started.toISOString()} — ${os.cpus().length} CPUs, node ${process.version}${interrupted ? " — INTERRUPTED" : ""}`)
      console.log(table(summary, comparisons, goals, memory))
      for (const [k, v] of Object.entries(systemErrors)) console.log(`\n${k} could not run: ${v.split("\n")[0]}`)
      const dir = path.join(repoRoot(), "bench", "results")
      await fs.mkdir(dir, { recursive: true })
      const file = path.join(dir, `${started.toISOString().replace(/:/g, "-")}.json`)
      const json = {
        benchmark: "failover",
        startedAt: started.toISOString(),
        finishedAt: finished.toISOString(),
        durationS: Math.round((finished.getTime() - started.getTime()) / 1000),
        interrupted,
        command: `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim(),
        options: opts,
        machine: {
          cpus: os.cpus().length,
          cpuModel: os.cpus()[0]?.model ?? "unknown",
          totalMemMb: Math.round(os.totalmem() / 1024 / 1024),
          platform: `${os.type()} ${os.release()} ${os.arch()}`,
          loadavgAtEnd: os.loadavg(),
          node: process.version,
          redisServer: run(process.env.REDIS_SERVER ?? "redis-server", ["--version"]),
          redisSentinel: run(process.env.REDIS_SENTINEL ?? "redis-sentinel", ["--version"]),
          zookeeper: zookeeperVersion,
          java: run(process.env.JAVA ?? "java", ["-version"]).split("\n")[0],
          gitCommit,
          gitDirtySrc
        },
        settings: {
          redisArgs: REDIS_ARGS,
          dictator: {
            zookeeper: { servers: 3, tickTime: ZK_TICK_MS },
            config: DictatorConfig.fromObject({}),
            logLevel: process.env.BENCH_DICTATOR_LOG_LEVEL ?? "INFO"
          },
          sentinel: SENTINEL,
          round: {
            warmupAcks: WARMUP_ACKS,
            resumeAfterWritableMs: FREEZE_AFTER_WRITABLE_MS,
            writeAfterMs: AFTER_MS,
            settleMs: SETTLE_MS,
            discoveryPollMs: 10,
            writerTimeoutMs: 1000
          }
        },
        systemErrors,
        summary: { cases: summary, comparisons, targets: goals, memory },
        rounds: results
      }
      await fs.writeFile(file, JSON.stringify(json, null, 2) + "\n")
      console.log(`\nResults: ${path.relative(process.cwd(), file)}`)
    })

  const body = Effect.gen(function* () {
    if (dictatorCases.length > 0) {
      const done = yield* Effect.scoped(
        Effect.gen(function* () {
          const sys = yield* dictatorSystem
          const rssAtStart = sys.dictators.map((d) => procStatus(d.pid()).rssKb)
          zookeeperVersion = yield* Effect.promise(() => zkVersion(sys.zkPorts[0]!))
          for (const c of dictatorCases) yield* runCase(sys, CASES[c], opts.rounds, results)
          sys.dictators.forEach((d, i) => {
            const atStart = rssAtStart[i] === undefined ? "-" : `${(rssAtStart[i]! / 1024).toFixed(1)} MB`
            memory.push({
              what: `dictator ${d.name}`,
              ...(d.pid() === undefined ? {} : { pid: d.pid()! }),
              ...procStatus(d.pid()),
              note: `RSS ${atStart} once converged at start; restarted ${restarts(d.output())}x during the run`
            })
          })
          if (opts.logsDir !== undefined) yield* saveLogs(opts.logsDir, "dictator", sys.outputs())
        })
      ).pipe(Effect.exit)
      if (Exit.isFailure(done)) {
        if (Cause.isInterruptedOnly(done.cause)) return yield* Effect.interrupt
        systemErrors.dictator = Cause.pretty(done.cause)
        log(`dictator run failed: ${systemErrors.dictator.split("\n")[0]}`)
      }
    }
    if (sentinelCases.length > 0) {
      const done = yield* Effect.scoped(
        Effect.gen(function* () {
          const sys = yield* sentinelSystem
          for (const c of sentinelCases) yield* runCase(sys, CASES[c], opts.rounds, results)
          sys.sentinels.forEach((s, i) => {
            memory.push({ what: `redis-sentinel ${i + 1}`, ...(s.pid() === undefined ? {} : { pid: s.pid()! }), ...procStatus(s.pid()) })
          })
          if (opts.logsDir !== undefined) yield* saveLogs(opts.logsDir, "sentinel", sys.outputs())
        })
      ).pipe(Effect.exit)
      if (Exit.isFailure(done)) {
        if (Cause.isInterruptedOnly(done.cause)) return yield* Effect.interrupt
        systemErrors.sentinel = Cause.pretty(done.cause)
        log(`sentinel run failed: ${systemErrors.sentinel.split("\n")[0]}`)
      }
    }
  })

  yield* body.pipe(
    Effect.onInterrupt(() => finish(true).pipe(Effect.orDie)),
    Effect.zipRight(finish(false))
  )
  const failed = results.filter((r) => !r.ok).length + Object.keys(systemErrors).length
  if (failed > 0) console.log(`\n${failed} failed round(s) or system(s): exit code 1 (see "error" and "logs" in the JSON)`)
  return failed
})

// Exit code: 0 when every round completed (targets are reported, not asserted), 1 when a round or
// a system failed, 130 when interrupted (Ctrl-C; partial results are still written).
NodeRuntime.runMain(main, {
  disablePrettyLogger: true,
  teardown: (exit, onExit) =>
    onExit(Exit.isSuccess(exit) ? (exit.value === 0 ? 0 : 1) : Cause.isInterruptedOnly(exit.cause) ? 130 : 1)
})
