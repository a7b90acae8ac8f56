/**
 * Partition benchmark (issue 8, "the comparison"): issue 8's scenario 1 — the master host cut off
 * from every other host (ZooKeeper servers, replicas, their dictators or sentinels), its own
 * clients still reaching it — for Dictator and Redis Sentinel, on the network-namespace test bed
 * of test/support/netns.ts (needs root, iproute2 and nftables, as the partition tests).
 *
 *   bash bench/run.sh --partition                       3 rounds of each variant
 *   bash bench/run.sh --partition --rounds 5 --variants dictator,sentinel
 *
 * Variants (each on a bed of its own: three Redis hosts, plus three ZooKeeper hosts for Dictator):
 * - `dictator`: a 3-server ZooKeeper ensemble, one dictator per Redis host, default settings.
 * - `sentinel`: one redis-sentinel per Redis host (quorum 2, down-after-milliseconds 1000,
 *   failover-timeout 10000, parallel-syncs 1), no min-replicas setting.
 * - `sentinel-min-replicas`: the same with `min-replicas-to-write 1`, `min-replicas-max-lag 10`
 *   on every Redis, as Sentinel's documentation recommends against this very partition.
 *
 * Each round: a converged service; a writer following the system's own discovery (`SADD`, one
 * write in flight) and a client pinned to the master; the cut for HOLD_MS; the heal; convergence.
 * Measured, from the cut in force (its nft returned): (a) the first write another Redis accepted (probed every 20 ms); (b) the old
 * master's last acknowledged write (pinned client, before the heal); (c) writes the old master
 * acknowledged that were sent after (a); (d) acknowledged writes missing on the final master, of
 * the writer and of the pinned client. Prints both side by side and writes
 * bench/results/partition-<date>.json.
 */
process.env.HARNESS_DETACH = "1"

import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Option, type Scope } from "effect"
import { type TestBed, netnsSupport, testBed } from "../test/support/netns.js"
import { type RedisServer, dictator, redisServer, repoRoot, waitUntil, zooKeeperEnsemble } from "../test/support/servers.js"
import {
  type Ack,
  type Address,
  type Discovery,
  type Link,
  errorText,
  isLinkedTo,
  links,
  now,
  replication,
  sentinelDiscovery,
  staleWriter,
  writer,
  zkDiscovery
} from "./clients.js"
import { sentinelProcess } from "./sentinel.js"

const VARIANTS = ["dictator", "sentinel", "sentinel-min-replicas"] as const
type Variant = (typeof VARIANTS)[number]

const NAMES = ["redis1", "redis2", "redis3"] as const
const ZK = ["zk1", "zk2", "zk3"] as const
const SVC = "benchpart"
const SENTINEL_NAME = "benchpart"
const HOLD_MS = 8000
const WARMUP_ACKS = 200
const CONVERGE_TIMEOUT_MS = 90_000
const SETTLE_MS = 2000
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]
const MIN_REPLICAS_ARGS = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]

const log = (s: string) => console.error(`[bench:partition] ${s}`)

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

const USAGE = `usage: bash bench/run.sh --partition [--rounds N] [--variants a,b,...]
  --rounds N       rounds per variant (default 3)
  --variants LIST  comma-separated, from: ${VARIANTS.join(", ")} (default all)`

