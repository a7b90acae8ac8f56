/**
 * Footprint benchmark (issue 12): what an idle dictator costs, next to redis-sentinel, in the
 * same run on the same machine.
 *
 *   npm run bench -- --cases footprint                 10 minutes
 *   npm run bench -- --cases footprint --minutes 2
 *   npm run bench -- --cases footprint --nodes 10      also one process managing 10 nodes
 *
 * Dictator: one standalone ZooKeeper (tickTime 2000), 3 redis-servers, 3 dictators (one service,
 * default settings, log level INFO). Sentinel: 3 redis-servers (a master and two replicas), 3
 * `redis-sentinel` monitoring it (quorum 2, down-after-milliseconds 1000). Both run at once.
 *
 * Once converged and after a warm-up (30 s, or a tenth of the run when shorter), for --minutes:
 * every 5 s the RSS of every dictator and sentinel; at both ends their CPU time (/proc/PID/stat
 * utime + stime) and, per ZooKeeper session, the requests the server received (`cons`: recved).
 * Reported: RSS at start and end, its slope (least squares, MB per hour), CPU % of one core,
 * ZooKeeper requests per second (the session pings are in it: one every third of the session
 * timeout at idle, 0.5/s at 6 s).
 *
 * With --nodes K (K ≥ 2): one more process, a dictator managing K nodes (K one-node services, a
 * Redis each) on the same ZooKeeper, measured the same way; the marginal cost of one node is
 * (its figures − a one-node process's) / (K − 1), the one-node process being a fourth dictator
 * managing one service of one node.
 *
 * Prints a table and writes bench/results/<date>-footprint.json.
 */
process.env.HARNESS_DETACH = "1"

import { spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Duration, Effect, Exit, Option, type Scope } from "effect"
import {
  type DictatorProcess,
  type RedisServer,
  dictator,
  dictatorNodeArgs,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeper
} from "../test/support/servers.js"
import { sentinelProcess } from "./sentinel.js"

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

export interface FootprintOptions {
  readonly minutes: number
  readonly nodes: number
  /** Config keys given to every dictator (--config JSON), e.g. {"check_interval_ms": 1000}. */
  readonly config: Record<string, unknown>
}

export const FOOTPRINT_USAGE = `usage: npm run bench -- --cases footprint [--minutes M] [--nodes K]
  --minutes M   measured idle time (default 10; decimals allowed)
  --nodes K     also measure one process managing K nodes (K ≥ 2; default: not measured)
  --config JSON config keys for every dictator, e.g. '{"check_interval_ms": 1000}' (default: none)`

// ---------------------------------------------------------------------------------------------
// /proc and ZooKeeper four-letter words
// ---------------------------------------------------------------------------------------------

const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" })
  const n = Number(r.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

export const rssKb = (pid: number | undefined): number | undefined => {
  if (pid === undefined || !existsSync(`/proc/${pid}/status`)) return undefined
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m === null ? undefined : Number(m[1])
}

/** CPU seconds (user + system) the process used so far. */
export const cpuSeconds = (pid: number | undefined): number | undefined => {
  if (pid === undefined || !existsSync(`/proc/${pid}/stat`)) return undefined
  const text = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name (which may hold spaces) in parentheses: state is field 3.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  const utime = Number(rest[11])
  const stime = Number(rest[12])
  return (utime + stime) / CLK_TCK
}

export const fourLetters = (port: number, word: string, host = "127.0.0.1"): Promise<string> =>
  new Promise((resolve) => {
    let data = ""
    const s = net.createConnection({ host, port }, () => s.write(word))
    s.setTimeout(3000, () => s.destroy())
    s.setEncoding("utf8")
    s.on("data", (d: string) => (data += d))
    s.on("close", () => resolve(data))
    s.on("error", () => resolve(data))
  })

/** Requests received per session id (hex, no 0x, no leading zeros), from `cons`. */
export const receivedBySession = async (ports: ReadonlyArray<number>): Promise<Map<string, number>> => {
  const out = new Map<string, number>()
  for (const port of ports) {
    const text = await fourLetters(port, "cons")
    for (const m of text.matchAll(/recved=(\d+),[^)]*?sid=0x([0-9a-f]+)/gi)) {
      const sid = m[2]!.toLowerCase().replace(/^0+(?=.)/, "")
      out.set(sid, (out.get(sid) ?? 0) + Number(m[1]))
    }
  }
  return out
}

