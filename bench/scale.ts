/**
 * Scale benchmark (issue 12): N services × 3 nodes on one 3-server ZooKeeper ensemble, run by three
 * dictator processes (three "hosts" h1, h2, h3), each managing its N local Redis servers through
 * `nodes: [...]`; next to it, in the same run, 3 redis-sentinels monitoring N masters.
 *
 *   npm run bench -- --cases scale                          100 services, 60 s idle
 *   npm run bench -- --cases scale --services 20 --idle-seconds 30
 *   npm run bench -- --cases footprint,scale --minutes 2    the footprint case first, then this one
 *
 * Phases, in order (each figure is measured in the run):
 * 1. Cold start: 3N redis-servers up, then the three dictator processes spawned at once; the time
 *    until every service has one master with two replicas (link up, the master counting both), every
 *    node agreeing on the master and seeing the three member records.
 * 2. Dictator idle (after a warm-up): RSS and CPU per process, ZooKeeper requests per second (per
 *    session from `cons`, and every request the ensemble received from `mntr`), znodes and watches.
 *    Nothing else runs: Sentinel is not started yet and the bench does not poll the dictators.
 * 3. Sentinel idle: N more redis-servers (masters without replicas) and 3 redis-sentinels monitoring
 *    them all (quorum 2, down-after 1000 ms), measured the same way once every sentinel sees every
 *    master with 3 sentinels; then stopped, before the faults. The dictators idle meanwhile.
 * 4. (a) The ZooKeeper leader SIGKILLed: 30 s of watching every node's view (master name and epoch,
 *    role, session): master changes (expected 0), masters seen fenced, sessions lost, time until the
 *    ensemble has a leader again; then the server is restarted.
 *    (b) The host holding the most masters loses its dictator process and all its Redis servers
 *    (SIGKILL at once): per service it mastered, the time until one of its two surviving Redis
 *    servers says `ROLE` master and takes a `SET` (polled every 50 ms, ≤ 60 s); median and max;
 *    masters changed in the other services (expected 0).
 *    (c) Its Redis servers and its process restarted: the time until each of its nodes is a replica
 *    of its service's master with the link up and every master counts two replicas again.
 *
 * Prints a table and writes bench/results/<date>-scale.json (also when a phase failed: what was
 * measured up to there, and the error).
 */
process.env.HARNESS_DETACH = "1"

import { readFileSync, readdirSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Duration, Effect, Exit, Fiber, Option, type Scope } from "effect"
import type { Redis as IORedis } from "ioredis"
import {
  type DictatorProcess,
  HarnessError,
  type RedisServer,
  type ZkServer,
  dictator,
  dictatorNodeArgs,
  oneShotRedis,
  redisCommand,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeperEnsemble
} from "../test/support/servers.js"
import {
  FOOTPRINT_USAGE,
  type Figures,
  type FootprintOptions,
  REDIS_ARGS,
  type Watched,
  cpuSeconds,
  field,
  figuresTable,
  footprintCase,
  footprintFlags,
  fourLetters,
  log,
  machineFacts,
  measure,
  mntr,
  receivedBySession,
  round,
  rssKb,
  sessionOf
} from "./footprint.js"
import { sentinelProcess } from "./sentinel.js"

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

export interface ScaleOptions {
  readonly services: number
  readonly idleSeconds: number
  readonly warmupSeconds: number
  /** Config keys given to every dictator process (--config JSON). */
  readonly config: Record<string, unknown>
}

export const SCALE_USAGE = `usage: npm run bench -- --cases scale [--services N] [--idle-seconds S] [--warmup-seconds W] [--config JSON]
       npm run bench -- --cases footprint,scale [footprint's flags] [scale's flags]
  --services N        services of 3 nodes each, on 3 dictator processes (default 100; 1 to 500)
  --idle-seconds S    each idle measurement, dictators then sentinels (default 60)
  --warmup-seconds W  wait after convergence before measuring (default 20)
  --config JSON       config keys for every dictator process, e.g. '{"check_interval_ms": 1000}'
  footprint's flags (with footprint in --cases): --minutes M, --nodes K`

const HOSTS = ["h1", "h2", "h3"] as const
const svcName = (i: number, n: number) => `s${String(i + 1).padStart(String(n).length, "0")}`

// ---------------------------------------------------------------------------------------------
// The dictators' view, read over HTTP (/nodes of each process)
// ---------------------------------------------------------------------------------------------

interface NodeView {
  readonly service: string
  readonly name: string
  readonly role: string
  readonly session: string | undefined
  /** "name@epoch" of the elected master this node sees, undefined when none. */
  readonly master: string | undefined
  readonly masterName: string | undefined
  readonly redisState: string
  readonly linkUp: boolean
  readonly replicas: number
  readonly members: number
}

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined)

const toView = (s: unknown): NodeView => {
  const m = field(s, "master")
  const elected = field(m, "state") === "elected"
  const redis = field(s, "redis")
  const members = field(s, "members")
  return {
    service: str(field(s, "service")) ?? "?",
    name: str(field(s, "name")) ?? "?",
    role: str(field(s, "role")) ?? "?",
    session: sessionOf(s),
    master: elected ? `${String(field(m, "name"))}@${String(field(m, "epoch"))}` : undefined,
    masterName: elected ? str(field(m, "name")) : undefined,
    redisState: str(field(redis, "state")) ?? "?",
    linkUp: field(redis, "link_up") === true,
    replicas: typeof field(redis, "replicas") === "number" ? (field(redis, "replicas") as number) : 0,
    members: Array.isArray(members) ? members.length : 0
  }
}

