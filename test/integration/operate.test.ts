/**
 * Issue 11, the operator's CLI against real servers (build first: `npm run build`): one ZooKeeper,
 * 3 redis-servers and 3 dictators; the `dictator` bin run as a child process, as an operator would.
 *
 * - `list`: the table and the --json schema; unknown service / unreachable ZooKeeper: one line, exit ≠ 0;
 * - `switchover` under a writer: no acknowledged write lost, the writes-blocked time printed;
 *   to a named member; refused for a member that is not one, unhealthy or lagging (with the reason);
 * - `pause`, kill -9 the master's Redis: no failover for several seconds; `resume`: failover;
 *   `status` shows maintenance from the daemon's HTTP API.
 *
 * Every test starts from a converged service (restarting whatever a previous test stopped).
 * Nothing asserts speed: the figures are printed (and measured by `npm run bench`).
 */
import { execFile } from "node:child_process"
import * as path from "node:path"
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer, Logger, LogLevel, Option } from "effect"
import { readService } from "../../src/Operator.js"
import { serviceJson } from "../../src/OperatorView.js"
import { servicePaths } from "../../src/Paths.js"
import * as ZooKeeperClient from "../../src/ZooKeeperClient.js"
import {
  dictator,
  readMaster,
  redisCommand,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeper
} from "../support/servers.js"
import { awaitConverged, type Convergence, longestAckGap, lostWrites, type Topology, type TopologyNode, writer } from "../support/workload.js"

const SVC = "ops"
const NAMES = ["redis1", "redis2", "redis3"] as const
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]

class Topo extends Context.Tag("operate/Topology")<Topo, Topology>() {}

