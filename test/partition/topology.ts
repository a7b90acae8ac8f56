/**
 * The partition suite's service (issue 8) on the namespace test bed of test/support/netns.ts:
 * three ZooKeeper servers (zk1–zk3) and three hosts (redis1–redis3, each one redis-server and the
 * built dictator with default timings), every one in its own network namespace on the bed's
 * bridge. The writers, stale clients and the checker of test/support/workload.ts run in this
 * process, reaching them over the bed's client veth, so a partition never cuts the measurements
 * (only a cut that names the client address would).
 *
 * `partitionScenario` runs one fault under that workload (the chaos suite's `scenario`: reset,
 * writer following the master znode, checker, convergence, lost writes) and adds the figures
 * partitions are judged by: see `Figures` and the windows below.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { Clock, Context, Effect, Layer, Option, type Scope } from "effect"
import { DictatorConfig } from "../../src/Config.js"
import { type Cut, type TestBed, testBed } from "../support/netns.js"
import { dictator, redisServer, repoRoot, waitUntil, zooKeeperEnsemble } from "../support/servers.js"
import {
  type Ack,
  type StaleClient,
  type Topology,
  type TopologyNode,
  awaitConverged,
  staleClient
} from "../support/workload.js"
import { type Outcome, type Workload, FENCING_WINDOW_MS, ZK_TICK_MS, fmtMs, masterOf, scenario, summary } from "../chaos/topology.js"

// ---------------------------------------------------------------------------------------------
// The windows a partition is judged by
// ---------------------------------------------------------------------------------------------

/** The settings the bed's dictators run with: src/Config.ts's defaults. */
const DEFAULTS = DictatorConfig.fromObject({ svc_name: "defaults", node: { name: "defaults", host: "127.0.0.1" } })

/** `fence_after_ms`: a master cut off from ZooKeeper (or from its quorum) this long pauses writes. */
export const FENCE_AFTER_MS = DEFAULTS.fence_after_ms

/**
 * The partition window (README, "Partitions"): from the moment a master host is cut off, its
 * Redis may acknowledge writes for at most `fence_after_ms` plus this margin — one controller
 * tick (check_interval_ms = 100) to notice, the CLIENT PAUSE round trip, and the sampling of the
 * clients here (one write in flight, replies timed on a loaded 2-core machine).
 */
export const FENCE_MARGIN_MS = 250
export const PARTITION_WINDOW_MS = FENCE_AFTER_MS + FENCE_MARGIN_MS

/**
 * Worst time from a cut to the slowest vote a deposition needs: a check goes out within
 * `check_interval_ms`, its timeout (`check_timeout_ms`) is the first failure, the member votes
 * once timeouts have lasted `down_after_ms`, seen at the end of a check (one more timeout and
 * interval at worst).
 */
export const VOTE_AFTER_MS = DEFAULTS.down_after_ms + 2 * (DEFAULTS.check_timeout_ms + DEFAULTS.check_interval_ms)

/**
 * From the last needed vote to the old master's pause: the vote's member record written, the
 * tally and the master znode's removal by a member, the old master's watch — three ZooKeeper
 * round trips and a watch event.
 */
export const DEPOSITION_MS = 250

/**
 * The deposition window (README, "Partition guarantees", scenario 3): a master whose dictator
 * keeps ZooKeeper but whose Redis its replicas cannot reach is not cut from anything it can see;
 * it stops when its replicas' votes depose it. Its Redis may acknowledge writes (which its
 * replicas never get) for at most the slowest vote, the deposition, and the fence margin.
 */
export const DEPOSITION_WINDOW_MS = VOTE_AFTER_MS + DEPOSITION_MS + FENCE_MARGIN_MS

/**
 * Longest time two Redis servers may both be seen accepting writes: the chaos suite's documented
 * sampling and re-pointing window (test/chaos/topology.ts). Above it, two masters took writes.
 */
export const OVERLAP_BOUND_MS = FENCING_WINDOW_MS

/** After the last heal, the service converges (one master, every other Redis its linked replica, every dictator agreeing) within this. */
export const CONVERGE_AFTER_HEAL_MS = 30_000

