/**
 * Issue 7 on real servers (`npm run build` first): a Redis that came back empty is not elected
 * (item 10); a second dictator under a running node's name is refused (item 11); a malformed
 * persistent master znode does not fence a service forever (item 13). Real ZooKeeper, real
 * redis-servers, the built binary.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schedule } from "effect"
import zookeeper from "node-zookeeper-client"
import { dictator, freePort, readMaster, redisServer, repoRoot, waitUntil, zkSession, zooKeeper } from "../support/servers.js"

const MAIN = process.env.DICTATOR_MAIN ?? path.join(repoRoot(), "dist", "src", "main.js")

interface Finished {
  readonly code: number | null
  readonly output: string
}

/** Runs the daemon from `config` until it exits by itself (≤ 40 s, then SIGKILL). */
const runToExit = (config: Record<string, unknown>): Effect.Effect<Finished> =>
  Effect.acquireUseRelease(
    Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "dictator-safety-"))),
    (dir) =>
      Effect.gen(function* () {
        const file = path.join(dir, "dictator.conf")
        yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(config, null, 2)))
        return yield* Effect.async<Finished>((resume) => {
          const env = { ...process.env }
          delete env.NODE_OPTIONS
          const child = spawn(process.execPath, [MAIN, `--config=${file}`], { env, stdio: ["ignore", "pipe", "pipe"] })
          let output = ""
          child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d))
          child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d))
          const timer = setTimeout(() => child.kill("SIGKILL"), 40_000)
          child.on("close", (code) => {
            clearTimeout(timer)
            resume(Effect.succeed({ code, output }))
          })
          return Effect.sync(() => {
            clearTimeout(timer)
            child.kill("SIGKILL")
          })
        })
      }),
    (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  )

/** Stat of a znode read from the outside (None when absent). */
const stat = (hosts: ReadonlyArray<string>, znode: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const client = yield* zkSession(hosts)
      return yield* Effect.async<Option.Option<{ readonly owner: string; readonly czxid: string; readonly data: string }>>((resume) => {
        client.getData(znode, (error, data, s) => {
          if (error) resume(Effect.succeed(Option.none()))
          else
            resume(
              Effect.succeed(
                Option.some({
                  owner: s.ephemeralOwner.toString("hex").replace(/^0+/, "") || "0",
                  czxid: s.czxid.readBigUInt64BE(0).toString(),
                  data: (data ?? Buffer.alloc(0)).toString("utf8")
                })
              )
            )
        })
      })
    })
  )

/** The offset in `name`'s member record, read from the outside (None while there is no record). */
const recordedOffset = (hosts: ReadonlyArray<string>, svc: string, name: string) =>
  Effect.map(stat(hosts, `/services/redis/${svc}/members/${name}`), Option.map((s) => Number((JSON.parse(s.data) as { offset: unknown }).offset)))

/** `field:value` of an INFO reply. */
const infoField = (info: string, field: string): string | undefined =>
  info.split(/\r?\n/).find((l) => l.startsWith(`${field}:`))?.slice(field.length + 1)

/**
 * Three nodes: b elected alone first, then a (preferred: priority 1) and c join as its replicas;
 * 2 MiB written through b and acknowledged by both replicas (WAIT), b's member record showing
 * that offset. Then a's Redis loses its data (kill -9, restarted without persistence: an empty
 * master, offset 0) while its dictator is frozen, so it cannot be resynced before the fault.
 * Returns with a's dictator still frozen (and thawed at teardown).
 */