/** Every node of one process, by service. */
const nodesOf = (d: DictatorProcess): Effect.Effect<Map<string, NodeView>, HarnessError> =>
  Effect.flatMap(d.http("/nodes?format=json"), (r) =>
    r.status === 200
      ? Effect.try({
          try: () => new Map((JSON.parse(r.body) as ReadonlyArray<unknown>).map((s) => toView(s)).map((v) => [v.service, v])),
          catch: () => new HarnessError({ message: `dictator ${d.name}: /nodes is not JSON` })
        })
      : Effect.fail(new HarnessError({ message: `dictator ${d.name}: /nodes answered ${r.status}` }))
  )

/** The three processes' views (a process that does not answer counts as an empty map). */
const snapshot = (procs: ReadonlyArray<DictatorProcess>) =>
  Effect.forEach(procs, (d) => nodesOf(d).pipe(Effect.orElseSucceed(() => new Map<string, NodeView>())), {
    concurrency: "unbounded"
  })

/** A service is converged: one master, two replicas with link up, all agreeing, 3 member records each. */
const serviceConverged = (views: ReadonlyArray<Map<string, NodeView>>, svc: string): boolean => {
  const nodes = views.map((v) => v.get(svc))
  if (nodes.some((n) => n === undefined)) return false
  const ns = nodes as ReadonlyArray<NodeView>
  const masters = ns.filter((n) => n.role === "master")
  const replicas = ns.filter((n) => n.role === "replica")
  if (masters.length !== 1 || replicas.length !== 2) return false
  const master = masters[0]!
  return (
    master.redisState === "healthy" &&
    master.replicas >= 2 &&
    replicas.every((r) => r.redisState === "healthy" && r.linkUp) &&
    ns.every((n) => n.members === 3 && n.masterName === master.name && n.master === master.master)
  )
}

/** Waits (bounded) until every service converged; the error says how many did. */
const awaitConvergence = (procs: ReadonlyArray<DictatorProcess>, services: ReadonlyArray<string>, what: string, timeoutS: number) =>
  Effect.gen(function* () {
    let last = 0
    let lagging = ""
    return yield* waitUntil(
      what,
      Effect.map(snapshot(procs), (views) => {
        const not = services.filter((s) => !serviceConverged(views, s))
        last = services.length - not.length
        // What each node of (up to 5 of) the services not converged shows, for the error.
        lagging = not
          .slice(0, 5)
          .map(
            (s) =>
              `${s}: ${views
                .map((v, i) => {
                  const n = v.get(s)
                  return n === undefined
                    ? `${HOSTS[i]} -`
                    : `${n.name} ${n.role} (master ${n.master ?? "none"}, redis ${n.redisState}${n.linkUp ? " link up" : ""}, ${n.replicas} replicas, ${n.members} members)`
                })
                .join("; ")}`
          )
          .join("\n")
        return not.length === 0 ? Option.some(views) : Option.none()
      }),
      { timeout: Duration.seconds(timeoutS), interval: "500 millis" }
    ).pipe(
      Effect.mapError(
        (e) => new HarnessError({ message: `${e.message}: ${last} of ${services.length} services converged; not yet:\n${lagging}` })
      )
    )
  })

const masterByService = (views: ReadonlyArray<Map<string, NodeView>>, services: ReadonlyArray<string>) =>
  new Map(
    services.map((s) => {
      const m = views.map((v) => v.get(s)).find((n) => n?.role === "master")
      return [s, { host: m?.name, master: m?.master }] as const
    })
  )

// ---------------------------------------------------------------------------------------------
// ZooKeeper figures
// ---------------------------------------------------------------------------------------------

interface ZkStats {
  readonly id: number
  readonly state: string
  readonly znodes: number
  readonly watches: number
  /** `wchs`: "Total watches:N". */
  readonly wchsWatches: number | undefined
  readonly packetsReceived: number
  readonly connections: number
}

const zkStats = (servers: ReadonlyArray<ZkServer>): Effect.Effect<ReadonlyArray<ZkStats>> =>
  Effect.forEach(servers, (s) =>
    Effect.promise(async () => {
      const m = await mntr(s.clientPort)
      const w = /Total watches:\s*(\d+)/.exec(await fourLetters(s.clientPort, "wchs"))
      return {
        id: s.id,
        state: m.zk_server_state ?? "down",
        znodes: Number(m.zk_znode_count ?? NaN),
        watches: Number(m.zk_watch_count ?? NaN),
        wchsWatches: w === null ? undefined : Number(w[1]),
        packetsReceived: Number(m.zk_packets_received ?? NaN),
        connections: Number(m.zk_num_alive_connections ?? NaN)
      }
    })
  )

/** Which server (id) each session is connected to now, from every server's `cons`. */
const sessionServers = (servers: ReadonlyArray<ZkServer>): Effect.Effect<Map<string, number>> =>
  Effect.promise(async () => {
    const out = new Map<string, number>()
    for (const s of servers) {
      const text = await fourLetters(s.clientPort, "cons")
      for (const m of text.matchAll(/sid=0x([0-9a-f]+)/gi)) out.set(m[1]!.toLowerCase().replace(/^0+(?=.)/, ""), s.id)
    }
    return out
  })

/**
 * The dictators' log lines about `svcs` since `sinceMs` (at most `max` a service, WARN and above
 * plus role changes), from the processes' captured output: why a master changed.
 */
