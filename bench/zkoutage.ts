/**
 * ZooKeeper-outage benchmark (issue 13): the whole ZooKeeper ensemble stopped for 20 s under a
 * write load, with failsafe mode off (the master fences after fence_after_ms) and on (every
 * member vouches for it: writes go on). Each variant on a service of its own: a 3-server ensemble
 * (tickTime 2000), 3 redis-servers, 3 dictators with default settings (plus `failsafe: true`).
 *
 *   bash bench/run.sh --zk-outage                    1 round of each variant
 *   bash bench/run.sh --zk-outage --rounds 3 --outage-ms 10000
 *
 * Each round: a converged service; a writer following the master znode (test/support/workload.ts:
 * `SADD`, one write in flight, 500 ms timeout; it keeps the last known master while ZooKeeper is
 * away); the ensemble stopped (SIGTERM: data kept, sessions restored on restart); started again
 * after the outage; convergence. Measured: writes blocked (the longest gap between two
 * acknowledged writes from the stop to the quorum's return), writes acknowledged during the
 * outage, whether the master (its znode's epoch) was kept, acknowledged writes lost. Prints a line
 * per round and writes bench/results/zk-outage-<date>.json.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Option } from "effect"
import { dictator, redisServer, repoRoot, waitUntil, zooKeeperEnsemble } from "../test/support/servers.js"
import { type Topology, awaitConverged, longestAckGap, lostWrites, writer } from "../test/support/workload.js"

const VARIANTS = ["failsafe-off", "failsafe-on"] as const
type Variant = (typeof VARIANTS)[number]
const NAMES = ["redis1", "redis2", "redis3"] as const

interface Options {
  readonly rounds: number
  readonly outageMs: number
}

const USAGE = `usage: bash bench/run.sh --zk-outage [--rounds N] [--outage-ms MS]
  --rounds N       rounds per variant (default 1)
  --outage-ms MS   how long the whole ensemble stays stopped (default 20000)`

const fail = (message: string): never => {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`)
  process.exit(2)
}

const parse = (args: ReadonlyArray<string>): Options => {
  let rounds = 1
  let outageMs = 20_000
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    const value = () => args[++i] ?? fail(`${a} needs a value`)
    const int = (v: string, min: number, max: number) => {
      const n = Number(v)
      return Number.isInteger(n) && n >= min && n <= max ? n : fail(`${a} ${v}: must be an integer from ${min} to ${max}`)
    }
    if (a === "--rounds") rounds = int(value(), 1, 100)
    else if (a === "--outage-ms") outageMs = int(value(), 1000, 600_000)
    else if (a === "--help" || a === "-h") {
      process.stdout.write(`${USAGE}\n`)
      process.exit(0)
    } else fail(`unknown argument ${a}`)
  }
  return { rounds, outageMs }
}

const log = (s: string) => process.stderr.write(`[zk-outage] ${s}\n`)

interface RoundResult {
  readonly variant: Variant
  readonly round: number
  /** Longest gap between acknowledged writes from the stop until the quorum served again. */
  readonly writesBlockedMs: number
  /** The same, from the stop until the restart (the outage alone, without ZooKeeper's own recovery). */
  readonly writesBlockedDuringOutageMs: number
  readonly ackedDuringOutage: number
  readonly masterKept: boolean
  readonly lost: number
  readonly firstAckAfterRestartMs: number | null
  readonly load1: number
}

const awaitQuorum = (t: Topology) =>
  waitUntil(
    "a ZooKeeper quorum of every server",
    Effect.map(Effect.forEach(t.zk.servers, (s) => s.mode, { concurrency: "unbounded" }), (modes) =>
      modes.filter((m) => m === "leader").length === 1 && modes.every((m) => m === "leader" || m === "follower") ? Option.some(modes) : Option.none()
    ),
    { timeout: "90 seconds", interval: "200 millis" }
  )

const service = (variant: Variant) =>
  Effect.gen(function* () {
    const svc = `bench-${variant}`
    log(`${variant}: starting a 3-server ZooKeeper ensemble, 3 redis-servers, 3 dictators`)
    const zk = yield* zooKeeperEnsemble(3, { tickTime: 2000 })
    const redis = yield* Effect.forEach(NAMES, () => redisServer({ args: ["--repl-diskless-sync-delay", "0"] }))
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) =>
        dictator({ name, svc, zkHosts: zk.hosts, redisPort: redis[i]!.port, extra: { failsafe: variant === "failsafe-on" }, readyTimeout: "180 seconds" }),
      { concurrency: "unbounded" }
    )
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    const t: Topology = { svc, zk, nodes: NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! })) }
    yield* awaitConverged(t, "90 seconds")
    return t
  })