const preferredReplicaEmptied = (svc: string, extra: Record<string, unknown>) =>
  Effect.gen(function* () {
    const zk = yield* zooKeeper()
    const hosts = [zk.connectString]
    const args = ["--repl-diskless-sync-delay", "0"]
    const [ra, rb, rc] = yield* Effect.forEach([0, 1, 2], () => redisServer({ args }))
    const db = yield* dictator({ name: "b", svc, zkHosts: hosts, redisPort: rb!.port, extra })
    yield* waitUntil("b master", Effect.map(readMaster(hosts, svc), Option.filter((m) => m.name === "b")), { timeout: "30 seconds" })
    const da = yield* dictator({ name: "a", svc, zkHosts: hosts, redisPort: ra!.port, extra, node: { priority: 1 } })
    const dc = yield* dictator({ name: "c", svc, zkHosts: hosts, redisPort: rc!.port, extra })
    // A frozen dictator left frozen would not stop at teardown (SIGKILL works on it anyway).
    yield* Effect.addFinalizer(() => da.signal("SIGCONT"))
    const linked = (r: typeof ra) =>
      Effect.map(r!.cli("INFO", "replication"), (info) =>
        infoField(info, "role") === "slave" && infoField(info, "master_port") === String(rb!.port) && infoField(info, "master_link_status") === "up"
          ? Option.some(true)
          : Option.none()
      )
    yield* waitUntil("a and c replicating from b", Effect.map(Effect.all([linked(ra), linked(rc)]), Option.all), { timeout: "30 seconds" })

    const keys = Array.from({ length: 32 }, (_, i) => `item10:${i}`)
    const value = (k: string) => k.padEnd(65536, "x")
    for (const k of keys) expect(yield* rb!.cli("SET", k, value(k))).toBe("OK")
    expect(yield* rb!.cli("WAIT", "2", "5000")).toBe("2")
    const written = Number(infoField(yield* rb!.cli("INFO", "replication"), "master_repl_offset"))
    // More than max_lag_on_failover's default (1 MiB).
    expect(written).toBeGreaterThan(2 * 1048576)
    // The master's member record shows it (rewritten within 5 s when only the offset moved).
    yield* waitUntil(
      "b's member record to show its offset",
      Effect.map(recordedOffset(hosts, svc, "b"), Option.filter((o) => o >= written)),
      { timeout: "15 seconds", interval: "200 millis" }
    )
    expect(yield* rc!.cli("EXISTS", ...keys)).toBe(String(keys.length))

    yield* da.signal("SIGSTOP")
    yield* ra!.kill9
    yield* ra!.start
    const empty = yield* ra!.cli("INFO", "replication")
    expect(infoField(empty, "role")).toBe("master")
    expect(infoField(empty, "master_repl_offset")).toBe("0")
    expect(yield* ra!.cli("DBSIZE")).toBe("0")
    return { hosts, ra: ra!, rb: rb!, rc: rc!, da, db, dc, keys, value }
  })

/** The lines of a dictator's output saying its Redis is empty, hence no candidate. */
const saysEmpty = (output: string) => output.split("\n").filter((l) => l.includes("not a candidate: its Redis is empty (offset 0)"))