export const mntr = async (port: number): Promise<Record<string, string>> => {
  const text = await fourLetters(port, "mntr")
  const out: Record<string, string> = {}
  for (const line of text.split("\n")) {
    const [k, v] = line.split("\t")
    if (k !== undefined && v !== undefined) out[k.trim()] = v.trim()
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

export interface Watched {
  readonly what: string
  readonly pid: () => number | undefined
  /** The ZooKeeper session whose requests are counted (dictators only). */
  readonly session?: () => string | undefined
}

export interface Figures {
  readonly what: string
  readonly pid?: number
  readonly rssStartMb?: number
  readonly rssEndMb?: number
  readonly rssMaxMb?: number
  /** Least-squares slope of RSS over the run, MB per hour. */
  readonly rssSlopeMbPerHour?: number
  /** CPU time over the run / wall time, in % of one core. */
  readonly cpuPercent?: number
  readonly zkRequestsPerS?: number
  readonly note?: string
}

const slope = (points: ReadonlyArray<readonly [number, number]>): number | undefined => {
  if (points.length < 2) return undefined
  const n = points.length
  const mx = points.reduce((s, p) => s + p[0], 0) / n
  const my = points.reduce((s, p) => s + p[1], 0) / n
  const sxx = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0)
  const sxy = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
  return sxx === 0 ? undefined : sxy / sxx
}

export const round = (x: number | undefined, digits: number) => (x === undefined ? undefined : Number(x.toFixed(digits)))

/** Samples `watched` for `minutes`: RSS every 5 s, CPU and ZooKeeper requests at both ends. */
export const measure = (
  watched: ReadonlyArray<Watched>,
  minutes: number,
  zkPorts: ReadonlyArray<number>
): Effect.Effect<ReadonlyArray<Figures>> =>
  Effect.gen(function* () {
    const t0 = Date.now()
    const cpu0 = watched.map((w) => cpuSeconds(w.pid()))
    const zk0 = yield* Effect.promise(() => receivedBySession(zkPorts))
    const samples: Array<Array<readonly [number, number]>> = watched.map(() => [])
    const sample = () =>
      watched.forEach((w, i) => {
        const kb = rssKb(w.pid())
        if (kb !== undefined) samples[i]!.push([(Date.now() - t0) / 3600_000, kb / 1024])
      })
    sample()
    const endAt = t0 + minutes * 60_000
    while (Date.now() < endAt) {
      yield* Effect.sleep(Duration.millis(Math.min(5000, Math.max(0, endAt - Date.now()))))
      sample()
    }
    const elapsedS = (Date.now() - t0) / 1000
    const zk1 = yield* Effect.promise(() => receivedBySession(zkPorts))
    return watched.map((w, i): Figures => {
      const s = samples[i]!
      const c0 = cpu0[i]
      const c1 = cpuSeconds(w.pid())
      const sid = w.session?.()
      const r0 = sid === undefined ? undefined : zk0.get(sid)
      const r1 = sid === undefined ? undefined : zk1.get(sid)
      const pid = w.pid()
      return {
        what: w.what,
        ...(pid === undefined ? {} : { pid }),
        ...(s.length === 0
          ? {}
          : {
              rssStartMb: round(s[0]![1], 1)!,
              rssEndMb: round(s[s.length - 1]![1], 1)!,
              rssMaxMb: round(Math.max(...s.map((p) => p[1])), 1)!
            }),
        ...(slope(s) === undefined ? {} : { rssSlopeMbPerHour: round(slope(s), 2)! }),
        ...(c0 === undefined || c1 === undefined ? {} : { cpuPercent: round(((c1 - c0) / elapsedS) * 100, 3)! }),
        // `cons` counts per connection: a session that moved to another server starts again from 0.
        ...(r0 === undefined || r1 === undefined || r1 < r0 ? {} : { zkRequestsPerS: round((r1 - r0) / elapsedS, 3)! }),
        ...(r0 !== undefined && r1 !== undefined && r1 < r0 ? { note: "ZooKeeper session reconnected during the run: req/s unknown" } : {})
      }
    })
  })

export const figuresTable = (rows: ReadonlyArray<Figures>): string => {
  const pad = (s: string, n: number) => s.padEnd(n)
  const lpad = (s: string, n: number) => s.padStart(n)
  const f = (x: number | undefined, d: number) => (x === undefined ? "-" : x.toFixed(d))
  const lines = [
    `  ${pad("process", 34)}${lpad("RSS start", 11)}${lpad("RSS end", 10)}${lpad("max", 8)}${lpad("MB/h", 8)}${lpad("CPU %", 8)}${lpad("ZK req/s", 10)}`
  ]
  for (const r of rows) {
    lines.push(
      `  ${pad(r.what, 34)}${lpad(f(r.rssStartMb, 1), 11)}${lpad(f(r.rssEndMb, 1), 10)}${lpad(f(r.rssMaxMb, 1), 8)}${lpad(
        f(r.rssSlopeMbPerHour, 1),
        8
      )}${lpad(f(r.cpuPercent, 2), 8)}${lpad(f(r.zkRequestsPerS, 2), 10)}${r.note === undefined ? "" : `  ${r.note}`}`
    )
  }
  return lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// The systems
// ---------------------------------------------------------------------------------------------

export const log = (msg: string) => console.log(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}`)

export const REDIS_ARGS = ["--repl-ping-replica-period", "1"] as const

export const field = (v: unknown, k: string): unknown => (typeof v === "object" && v !== null ? (v as Record<string, unknown>)[k] : undefined)

/** The session id (hex, no 0x) a dictator's /status names. */
export const sessionOf = (st: unknown): string | undefined => {
  const id = field(field(st, "session"), "id")
  return typeof id === "string" ? id.replace(/^0x/, "").toLowerCase().replace(/^0+(?=.)/, "") : undefined
}

/** 3 dictators on 3 Redis servers: resolves once one is master and the two others replicas. */
const dictatorService = (zkHosts: ReadonlyArray<string>, svc: string, extra: Record<string, unknown>) =>
  Effect.gen(function* () {
    const names = ["a", "b", "c"]
    const redis = yield* Effect.forEach(names, () => redisServer({ args: REDIS_ARGS }))
    const dictators = yield* Effect.forEach(
      names,
      (name, i) => dictator({ name, svc, zkHosts, redisPort: redis[i]!.port, extra }),
      { concurrency: "unbounded" }
    )
    const statuses = yield* waitUntil(
      `service ${svc}: one master and two replicas`,
      Effect.map(Effect.forEach(dictators, (d) => d.status), (sts) => {
        const roles = sts.map((s) => field(s, "role"))
        const linked = sts.every((s) => field(field(s, "redis"), "state") === "healthy")
        return roles.filter((r) => r === "master").length === 1 && roles.filter((r) => r === "replica").length === 2 && linked
          ? Option.some(sts)
          : Option.none()
      }),
      { timeout: "90 seconds", interval: "500 millis" }
    )
    const masterIndex = statuses.findIndex((s) => field(s, "role") === "master")
    return { redis, dictators, statuses, masterIndex }
  })

/** A dictator process managing `k` one-node services (a Redis each), through `nodes: [...]`. */
const multiNodeProcess = (zkHosts: ReadonlyArray<string>, k: number, prefix: string, extra: Record<string, unknown>) =>
  Effect.gen(function* () {
    const redis: Array<RedisServer> = yield* Effect.forEach(Array.from({ length: k }), () => redisServer({ args: REDIS_ARGS }))
    const nodes = redis.map((r, i) => ({ service: `${prefix}${i + 1}`, name: "a", host: "127.0.0.1", port: r.port }))
    const d: DictatorProcess = yield* dictator({
      name: `${prefix}-process`,
      svc: `${prefix}1`,
      zkHosts,
      redisPort: redis[0]!.port,
      nodesList: nodes,
      extra
    })
    yield* Effect.addFinalizer(() => d.kill9)
    const list = yield* waitUntil(
      `${k} nodes in one process, each master of its service`,
      Effect.map(d.http(`/nodes?format=json`), (r) => {
        if (r.status !== 200) return Option.none()
        const list = JSON.parse(r.body) as ReadonlyArray<unknown>
        return list.length === k && list.every((s) => field(s, "role") === "master") ? Option.some(list) : Option.none()
      }),
      { timeout: "90 seconds", interval: "500 millis" }
    )
    // One session for all of them: the first node's names it.
    return { redis, dictator: d, session: sessionOf(list[0]) }
  })

export const runFootprint = (opts: FootprintOptions): Effect.Effect<{ rows: ReadonlyArray<Figures>; settings: unknown }, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    log("footprint: a standalone ZooKeeper (tickTime 2000), 3 redis-servers + 3 dictators; 3 redis-servers + 3 redis-sentinels")
    const zk = yield* zooKeeper({ tickTime: 2000 })
    const svc = yield* dictatorService([zk.connectString], "footprint", opts.config)
    // Sentinel: a master and two replicas, three sentinels.
    const sRedis = yield* Effect.forEach([0, 1, 2], () => redisServer({ args: REDIS_ARGS }))
    for (const r of sRedis.slice(1)) yield* r.cli("REPLICAOF", "127.0.0.1", String(sRedis[0]!.port))
    const sentinels = yield* Effect.forEach([0, 1, 2], () =>
      sentinelProcess({
        masterName: "footprint",
        masterPort: sRedis[0]!.port,
        quorum: 2,
        downAfterMs: 1000,
        failoverTimeoutMs: 10000,
        parallelSyncs: 1
      })
    )
    const watched: Array<Watched> = svc.dictators.map((d, i) => ({
      what: `dictator ${d.name} (${i === svc.masterIndex ? "master" : "replica"})`,
      pid: d.pid,
      session: () => sessionOf(svc.statuses[i])
    }))
    sentinels.forEach((s, i) => watched.push({ what: `redis-sentinel ${i + 1}`, pid: s.pid }))
    let multi: { readonly k: number } | undefined
    if (opts.nodes >= 2) {
      log(`footprint: one dictator process managing ${opts.nodes} nodes, one managing 1 node`)
      const one = yield* multiNodeProcess([zk.connectString], 1, "one", opts.config)
      const many = yield* multiNodeProcess([zk.connectString], opts.nodes, "many", opts.config)
      watched.push({ what: "dictator, 1 node (nodes: [1])", pid: one.dictator.pid, session: () => one.session })
      watched.push({ what: `dictator, ${opts.nodes} nodes (nodes: [${opts.nodes}])`, pid: many.dictator.pid, session: () => many.session })
      multi = { k: opts.nodes }
    }
    const warmupS = Math.min(30, Math.max(5, opts.minutes * 6))
    log(`footprint: converged; warming up ${warmupS} s, then measuring ${opts.minutes} min`)
    yield* Effect.sleep(Duration.seconds(warmupS))
    const rows = [...(yield* measure(watched, opts.minutes, [zk.clientPort]))]
    if (multi !== undefined) {
      const one = rows[rows.length - 2]!
      const many = rows[rows.length - 1]!
      const per = (a: number | undefined, b: number | undefined, d: number) =>
        a === undefined || b === undefined ? undefined : round((b - a) / (multi!.k - 1), d)
      const mRss = per(one.rssEndMb, many.rssEndMb, 2)
      const mCpu = per(one.cpuPercent, many.cpuPercent, 3)
      const mZk = per(one.zkRequestsPerS, many.zkRequestsPerS, 3)
      rows.push({
        what: "marginal cost of one more node",
        ...(mRss === undefined ? {} : { rssEndMb: mRss }),
        ...(mCpu === undefined ? {} : { cpuPercent: mCpu }),
        ...(mZk === undefined ? {} : { zkRequestsPerS: mZk }),
        note: `(${multi.k}-node process − 1-node process) / ${multi.k - 1}`
      })
    }
    const m = yield* Effect.promise(() => mntr(zk.clientPort))
    return {
      rows,
      settings: {
        zookeeper: { servers: 1, tickTime: 2000, znodes: Number(m.zk_znode_count), watches: Number(m.zk_watch_count) },
        dictator: { settings: opts.config, logLevel: "INFO", nodeArgs: dictatorNodeArgs().join(" ") },
        sentinel: { quorum: 2, downAfterMs: 1000 },
        warmupS,
        minutes: opts.minutes,
        dictatorMain: process.env.DICTATOR_MAIN ?? "dist/dictator.js"
      }
    }
  })

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const run = (cmd: string, args: ReadonlyArray<string>): string => {
  const r = spawnSync(cmd, [...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10000 })
  return r.error !== undefined ? "unavailable" : (r.stdout.trim() || r.stderr.trim()).trim()
}

/** Validators of footprint's flags, shared with bench/scale.ts (`--cases footprint,scale`). Throw a message. */
export const footprintFlags = {
  minutes: (v: string): number => {
    const minutes = Number(v)
    if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 1440) throw new Error(`--minutes ${v}: must be a number of minutes above 0, at most 1440`)
    return minutes
  },
  nodes: (v: string): number => {
    const nodes = Number(v)
    if (!Number.isInteger(nodes) || nodes < 2 || nodes > 500) throw new Error(`--nodes ${v}: must be an integer from 2 to 500`)
    return nodes
  },
  config: (v: string): Record<string, unknown> => {
    try {
      const parsed = JSON.parse(v) as unknown
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object")
      return parsed as Record<string, unknown>
    } catch (e) {
      throw new Error(`--config ${v}: must be a JSON object of config keys (${(e as Error).message})`)
    }
  }
}

const parseArgs = (argv: ReadonlyArray<string>): FootprintOptions & { readonly cases: ReadonlyArray<string> } => {
  let minutes = 10
  let nodes = 0
  let cases: Array<string> = ["footprint"]
  let config: Record<string, unknown> = {}
  const fail = (msg: string): never => {
    console.error(`bench: ${msg}\n${FOOTPRINT_USAGE}`)
    process.exit(2)
  }
  const check = <A>(f: () => A): A => {
    try {
      return f()
    } catch (e) {
      return fail((e as Error).message)
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`)
    switch (flag) {
      case "--minutes": {
        const v = value()
        minutes = check(() => footprintFlags.minutes(v))
        break
      }
      case "--nodes": {
        const v = value()
        nodes = check(() => footprintFlags.nodes(v))
        break
      }
      case "--config": {
        const v = value()
        config = check(() => footprintFlags.config(v))
        break
      }
      case "--cases":
        cases = value().split(",").map((s) => s.trim()).filter((s) => s.length > 0)
        for (const c of cases) if (c !== "footprint") fail(`unknown case "${c}" here (this runner takes: footprint; scale runs through bench/scale.ts)`)
        break
      case "--help":
      case "-h":
        console.log(FOOTPRINT_USAGE)
        process.exit(0)
        break
      default:
        fail(`unknown argument ${arg}`)
    }
  }
  return { minutes, nodes, cases, config }
}