const linesAbout = (procs: ReadonlyArray<DictatorProcess>, svcs: ReadonlyArray<string>, sinceMs: number, max = 40): Record<string, ReadonlyArray<string>> =>
  Object.fromEntries(
    svcs.map((svc) => {
      const out: Array<string> = []
      for (const d of procs) {
        for (const line of d.output().split("\n")) {
          if (!new RegExp(`service=${svc}(\\s|$)`).test(line)) continue
          const t = /^timestamp=(\S+)/.exec(line)
          if (t === null || Date.parse(t[1]!) < sinceMs) continue
          if (!/level=(WARN|ERROR)|master|replica|fenc|candidate|elect/.test(line)) continue
          out.push(`[${d.name}] ${line}`)
        }
      }
      out.sort((a, b) => a.slice(a.indexOf("timestamp=")).localeCompare(b.slice(b.indexOf("timestamp="))))
      return [svc, out.slice(0, max)]
    })
  )

/** Open file descriptors of a process (its /proc/PID/fd entries); undefined when it is gone. */
const openFds = (pid: number | undefined | "self"): number | undefined => {
  try {
    return pid === undefined ? undefined : readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return undefined
  }
}

const median = (xs: ReadonlyArray<number>): number | undefined => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/** Filled phase by phase, so a failed run still reports what it measured. */
interface ScaleReport {
  startup?: { redisUpS: number; processesUpS: number; convergedS: number; deadlineS: number }
  sessions?: ReadonlyArray<string | undefined>
  mastersPerHost?: Record<string, number>
  dictatorIdle?: {
    rows: ReadonlyArray<Figures>
    seconds: number
    /** Undefined when a session moved to another server meanwhile (`cons` counts per connection). */
    zkRequestsPerS: number | undefined
    sessionServers: Record<string, { start: number | null; end: number | null }>
    sessionsReconnected: ReadonlyArray<string>
    zkPacketsPerS: number
    sessionPingsPerS: number
    znodes: number
    watches: number
    zk: { start: ReadonlyArray<ZkStats>; end: ReadonlyArray<ZkStats> }
  }
  sentinelIdle?: { rows: ReadonlyArray<Figures>; seconds: number; convergedS: number }
  zkLeaderKilled?: {
    server: number
    leaderAgainMs: number
    newLeader: number | undefined
    watchedS: number
    polls: number
    masterChanges: number
    changedServices: ReadonlyArray<string>
    mastersSeenFenced: number
    /** Longest time one master's node showed a role other than master (at the polls' 250 ms resolution). */
    longestFenceMs: number
    /** The roles those masters' nodes showed instead (count of polls × nodes). */
    fencedRoles: Record<string, number>
    /** The dictators' log lines about each service whose master changed. */
    logs: Record<string, ReadonlyArray<string>>
    sessionsLost: ReadonlyArray<string>
    restartedMs: number
  }
  hostKilled?: {
    host: string
    masters: number
    writableMs: { median: number | undefined; max: number | undefined; count: number; missed: ReadonlyArray<string> }
    perService: Record<string, number>
    needlessChanges: number
    needlessServices: ReadonlyArray<string>
    logs: Record<string, ReadonlyArray<string>>
  }
  /** Processes to describe when a phase fails (CPU since their start, RSS). */
  live?: Array<{ readonly what: string; readonly pid: () => number | undefined; readonly since: number; readonly cpu0: number }>
  /**
   * Between the cold start and (a) (idle, Sentinel's phase): services whose master (name@epoch)
   * changed, and how long after the Sentinel phase every service was converged again.
   */
  idleStability?: { masterChanges: number; reconvergedMs: number }
  /** The dictator processes when a phase failed: CPU since their start, RSS. */
  atFailure?: ReadonlyArray<string>
  /** Open file descriptors: this process (2 pipes per child), each dictator process at idle. */
  openFds?: { bench?: number | undefined; benchWithSentinel?: number | undefined; dictators?: Record<string, number | undefined> }
  hostRestarted?: {
    host: string
    redisUpMs: number
    processUpMs: number
    convergedMs: number
    masterChanges: number
    changedServices: ReadonlyArray<string>
    logs: Record<string, ReadonlyArray<string>>
  }
}

const timed = <A, E, R>(eff: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const t0 = Date.now()
    const a = yield* eff
    return [a, Date.now() - t0] as const
  })

/**
 * Polls `procs` every `everyMs` until `until()` (ms since the epoch, read at each poll): every master
 * (name@epoch) each service showed, and how long a master's own node showed another role (fenced).
 */
const watchMasters = (procs: ReadonlyArray<DictatorProcess>, services: ReadonlyArray<string>, everyMs: number, until: () => number) =>
  Effect.gen(function* () {
    const seen = new Map<string, Set<string>>(services.map((s) => [s, new Set<string>()]))
    const fencedSince = new Map<string, number>()
    const fencedMs = new Map<string, number>()
    const fencedRoles = new Map<string, number>()
    const closeFence = (s: string, now: number) => {
      const since = fencedSince.get(s)
      if (since === undefined) return
      fencedSince.delete(s)
      fencedMs.set(s, Math.max(fencedMs.get(s) ?? 0, now - since))
    }
    let polls = 0
    while (Date.now() < until()) {
      const views = yield* snapshot(procs)
      const now = Date.now()
      polls++
      for (const s of services) {
        let fenced = false
        for (const v of views) {
          const n = v.get(s)
          if (n?.master !== undefined) seen.get(s)!.add(n.master)
          // The master's own node in a role other than master: writes paused (fenced / handing over).
          if (n !== undefined && n.master !== undefined && n.masterName === n.name && n.role !== "master") {
            fenced = true
            fencedRoles.set(n.role, (fencedRoles.get(n.role) ?? 0) + 1)
          }
        }
        if (fenced && !fencedSince.has(s)) fencedSince.set(s, now)
        if (!fenced) closeFence(s, now)
      }
      yield* Effect.sleep(Duration.millis(Math.max(0, Math.min(everyMs, until() - Date.now()))))
    }
    for (const s of [...fencedSince.keys()]) closeFence(s, Date.now())
    return { seen, fencedMs, fencedRoles, polls }
  })