describe("issue 7 item 10: an empty Redis is not elected", () => {
  it.scopedLive(
    "the preferred replica's Redis restarted empty (its dictator frozen meanwhile), then the master's host frozen and voted down: the caught-up replica is promoted with every replicated key, never the empty one",
    () =>
      Effect.gen(function* () {
        const svc = "empty"
        // Default max_lag_on_failover (1 MiB).
        const { da, db, hosts, keys, ra, rb, rc, value } = yield* preferredReplicaEmptied(svc, {})
        // The master's host freezes (it cannot resync a); a's dictator wakes up to an empty Redis
        // and has time to see it healthy (offset 0) before b is voted down (down_after_ms 1 s).
        yield* Effect.all([rb.signal("SIGSTOP"), db.signal("SIGSTOP")])
        yield* da.signal("SIGCONT")
        const next = yield* waitUntil(
          "a new master",
          Effect.map(readMaster(hosts, svc), Option.filter((m) => m.name !== "b")),
          { timeout: "40 seconds", interval: "50 millis" }
        )
        expect(next.name, da.output()).toBe("c")
        // b's host does not come back.
        yield* Effect.all([rb.kill9, db.kill9])
        // Nothing acknowledged by both replicas is lost. Read again if c's dictator closes the
        // connection (kill_clients_on_role_change closes application clients after the promotion).
        const read = (...args: Array<string>) => rc.cli(...args).pipe(Effect.retry(Schedule.intersect(Schedule.spaced("200 millis"), Schedule.recurs(10))))
        expect(yield* read("EXISTS", ...keys)).toBe(String(keys.length))
        expect(yield* read("GET", keys[7]!)).toBe(value(keys[7]!))
        // a says why when it stood before c won (not when c was quicker): never more than once.
        const why = saysEmpty(da.output())
        expect(why.length, da.output()).toBeLessThanOrEqual(1)
        for (const line of why) expect(line).toContain("max_lag_on_failover")
        expect(da.output()).not.toContain("promoting")
        // The master stays c, and a's Redis is made its replica again (it resyncs the data).
        yield* waitUntil(
          "a's Redis to hold the data again, from c",
          Effect.map(ra.cli("EXISTS", ...keys), (n) => (n === String(keys.length) ? Option.some(true) : Option.none())),
          { timeout: "30 seconds", interval: "200 millis" }
        )
        expect(Option.map(yield* readMaster(hosts, svc), (m) => m.name)).toEqual(Option.some("c"))
      }),
    180_000
  )

  it.scopedLive(
    "the same, with the caught-up replica's host killed too: nobody is promoted, the empty one says why once",
    () =>
      Effect.gen(function* () {
        const svc = "empty-alone"
        const { da, db, dc, hosts, rb, rc } = yield* preferredReplicaEmptied(svc, {})
        yield* Effect.all([rb.kill9, db.kill9, rc.kill9, dc.kill9])
        yield* da.signal("SIGCONT")
        // b's session (6 s) expires and its master znode goes: an election could run from then on.
        // 14 s from the kill: 8 s after that, sampled every 100 ms.
        const until = Date.now() + 14_000
        const seen = new Set<string>()
        while (Date.now() < until) {
          const m = yield* readMaster(hosts, svc)
          seen.add(Option.match(m, { onNone: () => "(none)", onSome: (x) => x.name }))
          yield* Effect.sleep("100 millis")
        }
        expect([...seen].filter((n) => n !== "b" && n !== "(none)"), da.output()).toEqual([])
        expect(seen.has("(none)"), da.output()).toBe(true)
        expect(yield* readMaster(hosts, svc)).toEqual(Option.none())
        const why = saysEmpty(da.output())
        expect(why, da.output()).toHaveLength(1)
        expect(why[0]).toContain("max_lag_on_failover")
        expect(da.output()).not.toContain("promoting")
      }),
    180_000
  )
})

describe("issue 7 item 11: duplicate node names", () => {
  it.scopedLive(
    "a second dictator named like a running one (default name `local`) exits non-zero with one clear message; the first keeps its znodes and its role",
    () =>
      Effect.gen(function* () {
        const zk = yield* zooKeeper()
        const hosts = [zk.connectString]
        const svc = "dup"
        const r1 = yield* redisServer()
        const r2 = yield* redisServer()
        yield* dictator({ name: "local", svc, zkHosts: hosts, redisPort: r1.port })
        yield* waitUntil("local master", Effect.map(readMaster(hosts, svc), Option.filter((m) => m.port === r1.port)), { timeout: "30 seconds" })
        const member = yield* stat(hosts, `/services/redis/${svc}/members/local`)
        const master = yield* stat(hosts, `/services/redis/${svc}/master`)
        expect(Option.isSome(member) && Option.isSome(master)).toBe(true)

        const second = yield* runToExit({
          svc_name: svc,
          zk_hosts: hosts,
          zk_session_timeout_ms: 4000,
          http_port: yield* freePort,
          http_host: "127.0.0.1",
          node: { name: "local", host: "127.0.0.1", port: r2.port }
        })
        expect(second.code, second.output).not.toBe(0)
        expect(second.code, second.output).not.toBeNull()
        // logfmt quotes the message: its own quotes come escaped.
        const fatal = second.output.split("\n").filter((l) => l.includes("level=FATAL")).map((l) => l.replaceAll('\\"', '"'))
        expect(fatal, second.output).toHaveLength(1)
        expect(fatal[0]).toContain(`another dictator already runs as node "local" in service "${svc}"`)
        expect(fatal[0]).toContain(`127.0.0.1:${r1.port}`)
        expect(fatal[0]).toContain("node.name")
        expect(second.output).not.toMatch(/^\s+at /m)

        expect(yield* stat(hosts, `/services/redis/${svc}/members/local`)).toEqual(member)
        expect(yield* stat(hosts, `/services/redis/${svc}/master`)).toEqual(master)
        // The refused one never touched its Redis; the first one's is still the master.
        expect(yield* r2.cli("INFO", "replication")).toContain("role:master")
        expect(yield* r2.cli("INFO", "commandstats")).not.toMatch(/cmdstat_(replicaof|slaveof|client\|pause|client\|unpause|config)/)
        expect(yield* r1.cli("INFO", "replication")).toContain("role:master")
      }),
    120_000
  )
})

