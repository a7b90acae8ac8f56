/**
 * Role changes on the built dictator with real ZooKeeper and Redis servers (issues 10 and 11):
 * - a planned failover (/disable on the master): the applications' connections to the old master
 *   and to the promoted replica are closed by their dictators (kill_clients_on_role_change), the
 *   on_role_change hook of each node gets its new role as argv and DICTATOR_* variables, /metrics
 *   (parsed by an independent Prometheus text parser) shows the new role, epoch and failover, and
 *   every metric the example Grafana dashboard uses exists; /replica?lag= in seconds answers;
 * - with the setting off and a hook that sleeps 30 s: the Redis killed, the new master appears
 *   while the hook still runs, and the application's connection stays open;
 * - announce_port: each Redis behind a TCP forwarder, the master record and the replica's
 *   REPLICAOF name the forwarder while the dictators check their Redis directly.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import {
  type DictatorProcess,
  dictator,
  freePort,
  httpRequest,
  oneShotRedis,
  readMaster,
  redisServer,
  repoRoot,
  tempDir,
  waitUntil,
  writeFile,
  zooKeeper
} from "../support/servers.js"
import { tcpForwarder } from "../support/tcpForwarder.js"
import { scrape } from "../support/prometheus.js"

const metricsOf = (d: DictatorProcess) =>
  Effect.flatMap(d.http("/metrics"), (r) => (r.status === 200 ? Effect.succeed(scrape(r.body)) : Effect.dieMessage(`/metrics answered ${r.status}: ${r.body}`)))

const masterIs = (zk: string, svc: string, name: string) =>
  Effect.map(readMaster([zk], svc), Option.filter((m) => m.name === name))

/** An application's connection (no reconnect): `closed()` tells whether the server closed it. */
const appClient = (port: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = oneShotRedis({ host: "127.0.0.1", port }, { connectTimeoutMs: 2000, name: "app" })
      let closed = false
      client.on("error", () => {})
      client.on("close", () => {
        closed = true
      })
      await client.connect()
      await client.ping()
      return { client, closed: () => closed }
    }),
    (c) => Effect.sync(() => c.client.disconnect())
  )

/** A hook that appends its argv and DICTATOR_* variables as one JSON line to the file in its first argument. */
const RECORDING_HOOK = `
const fs = require("fs")
const [out, ...args] = process.argv.slice(2)
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("DICTATOR_")))
fs.appendFileSync(out, JSON.stringify({ args, env }) + "\\n")
console.log("recorded " + args[0])
`

/** A hook that records its pid, sleeps 30 s, then writes "<pid>.done". */
const SLOW_HOOK = `
const fs = require("fs")
const dir = process.argv[2]
fs.writeFileSync(dir + "/" + process.pid + ".started", process.argv.slice(3).join(" "))
setTimeout(() => fs.writeFileSync(dir + "/" + process.pid + ".done", ""), 30000)
`

interface HookLine {
  readonly args: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
}
const hookLines = (file: string): ReadonlyArray<HookLine> =>
  existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as HookLine) : []