export const runScale = (
  opts: ScaleOptions,
  report: ScaleReport
): Effect.Effect<void, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const n = opts.services
    const services = Array.from({ length: n }, (_, i) => svcName(i, n))
    // Deadlines grow with N: the whole cold start is 3N Redis servers and 3N nodes on 2 cores.
    const convergeS = 60 + 3 * n
    log(`scale: a 3-server ZooKeeper ensemble (tickTime 2000), ${3 * n} redis-servers, 3 dictator processes of ${n} nodes`)
    const ens = yield* zooKeeperEnsemble(3, { tickTime: 2000 })
    const zkPorts = ens.servers.map((s) => s.clientPort)
    const t0 = Date.now()
    const redis: ReadonlyArray<ReadonlyArray<RedisServer>> = yield* Effect.forEach(HOSTS, () =>
      Effect.forEach(services, () => redisServer({ args: REDIS_ARGS }), { concurrency: 8 })
    )
    const redisUpS = (Date.now() - t0) / 1000
    const t1 = Date.now()
    const procs = yield* Effect.forEach(
      HOSTS,
      (h, hi) =>
        dictator({
          name: h,
          svc: services[0]!,
          zkHosts: ens.hosts,
          redisPort: redis[hi]![0]!.port,
          nodesList: services.map((service, i) => ({ service, name: h, host: "127.0.0.1", port: redis[hi]![i]!.port })),
          extra: opts.config,
          readyTimeout: Duration.seconds(convergeS)
        }),
      { concurrency: "unbounded" }
    )
    report.live = procs.map((d) => ({ what: `dictator ${d.name}`, pid: d.pid, since: Date.now(), cpu0: cpuSeconds(d.pid()) ?? 0 }))
    const processesUpS = (Date.now() - t1) / 1000
    log(`scale: ${3 * n} redis-servers up in ${redisUpS.toFixed(1)} s, dictator processes answering in ${processesUpS.toFixed(1)} s; waiting ≤ ${convergeS} s for convergence`)
    const views0 = yield* awaitConvergence(procs, services, `${n} services converged (one master, two replicas, link up)`, convergeS)
    const convergedS = (Date.now() - t1) / 1000
    report.startup = { redisUpS: round(redisUpS, 1)!, processesUpS: round(processesUpS, 1)!, convergedS: round(convergedS, 1)!, deadlineS: convergeS }
    const sessions = views0.map((v) => [...v.values()][0]?.session)
    report.sessions = sessions
    const perHost = (views: ReadonlyArray<Map<string, NodeView>>) =>
      Object.fromEntries(HOSTS.map((h, i) => [h, [...views[i]!.values()].filter((v) => v.role === "master").length]))
    report.mastersPerHost = perHost(views0)
    log(`scale: converged ${convergedS.toFixed(1)} s after the processes were spawned; masters per host ${JSON.stringify(report.mastersPerHost)}`)

    // -- Dictator idle --------------------------------------------------------------------------
    log(`scale: warming up ${opts.warmupSeconds} s, then ${opts.idleSeconds} s of dictator idle (nothing polls them)`)
    yield* Effect.sleep(Duration.seconds(opts.warmupSeconds))
    const watched: Array<Watched> = [
      ...procs.map((d, i) => ({
        what: `dictator ${d.name} (${n} nodes, ${report.mastersPerHost![d.name]} masters)`,
        pid: d.pid,
        session: () => sessions[i]
      })),
      ...ens.servers.map((s) => ({ what: `zookeeper #${s.id}`, pid: s.pid }))
    ]
    const zkStart = yield* zkStats(ens.servers)
    const on0 = yield* sessionServers(ens.servers)
    const zkReq0 = yield* Effect.promise(() => receivedBySession(zkPorts))
    const ti = Date.now()
    const rows = yield* measure(watched, opts.idleSeconds / 60, zkPorts)
    const zkReq1 = yield* Effect.promise(() => receivedBySession(zkPorts))
    const zkEnd = yield* zkStats(ens.servers)
    const on1 = yield* sessionServers(ens.servers)
    report.openFds = {
      bench: openFds("self"),
      dictators: Object.fromEntries(HOSTS.map((h, i) => [h, openFds(procs[i]!.pid())]))
    }
    const idleS = (Date.now() - ti) / 1000
    const ourSessions = sessions.filter((s): s is string => s !== undefined)
    // Per connection: a session that moved to another server counts from 0 there (then unknown).
    const moved = ourSessions.filter((s) => on0.get(s) !== on1.get(s) || (zkReq1.get(s) ?? 0) < (zkReq0.get(s) ?? 0))
    const reqDelta = ourSessions.reduce((sum, s) => sum + ((zkReq1.get(s) ?? 0) - (zkReq0.get(s) ?? 0)), 0)
    const pktDelta = zkEnd.reduce((sum, z, i) => sum + (z.packetsReceived - zkStart[i]!.packetsReceived), 0)
    const timeoutMs = typeof opts.config.zk_session_timeout_ms === "number" ? opts.config.zk_session_timeout_ms : 6000
    report.dictatorIdle = {
      rows,
      seconds: round(idleS, 1)!,
      zkRequestsPerS: moved.length > 0 ? undefined : round(reqDelta / idleS, 2)!,
      sessionServers: Object.fromEntries(
        HOSTS.map((h, i) => [h, { start: on0.get(sessions[i] ?? "") ?? null, end: on1.get(sessions[i] ?? "") ?? null }])
      ),
      sessionsReconnected: HOSTS.filter((_, i) => moved.includes(sessions[i] ?? "")),
      zkPacketsPerS: round(pktDelta / idleS, 2)!,
      // The client pings when a third of the session timeout passed without a request.
      sessionPingsPerS: round((3 * 3000) / timeoutMs, 2)!,
      znodes: Math.max(...zkEnd.map((z) => z.znodes)),
      watches: zkEnd.reduce((sum, z) => sum + z.watches, 0),
      zk: { start: zkStart, end: zkEnd }
    }

    // -- Sentinel idle, in a scope of its own, stopped before the faults --------------------------
    log(`scale: Sentinel: ${n} redis-servers (masters), 3 redis-sentinels monitoring all of them`)
    yield* Effect.scoped(
      Effect.gen(function* () {
        const sRedis = yield* Effect.forEach(services, () => redisServer({ args: REDIS_ARGS }), { concurrency: 8 })
        const ts = Date.now()
        const sentinels = yield* Effect.forEach(
          [1, 2, 3],
          () =>
            sentinelProcess({
              masterName: services[0]!,
              masterPort: sRedis[0]!.port,
              moreMasters: services.slice(1).map((name, i) => ({ name, port: sRedis[i + 1]!.port })),
              quorum: 2,
              downAfterMs: 1000,
              failoverTimeoutMs: 10000,
              parallelSyncs: 1
            }),
          { concurrency: "unbounded" }
        )
        // Each sentinel: every master "status=ok" with the three sentinels known.
        yield* waitUntil(
          `3 sentinels each seeing ${n} masters with 3 sentinels`,
          Effect.map(
            Effect.forEach(sentinels, (s) => redisCommand(s.port, ["INFO", "sentinel"]), { concurrency: "unbounded" }),
            (infos) =>
              infos.every((info) => [...info.matchAll(/^master\d+:.*status=ok.*sentinels=3/gm)].length === n)
                ? Option.some(true)
                : Option.none()
          ),
          { timeout: Duration.seconds(60 + n), interval: "500 millis" }
        )
        const sConvergedS = (Date.now() - ts) / 1000
        log(`scale: sentinels converged in ${sConvergedS.toFixed(1)} s; warming up ${opts.warmupSeconds} s, then ${opts.idleSeconds} s of sentinel idle`)
        yield* Effect.sleep(Duration.seconds(opts.warmupSeconds))
        const sRows = yield* measure(
          sentinels.map((s, i) => ({ what: `redis-sentinel ${i + 1} (${n} masters)`, pid: s.pid })),
          opts.idleSeconds / 60,
          []
        )
        report.openFds = { ...report.openFds, benchWithSentinel: openFds("self") }
        report.sentinelIdle = { rows: sRows, seconds: opts.idleSeconds, convergedS: round(sConvergedS, 1)! }
      })
    )

    // -- (a) ZooKeeper leader killed ----------------------------------------------------------------
    const tw = Date.now()
    const viewsA = yield* awaitConvergence(procs, services, "every service converged before killing the ZooKeeper leader", convergeS)
    const beforeA = masterByService(viewsA, services)
    // Nothing was done to the dictators since the cold start: any master change is the idle's own.
    const atStart = masterByService(views0, services)
    report.idleStability = {
      masterChanges: services.filter((s) => beforeA.get(s)!.master !== atStart.get(s)!.master).length,
      reconvergedMs: Date.now() - tw
    }
    log(`scale: masters changed while idle: ${report.idleStability.masterChanges}; converged again ${report.idleStability.reconvergedMs} ms after the Sentinel phase`)
    const sessionsA = viewsA.map((v) => [...v.values()][0]?.session)
    const modes = yield* Effect.forEach(ens.servers, (s) => s.mode)
    const leader = ens.servers[modes.indexOf("leader")]
    if (leader === undefined) return yield* Effect.fail(new HarnessError({ message: `no ZooKeeper leader to kill (modes ${modes.join(",")})` }))
    const survivors = ens.servers.filter((s) => s !== leader)
    log(`scale: (a) SIGKILL of the ZooKeeper leader #${leader.id}; watching every node for 30 s`)
    const ta = Date.now()
    const watchA = yield* Effect.fork(watchMasters(procs, services, 250, () => ta + 30_000))
    yield* leader.kill9
    const newModes = yield* waitUntil(
      "the two surviving ZooKeeper servers to elect a leader",
      Effect.map(Effect.forEach(survivors, (s) => s.mode), (ms) =>
        ms.includes("leader") && ms.includes("follower") ? Option.some(ms) : Option.none()
      ),
      { timeout: "60 seconds", interval: "100 millis" }
    )
    const leaderAgainMs = Date.now() - ta
    const seenA = yield* Fiber.join(watchA)
    const viewsA2 = yield* snapshot(procs)
    const afterA = masterByService(viewsA2, services)
    const sessionsA2 = viewsA2.map((v) => [...v.values()][0]?.session)
    const changedA = services.filter((s) => seenA.seen.get(s)!.size > 1 || afterA.get(s)!.master !== beforeA.get(s)!.master)
    const [, restartedMs] = yield* timed(
      leader.start.pipe(
        Effect.zipRight(
          waitUntil(
            `ZooKeeper #${leader.id} back in the ensemble`,
            Effect.map(leader.mode, (m) => (m === "follower" || m === "leader" ? Option.some(m) : Option.none())),
            { timeout: "60 seconds", interval: "200 millis" }
          )
        )
      )
    )
    report.zkLeaderKilled = {
      server: leader.id,
      leaderAgainMs,
      newLeader: survivors[newModes.indexOf("leader")]?.id,
      watchedS: 30,
      polls: seenA.polls,
      masterChanges: changedA.length,
      changedServices: changedA,
      mastersSeenFenced: seenA.fencedMs.size,
      longestFenceMs: Math.max(0, ...seenA.fencedMs.values()),
      fencedRoles: Object.fromEntries(seenA.fencedRoles),
      logs: linesAbout(procs, changedA, ta),
      sessionsLost: HOSTS.filter((_, i) => sessionsA2[i] !== sessionsA[i]),
      restartedMs
    }
    log(`scale: (a) ${JSON.stringify({ ...report.zkLeaderKilled, logs: undefined })}`)

    // -- (b) one host killed: its dictator process and every Redis server of it -------------------------
    const viewsB = yield* awaitConvergence(procs, services, "every service converged before killing a host", convergeS)
    const beforeB = masterByService(viewsB, services)
    const counts = perHost(viewsB)
    const victim = HOSTS.reduce((best, h) => (counts[h]! > counts[best]! ? h : best), HOSTS[0])
    const vi = HOSTS.indexOf(victim)
    const affected = services.filter((s) => beforeB.get(s)!.host === victim)
    const others = services.filter((s) => beforeB.get(s)!.host !== victim)
    const survivorsIdx = [0, 1, 2].filter((i) => i !== vi)
    // One connection per surviving Redis of each affected service, opened before the kill.
    const clients = new Map<string, ReadonlyArray<IORedis>>()
    yield* Effect.acquireRelease(
      Effect.promise(async () => {
        for (const s of affected) {
          const si = services.indexOf(s)
          const cs = survivorsIdx.map((hi) => {
            const c = oneShotRedis({ host: "127.0.0.1", port: redis[hi]![si]!.port }, { connectTimeoutMs: 2000, commandTimeoutMs: 1000 })
            c.on("error", () => {})
            return c
          })
          await Promise.all(cs.map((c) => c.connect()))
          clients.set(s, cs)
        }
      }),
      () => Effect.sync(() => clients.forEach((cs) => cs.forEach((c) => c.disconnect())))
    )
    const writable = (c: IORedis, key: string): Promise<boolean> =>
      c
        .call("ROLE")
        .then(async (r) => Array.isArray(r) && String(r[0]) === "master" && (await c.set(key, String(Date.now()))) === "OK")
        .catch(() => false)
    log(`scale: (b) SIGKILL of host ${victim}: its dictator process and its ${n} redis-servers (${affected.length} masters)`)
    const tb = Date.now()
    const deadlineB = tb + 60_000
    // The other services are watched until 10 s after the last affected one has a writable master.
    let watchUntil = deadlineB
    const watchB = yield* Effect.fork(
      watchMasters(
        survivorsIdx.map((i) => procs[i]!),
        others,
        500,
        () => watchUntil
      )
    )
    yield* Effect.forEach([procs[vi]!, ...redis[vi]!], (p) => p.signal("SIGKILL"), { concurrency: "unbounded", discard: true })
    const times = yield* Effect.forEach(
      affected,
      (s) =>
        Effect.promise(async () => {
          const cs = clients.get(s)!
          while (Date.now() < deadlineB) {
            const at = Date.now()
            const oks = await Promise.all(cs.map((c) => writable(c, `scale:${s}`)))
            if (oks.some((ok) => ok)) return [s, at - tb] as const
            await new Promise((r) => setTimeout(r, Math.max(0, 50 - (Date.now() - at))))
          }
          return [s, undefined] as const
        }),
      { concurrency: "unbounded" }
    )
    // The killed processes are gone (reaped) before anything restarts them.
    yield* Effect.forEach([procs[vi]!, ...redis[vi]!], (p) => p.kill9, { concurrency: "unbounded", discard: true })
    watchUntil = Math.min(deadlineB, Date.now() + 10_000)
    const seenB = yield* Fiber.join(watchB)
    const viewsB2 = yield* snapshot(survivorsIdx.map((i) => procs[i]!))
    const afterB = masterByService(viewsB2, services)
    const needless = others.filter((s) => seenB.seen.get(s)!.size > 1 || afterB.get(s)!.master !== beforeB.get(s)!.master)
    const got = times.filter((t): t is readonly [string, number] => t[1] !== undefined)
    report.hostKilled = {
      host: victim,
      masters: affected.length,
      writableMs: {
        median: median(got.map((t) => t[1])),
        max: got.length === 0 ? undefined : Math.max(...got.map((t) => t[1])),
        count: got.length,
        missed: times.filter((t) => t[1] === undefined).map((t) => t[0])
      },
      perService: Object.fromEntries(got),
      needlessChanges: needless.length,
      needlessServices: needless,
      logs: linesAbout(survivorsIdx.map((i) => procs[i]!), needless, tb)
    }
    log(`scale: (b) writable new masters for ${got.length} of ${affected.length} services: median ${report.hostKilled.writableMs.median} ms, max ${report.hostKilled.writableMs.max} ms; needless master changes ${needless.length}`)

    // -- (c) the host restarted -----------------------------------------------------------------
    log(`scale: (c) restarting host ${victim}: its ${n} redis-servers, then its dictator process`)
    const tc = Date.now()
    yield* Effect.forEach(redis[vi]!, (r) => r.start, { concurrency: 8, discard: true })
    const redisUpMs = Date.now() - tc
    yield* procs[vi]!.start
    const processUpMs = Date.now() - tc
    const viewsC = yield* awaitConvergence(procs, services, `host ${victim} rejoined: every node a replica with link up`, convergeS)
    const convergedMs = Date.now() - tc
    const afterC = masterByService(viewsC, services)
    const changedC = services.filter((s) => afterC.get(s)!.master !== (afterB.get(s)?.master ?? beforeB.get(s)!.master))
    report.hostRestarted = {
      host: victim,
      redisUpMs,
      processUpMs,
      convergedMs,
      masterChanges: changedC.length,
      changedServices: changedC,
      logs: linesAbout(procs, changedC, tc)
    }
    log(`scale: (c) ${JSON.stringify({ ...report.hostRestarted, logs: undefined })}`)
  }).pipe(
    // Before the scope closes: the processes are still there to be described.
    Effect.tapErrorCause(() =>
      Effect.sync(() => {
        report.atFailure = (report.live ?? []).map((p) => {
          const cpu = cpuSeconds(p.pid())
          const rss = rssKb(p.pid())
          const s = (Date.now() - p.since) / 1000
          return `${p.what}: ${cpu === undefined ? "gone" : `${(((cpu - p.cpu0) / s) * 100).toFixed(1)} % of a core over the last ${s.toFixed(0)} s`}${rss === undefined ? "" : `, RSS ${(rss / 1024).toFixed(1)} MB`}`
        })
      })
    )
  )

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