// ---------------------------------------------------------------------------------------------
// The service on the bed
// ---------------------------------------------------------------------------------------------

export interface PartitionTopology extends Topology {
  readonly bed: TestBed
}

export class PartTopo extends Context.Tag("partition/Topology")<PartTopo, PartitionTopology>() {}

export const ZK_HOSTS = ["zk1", "zk2", "zk3"] as const
export const NODES = ["redis1", "redis2", "redis3"] as const

/**
 * Distinct Redis ports although every Redis has an address of its own: the workload's checker
 * tells servers apart by port.
 */
const REDIS_PORT = (i: number) => 6381 + i
const HTTP_PORT = 7000
/** As the chaos suite: a replica's full sync starts at once instead of after Redis's 5 s wait for more replicas. */
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]

/** What a partition file may change: dictator config keys (e.g. `failsafe`). */
export interface PartitionTopologyOptions {
  readonly extra?: Record<string, unknown>
}

export const makePartitionTopology = (svc: string, opts?: PartitionTopologyOptions): Effect.Effect<PartitionTopology, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const bed = yield* testBed([...ZK_HOSTS, ...NODES])
    const zk = yield* zooKeeperEnsemble(3, { tickTime: ZK_TICK_MS, placement: ZK_HOSTS.map((h) => bed.host(h)) })
    const redis = yield* Effect.forEach(NODES, (name, i) =>
      redisServer({ args: REDIS_ARGS, placement: bed.host(name), port: REDIS_PORT(i) })
    )
    const dictators = yield* Effect.forEach(
      NODES,
      (name, i) =>
        dictator({
          name,
          svc,
          zkHosts: zk.hosts,
          redisPort: redis[i]!.port,
          httpPort: HTTP_PORT,
          placement: bed.host(name),
          ...(opts?.extra === undefined ? {} : { extra: opts.extra })
        }),
      { concurrency: "unbounded" }
    )
    // Registered last, so it runs first: no graceful handovers one after the other at teardown.
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    const t: PartitionTopology = {
      svc,
      zk,
      bed,
      nodes: NODES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! }))
    }
    yield* awaitConverged(t, "90 seconds")
    return t
  })

export const partitionLayer = (svc: string, opts?: PartitionTopologyOptions) => Layer.scoped(PartTopo, makePartitionTopology(svc, opts))

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/** Every host of the bed but `except` (names). */
export const allBut = (t: PartitionTopology, ...except: ReadonlyArray<string>): Array<string> =>
  t.bed.hosts.map((h) => h.name).filter((n) => !except.includes(n))

/** When a cut was asked for, and when it was in force (every `nft` had committed its rules). */
export interface CutTimes {
  readonly cutStartedAt: number
  readonly faultAt: number
}

/**
 * Applies the cuts, all at once (one `nft` per host, in parallel: a split lands as one event, not
 * host after host); each host's rules are removed again when the scope closes (test failed or
 * not). The fault is dated when the last `nft` returned: it commits its rules at its very end,
 * after a start-up that takes 100–400 ms on a loaded machine, during which the network still
 * works (measured: the quorum answered a request sent 360 ms after the `nft` were started).
 * Dated at the start instead, every window would include that start-up.
 */
export const partition = (t: PartitionTopology, cuts: ReadonlyArray<Cut>): Effect.Effect<CutTimes, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const cutStartedAt = yield* Clock.currentTimeMillis
    yield* Effect.forEach(
      cuts,
      (c) => Effect.acquireRelease(t.bed.cut(c), () => t.bed.heal(c.host).pipe(Effect.ignore)),
      { discard: true, concurrency: "unbounded" }
    )
    return { cutStartedAt, faultAt: yield* Clock.currentTimeMillis }
  })

export const healAll = (t: PartitionTopology) => t.bed.healAll