describe("issue 7 item 13a: a malformed persistent master znode", () => {
  it.scopedLive(
    "written by hand before any dictator runs: logged with how to clear it, removed after a session timeout, then a master is elected",
    () =>
      Effect.gen(function* () {
        const zk = yield* zooKeeper()
        const hosts = [zk.connectString]
        const svc = "garbage"
        const client = yield* zkSession(hosts)
        const create = (p: string, data: Buffer) =>
          Effect.async<void>((resume) => client.create(p, data, zookeeper.CreateMode.PERSISTENT, () => resume(Effect.void)))
        for (const p of ["/services", "/services/redis", `/services/redis/${svc}`]) yield* create(p, Buffer.alloc(0))
        yield* create(`/services/redis/${svc}/master`, Buffer.from("{not json"))
        const before = yield* stat(hosts, `/services/redis/${svc}/master`)
        expect(Option.isSome(before) && before.value.owner).toBe("0")

        const r1 = yield* redisServer()
        const d = yield* dictator({ name: "a", svc, zkHosts: hosts, redisPort: r1.port, extra: { zk_session_timeout_ms: 4000 } })
        const elected = yield* waitUntil("a master elected", Effect.map(readMaster(hosts, svc), Option.filter((m) => m.name === "a")), { timeout: "60 seconds" })
        expect(elected.port).toBe(r1.port)
        const lines = d.output().split("\n").filter((l) => l.includes("is malformed") && l.includes("level=ERROR"))
        expect(lines, d.output()).toHaveLength(1)
        expect(lines[0]).toContain(`zkCli.sh delete /services/redis/${svc}/master`)
        expect(d.output()).toContain("removing the malformed persistent master znode")
      }),
    120_000
  )
})

describe("issue 7 item 13b: an old master that returns without its dictator", () => {
  it.scopedLive(
    "its host killed (Redis and dictator), a new master elected; its Redis restarted alone (role:master, its dictator still gone) is made a replica of the new master",
    () =>
      Effect.gen(function* () {
        const zk = yield* zooKeeper()
        const hosts = [zk.connectString]
        const svc = "orphan"
        const redis = yield* Effect.forEach([0, 1, 2], () => redisServer())
        const names = ["a", "b", "c"]
        const ds = yield* Effect.forEach(names, (name, i) => dictator({ name, svc, zkHosts: hosts, redisPort: redis[i]!.port }))
        const first = yield* waitUntil("a master", readMaster(hosts, svc), { timeout: "60 seconds" })
        const i = names.indexOf(first.name)
        const oldRedis = redis[i]!
        yield* Effect.all([oldRedis.kill9, ds[i]!.kill9])
        const next = yield* waitUntil(
          "a new master",
          Effect.map(readMaster(hosts, svc), Option.filter((m) => m.name !== first.name)),
          { timeout: "60 seconds" }
        )
        // The old master's Redis comes back on its own, as a master (no replicaof in its config).
        yield* oldRedis.start
        expect(yield* oldRedis.cli("INFO", "replication")).toContain("role:master")
        yield* waitUntil(
          `${first.name}'s Redis replicating from ${next.name}`,
          Effect.map(oldRedis.cli("INFO", "replication"), (info) =>
            info.includes("role:slave") && info.includes(`master_port:${next.port}`) ? Option.some(true) : Option.none()
          ),
          { timeout: "30 seconds" }
        )
        const j = names.indexOf(next.name)
        expect(ds[j]!.output()).toContain(`old master ${first.name}`)
      }),
    180_000
  )
})