const scaleTable = (opts: ScaleOptions, r: ScaleReport): string => {
  const out: Array<string> = []
  const n = opts.services
  if (r.startup !== undefined) {
    out.push(
      `Cold start: ${3 * n} redis-servers up in ${r.startup.redisUpS} s; the 3 dictator processes answered in ${r.startup.processesUpS} s and every service converged ${r.startup.convergedS} s after their spawn (deadline ${r.startup.deadlineS} s); masters per host ${JSON.stringify(r.mastersPerHost)}`
    )
  }
  const rows = [...(r.dictatorIdle?.rows ?? []), ...(r.sentinelIdle?.rows ?? [])]
  if (rows.length > 0) {
    out.push(`Idle (${opts.idleSeconds} s each, dictators first, then Sentinel; ZK req/s = the process's session, from cons):`)
    out.push(figuresTable(rows))
  }
  if (r.dictatorIdle !== undefined) {
    const d = r.dictatorIdle
    out.push(
      `ZooKeeper at idle: ${d.zkPacketsPerS} requests/s received by the ensemble (mntr zk_packets_received, all 3 sessions; their pings alone would be ${d.sessionPingsPerS}/s); from the sessions' cons: ${d.zkRequestsPerS === undefined ? `unknown (session of ${d.sessionsReconnected.join(",")} reconnected to another server during the run)` : `${d.zkRequestsPerS} req/s`}; sessions on servers ${JSON.stringify(d.sessionServers)}; ${d.znodes} znodes, ${d.watches} watches (sum over servers: ${d.zk.end.map((z) => `#${z.id} ${z.state} ${z.watches}`).join(", ")})`
    )
  }
  if (r.openFds !== undefined) {
    out.push(
      `Open file descriptors: this bench ${r.openFds.bench ?? "-"} (${r.openFds.benchWithSentinel ?? "-"} with Sentinel's), dictator processes ${JSON.stringify(r.openFds.dictators)}; ulimit -n ${openFilesLimit()}`
    )
  }
  if (r.idleStability !== undefined) {
    out.push(
      `Stability: ${r.idleStability.masterChanges} services changed master between the cold start and (a) with nothing done to them; all converged ${r.idleStability.reconvergedMs} ms after the Sentinel phase`
    )
  }
  if (r.sentinelIdle !== undefined) out.push(`Sentinel: 3 sentinels saw all ${n} masters and each other ${r.sentinelIdle.convergedS} s after their start`)
  if (r.zkLeaderKilled !== undefined) {
    const a = r.zkLeaderKilled
    out.push(
      `(a) ZooKeeper leader #${a.server} SIGKILLed: a leader again (#${a.newLeader}) after ${a.leaderAgainMs} ms; over ${a.watchedS} s (${a.polls} polls of every node): ${a.masterChanges} master changes${a.changedServices.length > 0 ? ` (${a.changedServices.join(",")})` : ""}, ${a.mastersSeenFenced} masters seen fenced (writes paused; longest ${a.longestFenceMs} ms at 250 ms polls; roles shown ${JSON.stringify(a.fencedRoles)}), sessions lost: ${a.sessionsLost.length === 0 ? "none" : a.sessionsLost.join(",")}; restarted and back in ${a.restartedMs} ms`
    )
  }
  if (r.hostKilled !== undefined) {
    const b = r.hostKilled
    out.push(
      `(b) host ${b.host} SIGKILLed (dictator process + ${n} redis-servers, ${b.masters} masters): writable new master for ${b.writableMs.count} of ${b.masters} services, median ${b.writableMs.median ?? "-"} ms, max ${b.writableMs.max ?? "-"} ms${b.writableMs.missed.length > 0 ? `; none within 60 s: ${b.writableMs.missed.join(",")}` : ""}; master changes in the ${n - b.masters} other services: ${b.needlessChanges}`
    )
  }
  if (r.hostRestarted !== undefined) {
    const c = r.hostRestarted
    out.push(
      `(c) host ${c.host} restarted: its redis-servers up in ${c.redisUpMs} ms, its process answering at ${c.processUpMs} ms, every node a replica with link up (all services converged) at ${c.convergedMs} ms; master changes meanwhile: ${c.masterChanges}${c.changedServices.length > 0 ? ` (${c.changedServices.join(",")})` : ""}`
    )
  }
  return out.join("\n")
}