/** The ZooKeeper server (zk1–zk3) that `node`'s dictator has its session on, from the servers' `cons`. */
export const zkServerOf = (t: PartitionTopology, node: TopologyNode): Effect.Effect<string, unknown> =>
  waitUntil(
    `the ZooKeeper server ${node.name}'s dictator is connected to`,
    Effect.gen(function* () {
      const address = t.bed.host(node.name).host
      for (const [i, s] of t.zk.servers.entries()) {
        const text = yield* fourLetters(s.host, s.clientPort, "cons")
        if (text.includes(`/${address}:`)) return Option.some(ZK_HOSTS[i]!)
      }
      return Option.none()
    }),
    { timeout: "10 seconds", interval: "200 millis" }
  )

const fourLetters = (host: string, port: number, word: string): Effect.Effect<string> =>
  Effect.async<string>((resume) => {
    let data = ""
    const s = net.createConnection({ host, port })
    const done = () => {
      s.destroy()
      resume(Effect.succeed(data))
    }
    s.setTimeout(2000, done)
    s.setEncoding("utf8")
    s.on("connect", () => s.write(word))
    s.on("data", (d: string) => (data += d))
    s.on("close", done)
    s.on("error", done)
    return Effect.sync(() => s.destroy())
  })

// ---------------------------------------------------------------------------------------------
// One partition scenario and its figures
// ---------------------------------------------------------------------------------------------

/** What the body of a scenario reports back. */
export interface FaultTimes {
  /** The first cut in force (ms, real clock): see `partition`. */
  readonly faultAt: number
  /** When the first cut was asked for: acknowledged writes from then on may be lost with the fault. */
  readonly cutStartedAt: number
  /** The last heal. */
  readonly healAt: number
  /** Time from the last heal to convergence. */
  readonly convergedAfterHealMs: number
  /** The clients that stayed on the master of before the fault. */
  readonly stale: StaleClient
}

export interface Figures {
  readonly label: string
  /** Time the `nft` of the cut took to be in force (not part of any window below). */
  readonly cutTookMs: number
  /** The window the old master may acknowledge writes in (and lose them) after the cut. */
  readonly windowMs: number
  readonly oldMaster: string
  readonly newMaster: string
  /** Masters (znode epochs) other than the first one the writer saw during the scenario. */
  readonly failovers: number
  /** First write accepted by another Redis after the fault (checker), ms after the fault. */
  readonly newMasterWritableAfterMs: number | null
  /** Last write the old master acknowledged to its own clients before the heal, ms after the fault. */
  readonly oldMasterLastAckAfterMs: number | null
  /** Writes the old master acknowledged that were sent after another Redis had accepted one. */
  readonly oldAckedAfterNewWritable: number
  readonly maxOverlapMs: number
  readonly overlaps: number
  readonly acked: number
  readonly lost: number
  /** Lost acknowledged writes acknowledged outside [fault, fault + PARTITION_WINDOW_MS]. */
  readonly lostOutsideWindow: number
  readonly convergedAfterHealMs: number
  readonly durationMs: number
}

const figuresOf = (label: string, windowMs: number, o: Outcome<FaultTimes>, startedAt: number, endedAt: number): Figures => {
  const { faultAt, cutStartedAt, healAt, stale, convergedAfterHealMs } = o.result
  const oldNode = o.before.master
  const epochs = new Set(
    o.writer.follower
      .history()
      .map((h) => h.master?.czxid)
      .filter((c): c is string => c !== undefined && c !== o.before.master.czxid)
  )
  const newAccept = o.checker.firstAcceptSince(faultAt, oldNode.port)
  const staleAcks = stale.acks()
  const oldAcksDuringFault = staleAcks.filter((a) => a.at >= faultAt && a.sentAt <= healAt)
  const last = oldAcksDuringFault.at(-1)
  const afterNew = newAccept === undefined ? [] : staleAcks.filter((a: Ack) => a.sentAt > newAccept.at)
  return {
    label,
    cutTookMs: faultAt - cutStartedAt,
    windowMs,
    oldMaster: o.before.master.name,
    newMaster: o.after.master.name,
    failovers: epochs.size,
    newMasterWritableAfterMs: newAccept === undefined ? null : newAccept.sentAt - faultAt,
    oldMasterLastAckAfterMs: last === undefined ? null : last.at - faultAt,
    oldAckedAfterNewWritable: afterNew.length,
    maxOverlapMs: o.report.maxOverlapMs,
    overlaps: o.report.overlaps.length,
    acked: o.stats.acked,
    lost: o.lost.length,
    lostOutsideWindow: o.lost.filter((a) => a.at < cutStartedAt || a.at > faultAt + windowMs).length,
    convergedAfterHealMs,
    durationMs: endedAt - startedAt
  }
}