/** Machine facts every results JSON carries. */
export const machineFacts = () => ({
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model ?? "unknown",
  totalMemMb: Math.round(os.totalmem() / 1024 / 1024),
  loadavgAtEnd: os.loadavg(),
  node: process.version,
  redisServer: run(process.env.REDIS_SERVER ?? "redis-server", ["--version"]),
  gitCommit: run("git", ["-C", repoRoot(), "rev-parse", "HEAD"])
})

/** Runs the footprint case, prints its table, writes its JSON; 0 when it ran, 1 when it failed. */
export const footprintCase = (opts: FootprintOptions, command: string): Effect.Effect<number> =>
  Effect.gen(function* () {
    const started = new Date()
    const result = yield* Effect.scoped(runFootprint(opts)).pipe(Effect.exit)
    const finished = new Date()
    if (Exit.isFailure(result)) {
      if (Cause.isInterruptedOnly(result.cause)) return yield* Effect.interrupt
      console.log(`footprint run failed: ${Cause.pretty(result.cause)}`)
      return 1
    }
    const { rows, settings } = result.value
    console.log("")
    console.log(`Footprint benchmark — ${started.toISOString()} — ${os.cpus().length} CPUs, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)
    console.log(`Idle for ${opts.minutes} min; targets (issue 12): dictator RSS ≤ 60 MB, CPU ≤ 0.5 %, ZK req/s ≈ session pings; one more node ≤ 3 MB, ≤ 0.1 %`)
    console.log(figuresTable(rows))
    const dir = path.join(repoRoot(), "bench", "results")
    yield* Effect.promise(() => fs.mkdir(dir, { recursive: true }))
    const file = path.join(dir, `${started.toISOString().replace(/:/g, "-")}-footprint.json`)
    const json = {
      benchmark: "footprint",
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      command,
      options: opts,
      machine: machineFacts(),
      settings,
      rows
    }
    yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(json, null, 2) + "\n"))
    console.log(`\nResults: ${path.relative(process.cwd(), file)}`)
    return 0
  })

const main = Effect.suspend(() => {
  const { cases: _cases, ...opts } = parseArgs(process.argv.slice(2))
  return footprintCase(opts, `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim())
})

// Run only as the entry point: bench/scale.ts imports this module.
const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href
if (isMain) {
  NodeRuntime.runMain(main, {
    disablePrettyLogger: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? (exit.value === 0 ? 0 : 1) : Cause.isInterruptedOnly(exit.cause) ? 130 : 1)
  })
}