const topology = Layer.scoped(
  Topo,
  Effect.gen(function* () {
    const zk = yield* zooKeeper()
    const zkHosts = [zk.connectString]
    const redis = yield* Effect.forEach(NAMES, () => redisServer({ args: REDIS_ARGS }))
    // handover_timeout_ms short enough for a refused (lagging) switchover to answer quickly.
    const extra = { handover_timeout_ms: 3000 }
    const dictators = yield* Effect.forEach(NAMES, (name, i) => dictator({ name, svc: SVC, zkHosts, redisPort: redis[i]!.port, extra, readyTimeout: "120 seconds" }), {
      concurrency: "unbounded"
    })
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    const t: Topology = { svc: SVC, zk: { servers: [zk], hosts: zkHosts }, nodes: NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! })) }
    yield* awaitConverged(t, "90 seconds")
    return t
  })
)

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** `dictator ARGS…` as a child process (bounded: a hung CLI is a failure, not a hung test). */
const cli = (args: ReadonlyArray<string>, timeoutMs = 90_000): Effect.Effect<Run> =>
  Effect.async<Run>((resume) => {
    const env = { ...process.env }
    delete env.NODE_OPTIONS
    const child = execFile(process.execPath, [path.join(repoRoot(), "dist", "src", "main.js"), ...args], { env, timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

const zkArg = (t: Topology) => `--zk=${t.zk.hosts.join(",")}`

/**
 * The service as `list --json` shows it, read in this process (the CLI's own code, without a
 * node start-up per probe: this machine is shared and loaded).
 */
const serviceNow = (t: Topology) =>
  Effect.scoped(
    Effect.gen(function* () {
      const zk = yield* ZooKeeperClient.make({ hosts: t.zk.hosts, sessionTimeout: "10 seconds", connectTimeout: "2 seconds", requestTimeout: "5 seconds" })
      return serviceJson(yield* readService(zk, SVC))
    })
  ).pipe(Effect.provide(Logger.minimumLogLevel(LogLevel.None)))

/** Back to one master and two linked replicas; every Redis running, no maintenance left over. */
const restore = (t: Topology): Effect.Effect<Convergence, unknown> =>
  Effect.gen(function* () {
    for (const n of t.nodes) yield* redisCommand(n.redis.port, ["CLIENT", "UNPAUSE"]).pipe(Effect.ignore)
    yield* Effect.scoped(
      Effect.gen(function* () {
        const zk = yield* ZooKeeperClient.make({ hosts: t.zk.hosts, sessionTimeout: "10 seconds", connectTimeout: "2 seconds", requestTimeout: "5 seconds" })
        yield* zk.remove(servicePaths(SVC).maintenance, -1).pipe(Effect.ignore)
      })
    ).pipe(Effect.provide(Logger.minimumLogLevel(LogLevel.None)))
    for (const n of t.nodes) if (!(yield* n.redis.running)) yield* n.redis.start
    for (const n of t.nodes) if (!(yield* n.dictator.running)) yield* n.dictator.start
    return yield* awaitConverged(t, "90 seconds")
  })

const node = (t: Topology, name: string): TopologyNode => t.nodes.find((n) => n.name === name)!

/** `list --json` for the service, parsed. */
const listJson = (t: Topology) =>
  Effect.gen(function* () {
    const r = yield* cli(["list", SVC, "--json", zkArg(t)])
    expect(r.code, r.stderr).toBe(0)
    const parsed = JSON.parse(r.stdout) as { services: Array<Record<string, unknown> & { members: Array<Record<string, unknown>> }> }
    return parsed.services[0]!
  })

layer(topology, { timeout: "300 seconds", excludeTestServices: true })("operator CLI on a real cluster", (it) => {
  it.scoped("list: a table per service and a JSON schema; bad input is one line and a non-zero exit", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      yield* restore(t)
      // On this loaded machine a failover may happen between two reads: the table and the JSON are
      // each checked against the master znode read right after them (taken again if it moved).
      const checked = <A>(what: string, read: Effect.Effect<readonly [A, string]>) =>
        waitUntil(
          what,
          Effect.gen(function* () {
            const [value, epoch] = yield* read
            const m = yield* readMaster(t.zk.hosts, SVC)
            return Option.isSome(m) && m.value.czxid === epoch ? Option.some({ value, master: m.value }) : Option.none()
          }),
          { timeout: "300 seconds", interval: "1 second" }
        )
      const table = yield* checked(
        "a table naming the current master",
        Effect.map(cli(["list", zkArg(t)]), (r) => [r, /epoch (\d+)\)$/m.exec(r.stdout)?.[1] ?? "none"] as const)
      )
      console.log(`dictator list:\n${table.value.stdout}`)
      expect(table.value.code, table.value.stderr).toBe(0)
      const tm = table.master
      expect(table.value.stdout).toMatch(new RegExp(`^service ${SVC}: master ${tm.name} \\(127\\.0\\.0\\.1:${tm.port}, epoch ${tm.czxid}\\)$`, "m"))
      expect(table.value.stdout).toMatch(/^MEMBER +ADDRESS +ROLE +HEALTH +OFFSET +LAG +PRIORITY +EPOCH +FLAGS$/m)
      for (const n of t.nodes) {
        const role = n.name === tm.name ? "master" : "replica"
        expect(table.value.stdout).toMatch(new RegExp(`^${n.name} +127\\.0\\.0\\.1:${n.redis.port} +${role} +\\w+ +\\d+ `, "m"))
      }

      const json = yield* checked(
        "JSON naming the current master",
        Effect.map(listJson(t), (s) => [s, String((s.master as { epoch?: string } | null)?.epoch)] as const)
      )
      const s = json.value
      const jm = json.master
      expect(s.service).toBe(SVC)
      expect(s.master).toEqual({ name: jm.name, host: "127.0.0.1", port: node(t, jm.name).redis.port, epoch: jm.czxid })
      expect(s.maintenance).toBe(false)
      expect(s.switchover_pending).toBeNull()
      expect(s.members.map((m) => m.name)).toEqual([jm.name, ...NAMES.filter((n) => n !== jm.name)])
      for (const m of s.members) {
        expect(Object.keys(m).sort()).toEqual(
          ["address", "elected", "healthy", "host", "lag_bytes", "lag_seconds", "link_up", "master_down", "name", "offset", "port", "priority", "role", "version"].sort()
        )
        expect(typeof m.healthy).toBe("boolean")
        expect(typeof m.offset).toBe("number")
        expect(m.elected).toBe(m.name === jm.name)
        if (m.elected) expect(m.lag_bytes).toBeNull()
        else expect(m.lag_bytes).toBeGreaterThanOrEqual(0)
      }

      const unknown = yield* cli(["list", "nosuch", zkArg(t)])
      expect(unknown.code).toBe(2)
      expect(unknown.stderr).toBe(`dictator: unknown service "nosuch" under /services/redis (known: ${SVC})\n`)
      const unreachable = yield* cli(["list", "--zk=127.0.0.1:1", "--timeout=2"])
      expect(unreachable.code).toBe(1)
      expect(unreachable.stderr).toBe("dictator: ZooKeeper 127.0.0.1:1 unreachable within 2s; check --zk/zk_hosts and that the ensemble is up\n")
      const goStyle = yield* cli(["list", SVC, `-zk=${t.zk.hosts.join(",")}`, "-json"])
      expect(goStyle.code, goStyle.stderr).toBe(0)
      expect((JSON.parse(goStyle.stdout) as { services: ReadonlyArray<unknown> }).services).toHaveLength(1)
    }), { timeout: 900_000 }
  )

  it.scoped("switchover under write load: no acknowledged write lost; then to a named member", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const w = yield* writer(t, { tag: "switchover" })
      yield* waitUntil("writes acknowledged", Effect.sync(() => (w.acks().length >= 50 ? Option.some(true) : Option.none())), { timeout: "30 seconds" })
      const before = Date.now()
      const r = yield* cli(["switchover", SVC, zkArg(t)])
      const after = Date.now()
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`^switchover of ${SVC} done in \\d+ ms: ${c.master.name} -> redis\\d \\(`))
      const next = yield* awaitConverged(t, "60 seconds")
      expect(next.master.name).not.toBe(c.master.name)
      yield* waitUntil("writes on the new master", Effect.sync(() => (w.acks().some((a) => a.address.endsWith(`:${node(t, next.master.name).redis.port}`)) ? Option.some(true) : Option.none())), { timeout: "30 seconds" })
      // The named target: back to the first master.
      const named = yield* cli(["switchover", SVC, `--to=${c.master.name}`, zkArg(t)])
      expect(named.code, named.stderr).toBe(0)
      expect(named.stdout).toContain(`: ${next.master.name} -> ${c.master.name} (`)
      const last = yield* awaitConverged(t, "60 seconds")
      expect(last.master.name).toBe(c.master.name)
      yield* Effect.sleep("500 millis")
      yield* w.stop
      const final = node(t, last.master.name).redis
      const lost = yield* lostWrites(w.acks(), { host: final.host, port: final.port })
      const gap = longestAckGap(w.acks(), before, after)
      console.log(
        `switchover under load: ${w.stats().acked} acknowledged, ${lost.length} lost, writes blocked ${gap.ms} ms (first switchover), CLI: ${r.stdout.trim()} / ${named.stdout.trim()}`
      )
      expect(lost).toEqual([])
      const s = yield* serviceNow(t)
      expect(s.last_switchover?.ok).toBe(true)
      expect(s.last_switchover?.to).toBe(c.master.name)
    }), { timeout: 900_000 }
  )

  it.scoped("switchover refused with its reason: not a member, unhealthy, lagging; the master keeps its role", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const [a, b] = NAMES.filter((n) => n !== c.master.name)
      const notMember = yield* cli(["switchover", SVC, "--to=nosuch", zkArg(t)])
      expect(notMember.code).toBe(1)
      expect(notMember.stderr).toMatch(/^dictator: switchover of ops refused: nosuch is not a member of service ops \(members: .+\)\n$/)

      // Unhealthy: its Redis is gone. The CLI refuses up front; with --force the master refuses.
      yield* node(t, a!).redis.kill9
      yield* waitUntil(`${a} published unhealthy`, Effect.map(serviceNow(t), (s) => (s.members.some((m) => m.name === a && m.healthy === false) ? Option.some(true) : Option.none())), { timeout: "30 seconds", interval: "1 second" })
      const unhealthy = yield* cli(["switchover", SVC, `--to=${a}`, zkArg(t)])
      expect(unhealthy.code).toBe(1)
      expect(unhealthy.stderr).toBe(`dictator: switchover of ops refused: ${a} is not healthy\n`)
      const forced = yield* cli(["switchover", SVC, `--to=${a}`, "--force", zkArg(t)])
      expect(forced.code).toBe(1)
      expect(forced.stderr).toBe(`dictator: switchover of ops refused by ${c.master.name}: ${a} is not healthy\n`)
      yield* node(t, a!).redis.start

      // Lagging: a WRITE pause on a replica stops it applying the replication stream while it still
      // answers its health checks; under writes it cannot reach the master's offset in time.
      yield* awaitConverged(t, "60 seconds")
      const w = yield* writer(t, { tag: "lagging" })
      yield* redisCommand(node(t, b!).redis.port, ["CLIENT", "PAUSE", "60000", "WRITE"])
      yield* waitUntil("writes acknowledged", Effect.sync(() => (w.acks().length >= 20 ? Option.some(true) : Option.none())), { timeout: "30 seconds" })
      const lagging = yield* cli(["switchover", SVC, `--to=${b}`, "--force", zkArg(t)])
      expect(lagging.code).toBe(1)
      expect(lagging.stderr).toMatch(new RegExp(`^dictator: switchover of ops refused by ${c.master.name}: ${b} did not reach offset \\d+ within 3000 ms \\(behind\\)\\n$`))
      // Still the master, taking writes again.
      const acked = w.acks().length
      yield* waitUntil("writes acknowledged after the refusal", Effect.sync(() => (w.acks().length > acked + 10 ? Option.some(true) : Option.none())), { timeout: "30 seconds" })
      const m = yield* readMaster(t.zk.hosts, SVC)
      expect(Option.map(m, (x) => x.czxid)).toEqual(Option.some(c.master.czxid))
      yield* redisCommand(node(t, b!).redis.port, ["CLIENT", "UNPAUSE"])
      yield* w.stop
      const lost = yield* lostWrites(w.acks(), node(t, c.master.name).redis)
      expect(lost).toEqual([])
    }), { timeout: 900_000 }
  )

  it.scoped("pause: the master's Redis killed is not replaced; resume: failover", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const master = node(t, c.master.name)
      const paused = yield* cli(["pause", SVC, zkArg(t)])
      expect(paused.code, paused.stderr).toBe(0)
      expect(paused.stdout).toBe(`service ${SVC} paused: no automatic failover until dictator resume ${SVC}\n`)
      const again = yield* cli(["pause", SVC, zkArg(t)])
      expect(again.stdout).toMatch(/^service ops is already in maintenance mode \(since \S+ by \S+\)\n$/)
      // Shown in list and in every daemon's /status; `dictator status` prints it.
      expect((yield* serviceNow(t)).maintenance).toBe(true)
      for (const n of t.nodes) {
        yield* waitUntil(
          `${n.name} /status shows maintenance`,
          Effect.map(n.dictator.status, (st) => ((st as { maintenance?: boolean }).maintenance === true ? Option.some(true) : Option.none())),
          { timeout: "60 seconds", interval: "500 millis" }
        )
      }
      const json = yield* cli(["status", `--config=${master.dictator.configPath}`, "--json"])
      expect(json.code, json.stderr).toBe(0)
      expect(JSON.parse(json.stdout)).toMatchObject({ name: master.name, role: "master", maintenance: true })
      const text = yield* cli(["status", `-config=${master.dictator.configPath}`])
      expect(text.stdout).toContain("maintenance: on (no automatic failover)\n")
      yield* master.redis.kill9
      const killedAt = Date.now()
      // Several seconds past detection (down_after_ms 1 s) and election: still the same master znode.
      while (Date.now() - killedAt < 8000) {
        const m = yield* readMaster(t.zk.hosts, SVC)
        expect(Option.map(m, (x) => x.czxid)).toEqual(Option.some(c.master.czxid))
        yield* Effect.sleep("500 millis")
      }
      for (const n of t.nodes.filter((x) => x !== master)) {
        const info = yield* redisCommand(n.redis.port, ["INFO", "replication"])
        expect(info).toContain("role:slave")
      }

      const resumed = yield* cli(["resume", SVC, zkArg(t)])
      expect(resumed.code, resumed.stderr).toBe(0)
      expect(resumed.stdout).toBe(`service ${SVC} resumed: automatic failover is back\n`)
      const failedOver = yield* waitUntil(
        "a new master after resume",
        Effect.map(readMaster(t.zk.hosts, SVC), Option.filter((m) => m.name !== c.master.name)),
        { timeout: "60 seconds", interval: "200 millis" }
      )
      console.log(`pause held the master for 8 s with its Redis dead; after resume ${failedOver.name} took over`)
      yield* master.redis.start
      yield* awaitConverged(t, "90 seconds")
    }), { timeout: 900_000 }
  )
})
