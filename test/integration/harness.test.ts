/**
 * The real-server harness itself: ZooKeeper (standalone and ensemble) and redis-server come up,
 * can be killed and restarted, and are gone once their scope closes.
 */
import { existsSync, readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Scope } from "effect"
import {
  accepts,
  dictator,
  freePort,
  readMaster,
  redisServer,
  waitUntil,
  zooKeeper,
  zooKeeperEnsemble
} from "../support/servers.js"


describe("harness", () => {
  it.live("freePort never hands out the same port twice", () =>
    Effect.gen(function* () {
      const ports = yield* Effect.forEach(Array.from({ length: 50 }), () => freePort)
      expect(new Set(ports).size).toBe(50)
      for (const p of ports) expect(p).toBeGreaterThan(0)
    })
  )

  it.live("waitUntil: probe errors are 'not yet'; a timeout names what was awaited", () =>
    Effect.gen(function* () {
      let calls = 0
      const probe = Effect.suspend(() => {
        calls++
        return calls < 3 ? Effect.fail("boom") : Effect.succeed(Option.some(calls))
      })
      expect(yield* waitUntil("three calls", probe, { interval: "10 millis" })).toBe(3)

      const error = yield* Effect.flip(
        waitUntil("the impossible", Effect.fail(new Error("never")), { timeout: "300 millis", interval: "20 millis" })
      )
      expect(error._tag).toBe("HarnessError")
      expect(error.message).toContain("the impossible")
      expect(error.message).toContain("never")
    })
  )

  it.scopedLive("standalone ZooKeeper: mode, readMaster of a missing znode", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 500 })
      expect(yield* zk.mode).toBe("standalone")
      expect(zk.connectString).toBe(`127.0.0.1:${zk.clientPort}`)
      expect(yield* zk.running).toBe(true)
      expect(Option.isNone(yield* readMaster([zk.connectString], "nothing-here"))).toBe(true)
    })
  )

  it.scopedLive("3-node ensemble: one leader; a new one after the leader is killed", () =>
    Effect.gen(function* () {
      const { hosts, servers } = yield* zooKeeperEnsemble(3, { tickTime: 500 })
      expect(hosts).toHaveLength(3)
      const modes = yield* Effect.forEach(servers, (s) => s.mode)
      expect(modes.filter((m) => m === "leader")).toHaveLength(1)
      expect(modes.filter((m) => m === "follower")).toHaveLength(2)

      const leader = servers[modes.indexOf("leader")]!
      yield* leader.kill9
      expect(yield* leader.running).toBe(false)
      expect(yield* leader.mode).toBe("down")
      const others = servers.filter((s) => s !== leader)
      const newLeader = yield* waitUntil(
        "a new ZooKeeper leader",
        Effect.forEach(others, (s) => s.mode).pipe(
          Effect.map((ms) => {
            const i = ms.indexOf("leader")
            return i >= 0 && ms.every((m) => m === "leader" || m === "follower") ? Option.some(others[i]!) : Option.none()
          })
        ),
        { timeout: "60 seconds" }
      )
      expect(newLeader.id).not.toBe(leader.id)

      // The killed server rejoins as a follower.
      yield* leader.start
      const rejoined = yield* waitUntil(
        "the old leader to rejoin",
        leader.mode.pipe(Effect.map((m) => (m === "follower" ? Option.some(m) : Option.none()))),
        { timeout: "60 seconds" }
      )
      expect(rejoined).toBe("follower")
    })
  )

  it.scopedLive("redis-server: PING, kill9, start again", () =>
    Effect.gen(function* () {
      const redis = yield* redisServer()
      expect(redis.host).toBe("127.0.0.1")
      expect(yield* redis.cli("PING")).toBe("PONG")
      expect(yield* redis.cli("SET", "k", "v")).toBe("OK")
      expect(yield* redis.cli("GET", "k")).toBe("v")
      expect(yield* redis.cli("CONFIG", "GET", "save")).toBe("save\n")
      const pid = redis.pid()
      expect(pid).toBeTypeOf("number")

      yield* redis.kill9
      expect(yield* redis.running).toBe(false)
      expect(redis.pid()).toBeUndefined()
      expect(yield* redis.exitCode).toBeNull() // killed by a signal
      expect(yield* accepts(redis.port)).toBe(false)
      const failed = yield* Effect.exit(redis.cli("PING"))
      expect(Exit.isFailure(failed)).toBe(true)

      yield* redis.start
      expect(yield* redis.running).toBe(true)
      expect(redis.pid()).not.toBe(pid)
      expect(yield* redis.cli("PING")).toBe("PONG")
      expect(yield* redis.cli("GET", "k")).toBe("") // nothing saved: it came back empty
      expect(redis.output()).toContain("Ready to accept connections")
    })
  )

  it.scopedLive("redis-server: extra args, stop gives exit code 0", () =>
    Effect.gen(function* () {
      const redis = yield* redisServer({ args: ["--maxmemory", "10mb"] })
      expect(yield* redis.cli("CONFIG", "GET", "maxmemory")).toBe("maxmemory\n10485760")
      yield* redis.stop
      expect(yield* redis.running).toBe(false)
      expect(yield* redis.exitCode).toBe(0)
    })
  )

  it.scopedLive("dictator(): config file, /ping, /status, master znode, stop and start", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 500 })
      const redis = yield* redisServer()
      const d = yield* dictator({
        name: "solo",
        svc: "harness",
        zkHosts: [zk.connectString],
        redisPort: redis.port,
        // A lone master has no replica to hand over to: do not wait for one on stop.
        extra: { handover_timeout_ms: 0 },
        node: { priority: 50 }
      })
      const config = JSON.parse(readFileSync(d.configPath, "utf8")) as Record<string, unknown>
      expect(config).toMatchObject({
        svc_name: "harness",
        http_port: d.httpPort,
        http_host: "127.0.0.1",
        zk_hosts: [zk.connectString],
        handover_timeout_ms: 0,
        node: { name: "solo", host: "127.0.0.1", port: redis.port, priority: 50 }
      })
      expect((yield* d.http("/ping")).status).toBe(200)
      // /ping answers from the start; /status once the node is built (503 "starting" before).
      const status = yield* waitUntil("solo's /status", Effect.map(d.status, Option.some), { timeout: "30 seconds" })
      expect(typeof status).toBe("object")

      const master = yield* waitUntil("solo to own the master znode", readMaster([zk.connectString], "harness"), {
        timeout: "30 seconds"
      })
      expect(master).toMatchObject({ name: "solo", host: "127.0.0.1", port: redis.port })
      expect(JSON.parse(master.raw)).toMatchObject({ port: String(redis.port) })

      yield* d.stop
      expect(yield* d.running).toBe(false)
      yield* d.start
      expect((yield* d.http("/ping")).status).toBe(200)
    })
  )

  it.live("everything is stopped and removed when the scope closes", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const { zk, redis, ensemble } = yield* Effect.all({
        zk: zooKeeper({ tickTime: 500 }),
        redis: redisServer(),
        ensemble: zooKeeperEnsemble(3, { tickTime: 500 })
      }).pipe(Scope.extend(scope))
      const ports = [zk.clientPort, redis.port, ...ensemble.servers.map((s) => s.clientPort)]
      for (const p of ports) expect(yield* accepts(p)).toBe(true)
      const dir = redis.dir
      expect(existsSync(dir)).toBe(true)

      yield* Scope.close(scope, Exit.void)

      for (const p of ports) expect(yield* accepts(p)).toBe(false)
      expect(yield* zk.running).toBe(false)
      expect(yield* redis.running).toBe(false)
      for (const s of ensemble.servers) expect(yield* s.running).toBe(false)
      expect(existsSync(dir)).toBe(false)
    })
  )
})