const parseArgs = (argv: ReadonlyArray<string>): { rounds: number; variants: ReadonlyArray<Variant> } => {
  let rounds = 3
  let variants: ReadonlyArray<Variant> = VARIANTS
  const fail = (msg: string): never => {
    console.error(`bench: ${msg}\n${USAGE}`)
    process.exit(2)
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`)
    if (flag === "--rounds") {
      const v = value()
      rounds = Number(v)
      if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) fail(`--rounds ${v}: must be an integer from 1 to 100`)
    } else if (flag === "--variants") {
      const picked = value().split(",").map((s) => s.trim()).filter((s) => s.length > 0)
      for (const p of picked) if (!(VARIANTS as ReadonlyArray<string>).includes(p)) fail(`unknown variant "${p}"`)
      variants = VARIANTS.filter((v) => picked.includes(v))
    } else if (flag === "--help" || flag === "-h") {
      console.log(USAGE)
      process.exit(0)
    } else fail(`unknown argument ${arg}`)
  }
  return { rounds, variants }
}

// ---------------------------------------------------------------------------------------------
// The services on the bed
// ---------------------------------------------------------------------------------------------

interface Node {
  readonly name: string
  readonly redis: RedisServer
}

interface Service {
  readonly bed: TestBed
  readonly nodes: ReadonlyArray<Node>
  readonly discovery: Discovery
  readonly monitor: (a: Address) => Link
  readonly outputs: () => Record<string, string>
}

const addressOf = (n: Node): Address => ({ host: n.redis.host, port: n.redis.port })

/** The discovered master is a node, every other Redis its linked replica, and it takes a write. */
const converged = (svc: Service): Effect.Effect<Option.Option<Node>> =>
  Effect.promise(async () => {
    const m = svc.discovery.current()
    const master = m === null ? undefined : svc.nodes.find((n) => n.redis.port === m.port && n.redis.host === m.host)
    if (master === undefined) return Option.none()
    const reps = await Promise.all(svc.nodes.map((n) => replication(svc.monitor(addressOf(n))).catch(() => null)))
    const placed = svc.nodes.every((n, i) => {
      const r = reps[i]
      if (r === null || r === undefined) return false
      return n === master ? r.role === "master" : isLinkedTo(r, addressOf(master))
    })
    if (!placed) return Option.none()
    const ok = await svc.monitor(addressOf(master)).call("SET", "bench:probe", "x").then((r) => r === "OK", () => false)
    return ok ? Option.some(master) : Option.none()
  })

const awaitConverged = (svc: Service) =>
  waitUntil("a converged service", converged(svc), { timeout: Duration.millis(CONVERGE_TIMEOUT_MS), interval: "200 millis" })

const dictatorService = (bed: TestBed): Effect.Effect<Service, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const zk = yield* zooKeeperEnsemble(3, { tickTime: 2000, placement: ZK.map((h) => bed.host(h)) })
    const redis = yield* Effect.forEach(NAMES, (name, i) => redisServer({ args: REDIS_ARGS, placement: bed.host(name), port: 6381 + i }))
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) => dictator({ name, svc: SVC, zkHosts: zk.hosts, redisPort: redis[i]!.port, httpPort: 7000, placement: bed.host(name) }),
      { concurrency: "unbounded" }
    )
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    return {
      bed,
      nodes: NAMES.map((name, i) => ({ name, redis: redis[i]! })),
      discovery: yield* zkDiscovery(zk.hosts, SVC),
      monitor: yield* links({ commandTimeoutMs: 500, name: "bench-monitor" }),
      outputs: () => ({
        ...Object.fromEntries(dictators.map((d) => [`dictator-${d.name}`, d.output()])),
        ...Object.fromEntries(redis.map((r, i) => [`redis-${NAMES[i]}`, r.output()]))
      })
    }
  })

const sentinelService = (bed: TestBed, minReplicas: boolean): Effect.Effect<Service, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const redis = yield* Effect.forEach(NAMES, (name, i) =>
      redisServer({ args: [...REDIS_ARGS, ...(minReplicas ? MIN_REPLICAS_ARGS : [])], placement: bed.host(name), port: 6381 + i })
    )
    const first = redis[0]!
    for (const r of redis.slice(1)) yield* r.cli("REPLICAOF", first.host, String(first.port))
    const sentinels = yield* Effect.forEach(NAMES, (name) =>
      sentinelProcess({
        masterName: SENTINEL_NAME,
        masterHost: first.host,
        masterPort: first.port,
        quorum: 2,
        downAfterMs: 1000,
        failoverTimeoutMs: 10000,
        parallelSyncs: 1,
        placement: bed.host(name)
      })
    )
    return {
      bed,
      nodes: NAMES.map((name, i) => ({ name, redis: redis[i]! })),
      discovery: yield* sentinelDiscovery(sentinels.map((s) => ({ host: s.host, port: s.port })), SENTINEL_NAME),
      monitor: yield* links({ commandTimeoutMs: 500, name: "bench-monitor" }),
      outputs: () => ({
        ...Object.fromEntries(sentinels.map((s, i) => [`sentinel-${NAMES[i]}`, s.output()])),
        ...Object.fromEntries(redis.map((r, i) => [`redis-${NAMES[i]}`, r.output()]))
      })
    }
  })

// ---------------------------------------------------------------------------------------------
// One round
// ---------------------------------------------------------------------------------------------

interface Round {
  variant: Variant
  round: number
  ok: boolean
  error?: string
  oldMaster?: string
  finalMaster?: string
  load1?: number
  /** Time the cut's nft took to be in force (before the cut's date). */
  cutMs?: number
  /** (a) ms from the cut. */
  newWritableMs?: number
  /** (b) ms from the cut. */
  oldLastAckMs?: number
  /** (c) */
  oldAckedAfterNewWritable?: number
  /** (d) */
  writerLost?: number
  pinnedLost?: number
  writerAcked?: number
  pinnedAcked?: number
}

const missing = (svc: Service, master: Node, key: string, acks: ReadonlyArray<Ack>) =>
  Effect.promise(async () => {
    const members = new Set((await svc.monitor(addressOf(master)).call("SMEMBERS", key)) as Array<string>)
    return acks.filter((a) => !members.has(String(a.id))).length
  })

const round = (svc: Service, variant: Variant, n: number): Effect.Effect<Round> =>
  Effect.gen(function* () {
    const master = yield* awaitConverged(svc)
    yield* Effect.sleep(Duration.millis(SETTLE_MS))
    const key = `bench:part:${variant}:${n}`
    const w = yield* writer(svc.discovery, `${key}:acked`, { timeoutMs: 500 })
    const pinned = yield* staleWriter(addressOf(master), `${key}:pinned`)
    yield* waitUntil(
      "warm-up writes",
      Effect.sync(() => (w.acks().length >= WARMUP_ACKS && pinned.acks().length >= 5 ? Option.some(true) : Option.none())),
      { timeout: "30 seconds", interval: "20 millis" }
    )
    const load1 = os.loadavg()[0]
    // Dated when in force, as in test/partition/topology.ts: nft commits at the end of a start-up
    // that takes 100–800 ms on a loaded machine, during which the network still works.
    const cutStartedAt = now()
    yield* svc.bed.cut({ host: master.name, peers: svc.bed.hosts.map((h) => h.name).filter((h) => h !== master.name) })
    const faultAt = now()
    // (a) by probing every other Redis, not through the writer: a Sentinel client asking the
    // sentinel next to the old master (its clients still reach it) would not move at all.
    let newWritableAt: number | undefined
    const others = svc.nodes.filter((x) => x !== master)
    const probe = Effect.promise(async () => {
      for (const o of others) {
        const ok = await svc.monitor(addressOf(o)).call("SET", "bench:probe", "x").then((r) => r === "OK", () => false)
        if (ok && newWritableAt === undefined) newWritableAt = now()
      }
    }).pipe(Effect.zipRight(Effect.sleep("20 millis")), Effect.repeat({ until: () => newWritableAt !== undefined }))
    yield* Effect.raceFirst(probe, Effect.sleep(Duration.millis(HOLD_MS))).pipe(
      Effect.zipRight(Effect.sleep(Duration.millis(Math.max(0, faultAt + HOLD_MS - now()))))
    )
    const healAt = now()
    yield* svc.bed.heal(master.name)
    const final = yield* awaitConverged(svc)
    yield* w.stop
    yield* pinned.stop
    const pinnedDuring = pinned.acks().filter((a) => a.at >= faultAt && a.sentAt <= healAt)
    const last = pinnedDuring.at(-1)
    const writableAt = newWritableAt
    const oldAfter =
      writableAt === undefined
        ? 0
        : [...pinned.acks(), ...w.acks().filter((a) => a.port === master.redis.port)].filter(
            (a) => a.sentAt > writableAt && a.sentAt <= healAt
          ).length
    return {
      variant,
      round: n,
      ok: true,
      oldMaster: master.name,
      finalMaster: final.name,
      ...(load1 === undefined ? {} : { load1 }),
      cutMs: Math.round(faultAt - cutStartedAt),
      ...(writableAt === undefined ? {} : { newWritableMs: Math.round(writableAt - faultAt) }),
      ...(last === undefined ? {} : { oldLastAckMs: Math.round(last.at - faultAt) }),
      oldAckedAfterNewWritable: oldAfter,
      writerLost: yield* missing(svc, final, `${key}:acked`, w.acks()),
      pinnedLost: yield* missing(svc, final, `${key}:pinned`, pinned.acks()),
      writerAcked: w.acks().length,
      pinnedAcked: pinned.acks().length
    } satisfies Round
  }).pipe(
    Effect.scoped,
    Effect.ensuring(svc.bed.healAll.pipe(Effect.ignore)),
    Effect.catchAllCause((cause) =>
      Effect.succeed({ variant, round: n, ok: false, error: errorText(cause.toString()).slice(0, 2000) } satisfies Round)
    )
  )

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const median = (xs: ReadonlyArray<number>): number | undefined => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : Math.round((s[m - 1]! + s[m]!) / 2)
}

const summarize = (rounds: ReadonlyArray<Round>, v: Variant) => {
  const ok = rounds.filter((r) => r.variant === v && r.ok)
  const pick = (f: (r: Round) => number | undefined) => ok.map(f).filter((x): x is number => x !== undefined)
  const stat = (xs: ReadonlyArray<number>) =>
    xs.length === 0 ? null : { median: median(xs)!, min: Math.min(...xs), max: Math.max(...xs) }
  return {
    variant: v,
    rounds: rounds.filter((r) => r.variant === v).length,
    completed: ok.length,
    newWritableMs: stat(pick((r) => r.newWritableMs)),
    oldLastAckMs: stat(pick((r) => r.oldLastAckMs)),
    oldAckedAfterNewWritable: stat(pick((r) => r.oldAckedAfterNewWritable)),
    writerLost: stat(pick((r) => r.writerLost)),
    pinnedLost: stat(pick((r) => r.pinnedLost))
  }
}

const cell = (s: { median: number; min: number; max: number } | null, unit = "") =>
  s === null ? "-" : `${s.median}${unit} (${s.min}–${s.max})`

const program = (opts: { rounds: number; variants: ReadonlyArray<Variant> }) =>
  Effect.gen(function* () {
    const problem = yield* Effect.promise(netnsSupport)
    if (problem !== undefined) {
      console.error(`bench: the partition benchmark cannot run here: ${problem}`)
      return 1
    }
    const results: Array<Round> = []
    for (const v of opts.variants) {
      log(`${v}: building the bed and the service`)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const bed = yield* testBed(v === "dictator" ? [...ZK, ...NAMES] : [...NAMES])
          const svc = v === "dictator" ? yield* dictatorService(bed) : yield* sentinelService(bed, v === "sentinel-min-replicas")
          for (let i = 1; i <= opts.rounds; i++) {
            const r = yield* round(svc, v, i)
            results.push(r)
            log(`${v} round ${i}: ${JSON.stringify(r)}`)
          }
        })
      ).pipe(
        Effect.catchAllCause((cause) =>
          Effect.sync(() => results.push({ variant: v, round: 0, ok: false, error: errorText(cause.toString()).slice(0, 2000) }))
        )
      )
    }
    const summary = opts.variants.map((v) => summarize(results, v))
    const header = ["variant", "new master writable", "old master's last ack", "old acked after new writable", "lost (writer)", "lost (pinned client)", "rounds ok"]
    const rows = summary.map((s) => [
      s.variant,
      cell(s.newWritableMs, " ms"),
      cell(s.oldLastAckMs, " ms"),
      cell(s.oldAckedAfterNewWritable),
      cell(s.writerLost),
      cell(s.pinnedLost),
      `${s.completed}/${s.rounds}`
    ])
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
    const line = (r: ReadonlyArray<string>) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ")
    console.log(
      `\nScenario 1 (master host cut off from everything but its clients, ${HOLD_MS / 1000} s), median (min–max) of ${opts.rounds} round(s), times from the cut in force:\n`
    )
    console.log(line(header))
    for (const r of rows) console.log(line(r))
    const dir = path.join(repoRoot(), "bench", "results")
    const file = path.join(dir, `partition-${new Date().toISOString().replace(/[:.]/g, "-")}.json`)
    yield* Effect.promise(async () => {
      await fs.mkdir(dir, { recursive: true })
      await fs.writeFile(
        file,
        JSON.stringify(
          {
            scenario: "issue 8 scenario 1: master host cut off from every other host, its clients still reaching it",
            holdMs: HOLD_MS,
            machine: { cpus: os.cpus().length, load: os.loadavg(), kernel: os.release(), node: process.version },
            summary,
            rounds: results
          },
          null,
          2
        ) + "\n"
      )
    })
    console.log(`\nwritten to ${path.relative(repoRoot(), file)}`)
    return results.every((r) => r.ok) ? 0 : 1
  })

NodeRuntime.runMain(
  program(parseArgs(process.argv.slice(2))).pipe(Effect.flatMap((code) => Effect.sync(() => (process.exitCode = code))))
)