export const scaleCase = (opts: ScaleOptions, command: string): Effect.Effect<number> =>
  Effect.gen(function* () {
    const started = new Date()
    const report: ScaleReport = {}
    const result = yield* Effect.scoped(runScale(opts, report)).pipe(Effect.exit)
    const finished = new Date()
    if (Exit.isFailure(result) && Cause.isInterruptedOnly(result.cause)) return yield* Effect.interrupt
    // The harness's errors carry the failing process's output: 40 lines of it.
    const error = Exit.isFailure(result) ? Cause.pretty(result.cause).split("\n").slice(0, 40).join("\n") : undefined
    console.log("")
    console.log(
      `Scale benchmark — ${started.toISOString()} — ${opts.services} services × 3 nodes, 3 dictator processes, a 3-server ZooKeeper ensemble — ${os.cpus().length} CPUs, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`
    )
    console.log(scaleTable(opts, report))
    if (error !== undefined) {
      console.log(`scale run failed: ${error}`)
      for (const line of report.atFailure ?? []) console.log(`  ${line}`)
    }
    const dir = path.join(repoRoot(), "bench", "results")
    yield* Effect.promise(() => fs.mkdir(dir, { recursive: true }))
    const file = path.join(dir, `${started.toISOString().replace(/:/g, "-")}-scale.json`)
    const json = {
      benchmark: "scale",
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      command,
      options: opts,
      machine: { ...machineFacts(), openFilesLimit: openFilesLimit() },
      settings: {
        zookeeper: { servers: 3, tickTime: 2000 },
        dictator: { settings: opts.config, logLevel: "INFO", nodeArgs: dictatorNodeArgs().join(" ") },
        sentinel: { sentinels: 3, quorum: 2, downAfterMs: 1000, replicas: 0 },
        redisArgs: REDIS_ARGS
      },
      ...(error === undefined ? {} : { error }),
      results: report
    }
    yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(json, null, 2) + "\n"))
    const logged = [report.zkLeaderKilled?.logs, report.hostKilled?.logs, report.hostRestarted?.logs].some((l) => l !== undefined && Object.keys(l).length > 0)
    if (logged) console.log("The dictators' log lines about every service whose master changed are in the JSON (logs).")
    console.log(`\nResults: ${path.relative(process.cwd(), file)}`)
    return error === undefined ? 0 : 1
  })