/** Metric names a dashboard's expressions use (histogram series by their family name). */
const dashboardMetrics = (): ReadonlySet<string> => {
  const text = readFileSync(path.join(repoRoot(), "examples", "grafana-dashboard.json"), "utf8")
  const exprs = [...text.matchAll(/"expr":\s*"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!)
  return new Set(exprs.flatMap((e) => [...e.matchAll(/\bdictator_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ""))))
}

describe("role changes on real servers", () => {
  it.scopedLive("a planned failover: clients closed, hooks run with the new roles, /metrics shows it, lag in seconds", () =>
    Effect.gen(function* () {
      const SVC = "it-role"
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const dir = yield* tempDir("hooks")
      const hook = path.join(dir, "hook.cjs")
      yield* writeFile(hook, RECORDING_HOOK)
      const redis = { a: yield* redisServer(), b: yield* redisServer(), c: yield* redisServer() }
      // Distinct from the HTTP ports the harness picks (freePort only asks the OS for a free one).
      const httpB = yield* freePort
      let sentinelPort = yield* freePort
      for (let i = 0; i < 10 && sentinelPort === httpB; i++) sentinelPort = yield* freePort
      const start = (name: "a" | "b" | "c", priority: number, extra: Record<string, unknown> = {}, httpPort?: number) =>
        dictator({
          name,
          ...(httpPort === undefined ? {} : { httpPort }),
          svc: SVC,
          zkHosts: [zk.connectString],
          redisPort: redis[name].port,
          node: { priority },
          readyTimeout: "120 seconds",
          extra: { on_role_change: [process.execPath, hook, path.join(dir, `${name}.jsonl`)], handover_timeout_ms: 10000, ...extra }
        })
      const a = yield* start("a", 1)
      yield* waitUntil("a master", masterIs(zk.connectString, SVC, "a"), { timeout: "60 seconds" })
      const b = yield* start("b", 2, { sentinel_port: sentinelPort, sentinel_host: "127.0.0.1" }, httpB)
      const c = yield* start("c", 3)
      for (const d of [b, c]) {
        yield* waitUntil(`${d.name} a replica`, Effect.map(d.http("/replica"), (r) => (r.status === 200 ? Option.some(r) : Option.none())), {
          timeout: "60 seconds",
          interval: "200 millis"
        })
      }
      // Lag in seconds, measured: a linked replica of an idle master is within a few check intervals.
      const lagged = yield* waitUntil("c: /replica?lag=5s 200", Effect.map(c.http("/replica?lag=5s"), (r) => (r.status === 200 ? Option.some(r) : Option.none())), {
        timeout: "30 seconds",
        interval: "200 millis"
      })
      const lagSeconds = (JSON.parse(lagged.body) as { lag_seconds?: unknown }).lag_seconds
      expect(typeof lagSeconds).toBe("number")
      expect(lagSeconds as number).toBeLessThanOrEqual(5)
      expect((yield* c.http("/replica?lag=0ms")).status).toBe(503)

      const before = yield* metricsOf(c)
      expect(before.value("dictator_role", { role: "replica" })).toBe(1)
      // The applications' connections to the master and to the replica that will take over.
      const onA = yield* appClient(redis.a.port)
      const onB = yield* appClient(redis.b.port)
      const onC = yield* appClient(redis.c.port)

      // A handover refused (no replica caught up in time on a loaded machine) leaves a master: asked again.
      // A long HTTP timeout: a client hanging up on /disable would interrupt the handover.
      yield* waitUntil("a to hand over (/disable 200)", Effect.map(httpRequest(a.httpPort, "/disable", "POST", 60_000), (r) => (r.status === 200 ? Option.some(r) : Option.none())), {
        timeout: "120 seconds",
        interval: "1 second"
      })
      yield* waitUntil("b master", masterIs(zk.connectString, SVC, "b"), { timeout: "30 seconds" })
      // Their dictators close them once the discovery paths name b: the old master's, the promoted one's, and c's (re-pointed).
      yield* waitUntil(
        "the applications' connections to a, b and c closed",
        Effect.sync(() => (onA.closed() && onB.closed() && onC.closed() ? Option.some(true) : Option.none())),
        { timeout: "30 seconds", interval: "100 millis" }
      ).pipe(
        Effect.tapError(() =>
          Effect.logError(
            `closed: a ${onA.closed()}, b ${onB.closed()}, c ${onC.closed()}\n` +
              [a, b, c].map((d) => `${d.name}:\n${d.output().split("\n").filter((l) => /role change|client|handover|promot|following/.test(l)).join("\n")}`).join("\n")
          )
        )
      )
      // The dictators' own connections and the replication links survived: b's replicas are linked.
      yield* waitUntil(
        "a and c replicate from b",
        Effect.map(redis.b.cli("INFO", "replication"), (info) => (/connected_slaves:2/.test(info) ? Option.some(info) : Option.none())),
        { timeout: "20 seconds", interval: "200 millis" }
      )

      // Hooks: each node's last line is its new role, as arguments and variables.
      const last = (n: string) =>
        waitUntil(`${n}'s hook to record the change`, Effect.sync(() => Option.fromNullable([...hookLines(path.join(dir, `${n}.jsonl`))].reverse().find((l) => l.env["DICTATOR_MASTER_NAME"] === "b"))), {
          timeout: "20 seconds",
          interval: "100 millis"
        })
      const hb = yield* last("b")
      expect(hb.args.slice(0, 5)).toEqual(["master", SVC, "b", "127.0.0.1", String(redis.b.port)])
      expect(hb.env).toMatchObject({ DICTATOR_ROLE: "master", DICTATOR_SERVICE: SVC, DICTATOR_NODE: "b", DICTATOR_MASTER_HOST: "127.0.0.1", DICTATOR_MASTER_PORT: String(redis.b.port) })
      expect(hb.env["DICTATOR_EPOCH"]).toMatch(/^\d+$/)
      const ha = yield* last("a")
      expect(ha.env).toMatchObject({ DICTATOR_ROLE: "replica", DICTATOR_NODE: "a", DICTATOR_MASTER_PORT: String(redis.b.port) })
      expect((yield* last("c")).env).toMatchObject({ DICTATOR_ROLE: "replica", DICTATOR_NODE: "c", DICTATOR_MASTER_PORT: String(redis.b.port) })
      // Logged once the hook has exited, which may be after its line is in the file.
      yield* waitUntil(
        "a's log line of the hook's run",
        Effect.sync(() => Option.fromNullable(/on_role_change hook .* for replica \(\d+ ms\): exit 0; output: .*recorded replica/.exec(a.output()))),
        { timeout: "10 seconds", interval: "100 millis" }
      )

      // Sentinel endpoint requests are counted by command.
      const sentinel = oneShotRedis({ host: "127.0.0.1", port: sentinelPort }, { connectTimeoutMs: 2000 })
      sentinel.on("error", () => {})
      const addr = yield* Effect.promise(async () => {
        await sentinel.connect()
        const r = await sentinel.call("SENTINEL", "get-master-addr-by-name", SVC)
        sentinel.disconnect()
        return r
      })
      expect(addr).toEqual(["127.0.0.1", String(redis.b.port)])

      // Metrics, parsed from the text: the failover as each node saw it.
      const mc = yield* waitUntil(
        "c's metrics to count the failover",
        Effect.map(metricsOf(c), (m) => (m.value("dictator_failovers_total") === (before.value("dictator_failovers_total") ?? 0) + 1 ? Option.some(m) : Option.none())),
        { timeout: "10 seconds", interval: "200 millis" }
      )
      expect(mc.value("dictator_role", { role: "replica" })).toBe(1)
      expect(mc.value("dictator_master_epoch")).toBeGreaterThan(before.value("dictator_master_epoch") ?? Number.POSITIVE_INFINITY)
      expect(mc.count("dictator_failover_duration_seconds")).toBe(1)
      // Counted once CLIENT KILL has answered the dictator, which may come after the client saw its socket closed.
      yield* waitUntil(
        "c's metrics to count the closed client",
        Effect.map(metricsOf(c), (m) => ((m.value("dictator_clients_closed_total") ?? 0) >= 1 ? Option.some(m) : Option.none())),
        { timeout: "10 seconds", interval: "200 millis" }
      ).pipe(Effect.tapError(() => Effect.logError(c.output().split("\n").filter((l) => /client connection|role change/.test(l)).join("\n"))))
      expect(mc.value("dictator_zookeeper_session_state", { state: "connected" })).toBe(1)
      expect(mc.value("dictator_zookeeper_last_contact_seconds")).toBe(0)
      expect(mc.value("dictator_redis_healthy")).toBe(1)
      expect(mc.value("dictator_http_requests_total", { path: "/metrics", code: "200" })).toBeGreaterThanOrEqual(1)
      expect(mc.value("dictator_role_hook_runs_total", { outcome: "ok" })).toBeGreaterThanOrEqual(2)
      const mb = yield* metricsOf(b)
      expect(mb.value("dictator_role", { role: "master" })).toBe(1)
      expect(mb.value("dictator_role", { role: "replica" })).toBe(0)
      expect(mb.value("dictator_elections_won_total")).toBe(1)
      expect(mb.value("dictator_master_epoch")).toBe(mc.value("dictator_master_epoch"))
      expect(mb.value("dictator_sentinel_requests_total", { command: "sentinel" })).toBeGreaterThanOrEqual(1)
      const ma = yield* metricsOf(a)
      expect(ma.value("dictator_role", { role: "disabled" })).toBe(1)
      expect(ma.value("dictator_handovers_total", { outcome: "handed-over" })).toBe(1)
      expect(ma.count("dictator_handover_duration_seconds")).toBe(1)

      // The example dashboard uses only metrics that exist.
      const used = dashboardMetrics()
      expect(used.size).toBeGreaterThan(10)
      expect([...used].filter((n) => !mc.names.has(n))).toEqual([])
    }),
    300_000
  )

  it.scopedLive("kill_clients_on_role_change off, a hook sleeping 30 s: the failover does not wait for it; the client stays connected", () =>
    Effect.gen(function* () {
      const SVC = "it-role-slow"
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const dir = yield* tempDir("slowhook")
      const hook = path.join(dir, "slow.cjs")
      yield* writeFile(hook, SLOW_HOOK)
      // Whatever happens, no hook outlives the test.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const f of existsSync(dir) ? readdirSync(dir) : []) {
            const pid = Number(f.replace(/\.started$/, ""))
            if (f.endsWith(".started") && pid > 0) {
              try {
                process.kill(-pid, "SIGKILL")
              } catch {
                // gone
              }
            }
          }
        })
      )
      const redisA = yield* redisServer()
      const redisB = yield* redisServer()
      const extra = { kill_clients_on_role_change: false, on_role_change: [process.execPath, hook, dir], on_role_change_timeout_ms: 120000 }
      const a = yield* dictator({ name: "a", svc: SVC, zkHosts: [zk.connectString], redisPort: redisA.port, node: { priority: 1 }, extra, readyTimeout: "120 seconds" })
      yield* waitUntil("a master", masterIs(zk.connectString, SVC, "a"), { timeout: "60 seconds" })
      const b = yield* dictator({ name: "b", svc: SVC, zkHosts: [zk.connectString], redisPort: redisB.port, node: { priority: 2 }, extra, readyTimeout: "120 seconds" })
      yield* waitUntil("b a replica", Effect.map(b.http("/replica"), (r) => (r.status === 200 ? Option.some(r) : Option.none())), {
        timeout: "60 seconds",
        interval: "200 millis"
      })
      const started = () => readdirSync(dir).filter((f) => f.endsWith(".started"))
      // b's hook for its first change (following a) is running, and sleeps 30 s.
      const bHook = yield* waitUntil(
        "b's hook to start",
        Effect.sync(() => Option.fromNullable(started().find((f) => readFileSync(path.join(dir, f), "utf8").startsWith("replica ")))),
        { timeout: "20 seconds", interval: "100 millis" }
      )
      const bHookPid = Number(bHook.replace(/\.started$/, ""))
      const onB = yield* appClient(redisB.port)

      yield* redisA.kill9
      yield* waitUntil("b master", masterIs(zk.connectString, SVC, "b"), { timeout: "30 seconds" })
      yield* waitUntil("b's /master 200", Effect.map(b.http("/master"), (r) => (r.status === 200 ? Option.some(r) : Option.none())), {
        timeout: "30 seconds",
        interval: "100 millis"
      })
      // The hook of the previous change still runs: the failover did not wait for it.
      expect(existsSync(path.join(dir, `${bHookPid}.done`))).toBe(false)
      expect(() => process.kill(bHookPid, 0)).not.toThrow()
      // With the setting off, the application's connection to b is left open.
      yield* Effect.sleep("1 second")
      expect(onB.closed()).toBe(false)
      expect(yield* Effect.promise(() => onB.client.ping())).toBe("PONG")
      void a
    }),
    300_000
  )

  it.scopedLive("announce_port: each Redis behind a forwarder; the master record and REPLICAOF name the forwarder", () =>
    Effect.gen(function* () {
      const SVC = "it-announce"
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const redisA = yield* redisServer()
      const redisB = yield* redisServer()
      const fwdA = yield* tcpForwarder(redisA.port)
      const fwdB = yield* tcpForwarder(redisB.port)
      yield* dictator({ name: "a", svc: SVC, zkHosts: [zk.connectString], redisPort: redisA.port, node: { priority: 1 }, extra: { announce_host: "127.0.0.1", announce_port: fwdA.port }, readyTimeout: "120 seconds" })
      const m = yield* waitUntil("a master", masterIs(zk.connectString, SVC, "a"), { timeout: "60 seconds" })
      expect({ host: m.host, port: m.port }).toEqual({ host: "127.0.0.1", port: fwdA.port })
      const b = yield* dictator({ name: "b", svc: SVC, zkHosts: [zk.connectString], redisPort: redisB.port, node: { priority: 2 }, extra: { announce_host: "127.0.0.1", announce_port: fwdB.port }, readyTimeout: "120 seconds" })
      const info = yield* waitUntil(
        "b's Redis linked to a through the forwarder",
        Effect.map(redisB.cli("INFO", "replication"), (i) => (/master_link_status:up/.test(i) ? Option.some(i) : Option.none())),
        { timeout: "30 seconds", interval: "200 millis" }
      )
      expect(info).toContain(`master_port:${fwdA.port}`)
      yield* redisA.cli("SET", "announced", "yes")
      yield* waitUntil("the write replicated", Effect.map(redisB.cli("GET", "announced"), (v) => (v === "yes" ? Option.some(v) : Option.none())), {
        timeout: "10 seconds",
        interval: "100 millis"
      })
      // Its dictator's own view catches up within a check or two of the link coming up.
      yield* waitUntil(
        "b's /replica check passing",
        Effect.map(b.http("/replica"), (r) => (r.status === 200 ? Option.some(r) : Option.none())),
        { timeout: "10 seconds", interval: "100 millis" }
      )
      const status = JSON.parse((yield* httpRequest(b.httpPort, "/status?format=json")).body) as { members: ReadonlyArray<{ name: string }> }
      expect(status.members.map((x) => x.name).sort()).toEqual(["a", "b"])
    }),
    300_000
  )
})