const round = (t: Topology, variant: Variant, n: number, outageMs: number) =>
  Effect.gen(function* () {
    const before = yield* awaitConverged(t, "90 seconds")
    const w = yield* writer(t, { tag: `${variant}-${n}` })
    yield* waitUntil("the writer's first acknowledged writes", Effect.sync(() => (w.acks().length >= 50 ? Option.some(true) : Option.none())), {
      timeout: "30 seconds",
      interval: "20 millis"
    })
    const load1 = Math.round(os.loadavg()[0]! * 100) / 100
    const faultAt = Date.now()
    yield* Effect.forEach(t.zk.servers, (s) => s.stop, { concurrency: "unbounded", discard: true })
    yield* Effect.sleep(Duration.millis(outageMs))
    const restartAt = Date.now()
    yield* Effect.forEach(t.zk.servers, (s) => s.start, { concurrency: "unbounded", discard: true })
    yield* awaitQuorum(t)
    const quorumAt = Date.now()
    const after = yield* awaitConverged(t, "90 seconds")
    const settled = w.acks().length
    yield* waitUntil("writes on the final master", Effect.sync(() => (w.acks().length >= settled + 20 ? Option.some(true) : Option.none())), {
      timeout: "30 seconds",
      interval: "20 millis"
    })
    yield* w.stop
    const acks = w.acks()
    const lost = yield* lostWrites(acks, after.master)
    const firstAfter = acks.find((a) => a.at >= restartAt)
    const r: RoundResult = {
      variant,
      round: n,
      writesBlockedMs: longestAckGap(acks, faultAt, quorumAt).ms,
      writesBlockedDuringOutageMs: longestAckGap(acks, faultAt, restartAt).ms,
      ackedDuringOutage: acks.filter((a) => a.at >= faultAt && a.at < restartAt).length,
      masterKept: after.master.czxid === before.master.czxid,
      lost: lost.length,
      firstAckAfterRestartMs: firstAfter === undefined ? null : firstAfter.at - restartAt,
      load1
    }
    log(
      `${variant} round ${n}: writes blocked ${r.writesBlockedDuringOutageMs} ms during a ${outageMs} ms outage, ${r.writesBlockedMs} ms until the quorum served again (${quorumAt - restartAt} ms after the restart); ${r.ackedDuringOutage} acked during it; master ${r.masterKept ? "kept" : `changed to ${after.master.name}`}; lost ${r.lost}; load ${load1}`
    )
    return r
  }).pipe(Effect.scoped)

const main = (opts: Options) =>
  Effect.gen(function* () {
    const results: Array<RoundResult> = []
    for (const variant of VARIANTS) {
      yield* Effect.scoped(
        Effect.gen(function* () {
          const t = yield* service(variant)
          for (let i = 1; i <= opts.rounds; i++) results.push(yield* round(t, variant, i, opts.outageMs))
        })
      )
    }
    const lines = VARIANTS.map((v) => {
      const rs = results.filter((r) => r.variant === v)
      const blocked = rs.map((r) => r.writesBlockedDuringOutageMs).sort((a, b) => a - b)
      const untilQuorum = rs.map((r) => r.writesBlockedMs).sort((a, b) => a - b)
      return `${v.padEnd(13)} writes blocked during the outage ${blocked.join(", ")} ms (median ${blocked[Math.floor(blocked.length / 2)]}), until ZooKeeper served again ${untilQuorum.join(", ")} ms, master kept ${rs.filter((r) => r.masterKept).length}/${rs.length}, lost ${rs.reduce((s, r) => s + r.lost, 0)}`
    })
    process.stdout.write(`\nZooKeeper ensemble stopped ${opts.outageMs} ms under a write load:\n${lines.join("\n")}\n`)
    const file = path.join(repoRoot(), "bench", "results", `zk-outage-${new Date().toISOString().replace(/[:.]/g, "-")}.json`)
    yield* Effect.promise(() => fs.mkdir(path.dirname(file), { recursive: true }))
    yield* Effect.promise(() =>
      fs.writeFile(file, JSON.stringify({ command: `bash bench/run.sh --zk-outage ${process.argv.slice(2).join(" ")}`.trim(), outageMs: opts.outageMs, cpus: os.cpus().length, results }, null, 2) + "\n")
    )
    log(`results in ${file}`)
  })

NodeRuntime.runMain(main(parse(process.argv.slice(2))))