// ---------------------------------------------------------------------------------------------
// Main: --cases scale, or footprint,scale (footprint first)
// ---------------------------------------------------------------------------------------------

const openFilesLimit = (): string => {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"))
    return m === null ? "unknown" : `${m[1]} (hard ${m[2]})`
  } catch {
    return "unknown"
  }
}

const usageError = (msg: string): never => {
  console.error(`bench: ${msg}\n${SCALE_USAGE}\n${FOOTPRINT_USAGE}`)
  process.exit(2)
}

const parseCommandLine = (argv: ReadonlyArray<string>) => {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        cases: { type: "string" },
        services: { type: "string" },
        "idle-seconds": { type: "string" },
        "warmup-seconds": { type: "string" },
        config: { type: "string" },
        minutes: { type: "string" },
        nodes: { type: "string" },
        help: { type: "boolean", short: "h" }
      }
    }).values
  } catch (e) {
    return usageError((e as Error).message)
  }
  if (values.help === true) {
    console.log(`${SCALE_USAGE}\n${FOOTPRINT_USAGE}`)
    process.exit(0)
  }
  const cases = String(values.cases ?? "scale").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  for (const c of cases) if (c !== "scale" && c !== "footprint") usageError(`unknown case "${c}" with scale (takes: footprint, scale)`)
  const int = (flag: string, v: string | boolean | undefined, dflt: number, min: number, max: number): number => {
    if (v === undefined) return dflt
    const x = Number(v)
    return Number.isInteger(x) && x >= min && x <= max ? x : usageError(`--${flag} ${String(v)}: must be an integer from ${min} to ${max}`)
  }
  const check = <A>(f: () => A): A => {
    try {
      return f()
    } catch (e) {
      return usageError((e as Error).message)
    }
  }
  const config = values.config === undefined ? {} : check(() => footprintFlags.config(String(values.config)))
  if (!cases.includes("footprint") && (values.minutes !== undefined || values.nodes !== undefined)) {
    usageError("--minutes and --nodes are the footprint case's: add footprint to --cases (--cases footprint,scale)")
  }
  const scale: ScaleOptions = {
    services: int("services", values.services, 100, 1, 500),
    idleSeconds: int("idle-seconds", values["idle-seconds"], 60, 5, 3600),
    warmupSeconds: int("warmup-seconds", values["warmup-seconds"], 20, 0, 600),
    config
  }
  const footprint: FootprintOptions = {
    minutes: values.minutes === undefined ? 10 : check(() => footprintFlags.minutes(String(values.minutes))),
    nodes: values.nodes === undefined ? 0 : check(() => footprintFlags.nodes(String(values.nodes))),
    config
  }
  return { cases, scale, footprint }
}

const main = Effect.gen(function* () {
  const { cases, scale, footprint } = parseCommandLine(process.argv.slice(2))
  const command = `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim()
  let code = 0
  if (cases.includes("footprint")) code = Math.max(code, yield* footprintCase(footprint, command))
  if (cases.includes("scale")) code = Math.max(code, yield* scaleCase(scale, command))
  return code
})

NodeRuntime.runMain(main, {
  disablePrettyLogger: true,
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? (exit.value === 0 ? 0 : 1) : Cause.isInterruptedOnly(exit.cause) ? 130 : 1)
})