export const describeFigures = (f: Figures): string =>
  [
    `${f.oldMaster} -> ${f.newMaster}`,
    `cut in force after ${fmtMs(f.cutTookMs)}`,
    `failovers ${f.failovers}`,
    `new master writable after ${fmtMs(f.newMasterWritableAfterMs ?? undefined)}`,
    `old master's last ack ${fmtMs(f.oldMasterLastAckAfterMs ?? undefined)} after the cut`,
    `old master acked ${f.oldAckedAfterNewWritable} after the new was writable`,
    `two writable ${fmtMs(f.maxOverlapMs)} (${f.overlaps})`,
    `acked ${f.acked}`,
    `lost ${f.lost} (${f.lostOutsideWindow} outside the ${f.windowMs} ms window)`,
    `converged ${fmtMs(f.convergedAfterHealMs)} after the heal`,
    `scenario ${fmtMs(f.durationMs)}`
  ].join(", ")

/**
 * Heals whatever an earlier scenario left, then runs `fault` as the chaos suite's scenario with a
 * stale client on the current master. `fault` cuts (with `partition`, in its own scope: healed
 * when it ends), holds, heals; this then waits for convergence and measures. The figures go to
 * the log and to .vitest-tmp/partition/<tag>.json, each dictator's log to <tag>-<node>.log.
 */
export const partitionScenario = (
  t: PartitionTopology,
  tag: string,
  label: string,
  fault: (w: Workload) => Effect.Effect<{ readonly faultAt: number; readonly cutStartedAt?: number }, unknown, Scope.Scope>,
  windowMs: number = PARTITION_WINDOW_MS
): Effect.Effect<{ readonly outcome: Outcome<FaultTimes>; readonly figures: Figures }, unknown> =>
  Effect.gen(function* () {
    const startedAt = yield* Clock.currentTimeMillis
    yield* healAll(t)
    const outcome = yield* scenario(t, tag, (w) =>
      Effect.gen(function* () {
        const stale = yield* staleClient(masterOf(t, w.before).redis, { tag: `${tag}-stale`, timeoutMs: 2000 })
        yield* waitUntil(
          "the stale client's first acknowledged writes",
          Effect.sync(() => (stale.acks().length >= 5 ? Option.some(true) : Option.none())),
          { timeout: "10 seconds", interval: "10 millis" }
        )
        const { faultAt, cutStartedAt = faultAt } = yield* Effect.scoped(fault(w))
        // Belt and braces: nothing of the fault may outlive it.
        yield* healAll(t)
        const healAt = yield* Clock.currentTimeMillis
        yield* awaitConverged(t, `${CONVERGE_AFTER_HEAL_MS} millis`).pipe(Effect.ignore)
        const convergedAfterHealMs = (yield* Clock.currentTimeMillis) - healAt
        return { faultAt, cutStartedAt, healAt, convergedAfterHealMs, stale } satisfies FaultTimes
      })
    )
    const figures = figuresOf(label, windowMs, outcome, startedAt, yield* Clock.currentTimeMillis)
    console.log(`[partition] ${label}: ${describeFigures(figures)}`)
    console.log(summary(label, outcome))
    try {
      const dir = path.join(repoRoot(), ".vitest-tmp", "partition")
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, `${tag}.json`), JSON.stringify(figures, null, 2) + "\n")
      // Each dictator's log of the run (the most recent part), to read a scenario's decisions.
      for (const n of t.nodes) fs.writeFileSync(path.join(dir, `${tag}-${n.name}.log`), n.dictator.output())
    } catch {
      // figures are in the log anyway
    }
    return { outcome, figures }
  })
