import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { Redis } from "../../src/Redis.js"
import { layerTest, TestRedis } from "./InMemoryRedis.js"

const M = { host: "127.0.0.1", port: 6379 }
const R1 = { host: "127.0.0.1", port: 6380 }
const R2 = { host: "127.0.0.1", port: 6381 }

/** A world with a master M (offset 100) and a replica R1 of it. */
const masterAndReplica = Effect.gen(function* () {
  const world = yield* TestRedis
  yield* world.addServer(M.host, M.port, { offset: 100 })
  yield* world.addServer(R1.host, R1.port, { replicaOf: M })
  return world
})

const connect = (address: { host: string; port: number }, timeout: Duration.DurationInput = "1 second") =>
  Effect.flatMap(Redis, (redis) => redis.connect(address, timeout))

describe("InMemoryRedis: reachability", () => {
  it.scoped("an unknown or killed server refuses at once", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const unknown = yield* connect({ host: "10.0.0.9", port: 6379 })
      expect(yield* Effect.flip(unknown.ping)).toMatchObject({ _tag: "RedisUnavailable", reason: "refused" })
      yield* world.kill(M)
      const m = yield* connect(M)
      expect(yield* Effect.flip(m.replication)).toMatchObject({ _tag: "RedisUnavailable", reason: "refused" })
      expect(yield* world.commands(M)).toEqual([])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("closed completes when the server is killed, not when it is frozen", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M)
      const r = yield* connect(R1)
      const mClosed = yield* Effect.fork(m.closed)
      const rClosed = yield* Effect.fork(r.closed)
      yield* world.freeze(R1)
      yield* TestClock.adjust("5 seconds")
      expect(Option.isNone(yield* Fiber.poll(mClosed))).toBe(true)
      yield* world.kill(M)
      yield* Fiber.join(mClosed)
      expect(Option.isNone(yield* Fiber.poll(rClosed))).toBe(true)
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a frozen server times out after the connection's timeout, under TestClock", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M, "2 seconds")
      yield* world.freeze(M)
      const fiber = yield* Effect.fork(Effect.flip(m.ping))
      yield* TestClock.adjust("1999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 milli")
      const error = yield* Fiber.join(fiber)
      expect(error).toMatchObject({ _tag: "RedisUnavailable", reason: "timeout", address: "127.0.0.1:6379" })
      expect(error.message).toContain("PING got no answer within 2s")
    }).pipe(Effect.provide(layerTest)))

  it.scoped("commands sent to a frozen server run when it thaws, even if the caller gave up", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const r1 = yield* connect(R1)
      yield* world.freeze(R1)
      const fiber = yield* Effect.fork(Effect.flip(r1.replicaOf(null)))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toMatchObject({ _tag: "RedisUnavailable", reason: "timeout" })
      expect((yield* world.inspect(R1)).role).toBe("replica")
      yield* world.thaw(R1)
      expect(yield* world.commands(R1)).toEqual(["REPLICAOF NO ONE"])
      expect((yield* world.inspect(R1)).role).toBe("master")
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a command waiting on a frozen server that is killed fails as refused, and never runs", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const r1 = yield* connect(R1, "10 seconds")
      yield* world.freeze(R1)
      const fiber = yield* Effect.fork(Effect.flip(r1.replicaOf(null)))
      yield* TestClock.adjust("1 second")
      yield* world.kill(R1)
      expect(yield* Fiber.join(fiber)).toMatchObject({ reason: "refused", detail: "ECONNRESET" })
      yield* world.restart(R1)
      expect(yield* world.commands(R1)).toEqual([])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a loading server fails PING, INFO and REPLICAOF with RedisLoading, but takes CONFIG SET", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M)
      yield* world.setLoading(M, true)
      expect((yield* Effect.flip(m.ping))._tag).toBe("RedisLoading")
      expect((yield* Effect.flip(m.replication))._tag).toBe("RedisLoading")
      expect((yield* Effect.flip(m.replicaOf(R1)))._tag).toBe("RedisLoading")
      yield* m.configSet("min-replicas-to-write", "1")
      expect((yield* world.inspect(R1)).linkUp).toBe(false)
      expect((yield* Effect.flip(world.write(M))).reason).toBe("LOADING")
      yield* world.setLoading(M, false)
      yield* m.ping
      expect((yield* world.inspect(R1)).linkUp).toBe(true)
      expect(yield* world.commands(M)).toEqual([
        "PING",
        "INFO replication",
        "REPLICAOF 127.0.0.1 6380",
        "CONFIG SET min-replicas-to-write 1",
        "PING"
      ])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a server restarted while loading refuses nothing but answers LOADING until it is done", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M)
      yield* world.restart(M, { loading: true })
      expect((yield* Effect.flip(m.ping))._tag).toBe("RedisLoading")
      expect((yield* world.inspect(R1)).linkUp).toBe(false)
      yield* world.setLoading(M, false)
      yield* m.ping
      expect(yield* world.inspect(R1)).toMatchObject({ linkUp: true, offset: 100 })
    }).pipe(Effect.provide(layerTest)))

  it.scoped("connections are counted until their scope closes; localhost is 127.0.0.1", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      yield* Effect.scoped(
        Effect.gen(function* () {
          const m = yield* connect({ host: "localhost", port: 6379 })
          yield* m.ping
          expect(yield* world.openConnections(M)).toBe(1)
        })
      )
      expect(yield* world.openConnections(M)).toBe(0)
      expect(yield* world.commands(M)).toEqual(["PING"])
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryRedis: replication", () => {
  it.scoped("a replica takes its master's offset and follows its writes; INFO reads like Redis", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      expect(yield* world.inspect(R1)).toMatchObject({ role: "replica", linkUp: true, offset: 100 })
      expect(yield* world.write(M, 10)).toBe(110)
      const m = yield* connect(M)
      const r1 = yield* connect(R1)
      const mi = yield* m.replication
      expect(mi).toMatchObject({ role: "master", offset: 110, linkUp: true })
      expect(mi.replicas).toEqual([{ host: "127.0.0.1", port: 6380, state: "online", offset: 110 }])
      const ri = yield* r1.replication
      expect(ri).toMatchObject({ role: "replica", master: M, linkUp: true, offset: 110, replid: mi.replid })
      expect((yield* Effect.flip(world.write(R1))).reason).toBe("READONLY")
    }).pipe(Effect.provide(layerTest)))

  it.scoped("REPLICAOF moves a server under another, REPLICAOF NO ONE promotes it with its offset", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      yield* world.addServer(R2.host, R2.port, { offset: 7 })
      const r2 = yield* connect(R2)
      yield* r2.replicaOf(R1)
      // Chained: R2 follows R1, which follows M.
      yield* world.write(M, 5)
      expect(yield* world.inspect(R2)).toMatchObject({ role: "replica", linkUp: true, offset: 105 })
      expect((yield* world.inspect(R1)).replicas).toEqual(["127.0.0.1:6381"])

      const r1 = yield* connect(R1)
      const before = yield* world.inspect(R1)
      yield* r1.replicaOf(null)
      const after = yield* world.inspect(R1)
      expect(after).toMatchObject({ role: "master", master: null, offset: 105 })
      expect(after.replid).not.toBe(before.replid)
      expect(yield* world.write(R1, 1)).toBe(106)
      expect((yield* world.inspect(R2)).offset).toBe(106)
      expect((yield* world.inspect(M)).offset).toBe(105)
      expect(yield* world.commands(R1)).toEqual(["REPLICAOF NO ONE"])
      expect(yield* world.commands(R2)).toEqual(["REPLICAOF 127.0.0.1 6380"])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a replica's link follows its master: kill, restart, freeze and thaw", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const r1 = yield* connect(R1)
      yield* world.kill(M)
      yield* TestClock.adjust("5 seconds")
      expect(yield* r1.replication).toMatchObject({ linkUp: false, linkDownSinceSeconds: 5, offset: 100 })
      // A restarted master comes back as a master and its replicas link again.
      yield* world.restart(M)
      expect(yield* world.inspect(M)).toMatchObject({ role: "master", offset: 100 })
      expect(yield* world.inspect(R1)).toMatchObject({ linkUp: true, offset: 100 })
      yield* world.freeze(M)
      expect((yield* world.inspect(R1)).linkUp).toBe(false)
      expect((yield* Effect.flip(world.write(M))).reason).toBe("timeout")
      yield* world.thaw(M)
      expect((yield* world.inspect(R1)).linkUp).toBe(true)
      // An empty restart wipes the replicas that sync from it.
      yield* world.restart(M, { empty: true })
      expect(yield* world.inspect(R1)).toMatchObject({ linkUp: true, offset: 0 })
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a cut link makes a replica lag until it heals", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      yield* world.addServer(R2.host, R2.port, { replicaOf: M })
      yield* world.cutLink(R1)
      yield* world.write(M, 50)
      expect((yield* world.inspect(R1)).offset).toBe(100)
      expect((yield* world.inspect(R2)).offset).toBe(150)
      expect((yield* world.inspect(M)).replicas).toEqual(["127.0.0.1:6381"])
      yield* world.healLink(R1)
      expect(yield* world.inspect(R1)).toMatchObject({ linkUp: true, linkCut: false, offset: 150 })
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a replica of a server that does not exist has its link down", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const r1 = yield* connect(R1)
      yield* r1.replicaOf({ host: "10.0.0.9", port: 6379 })
      const info = yield* r1.replication
      expect(info).toMatchObject({ role: "replica", master: { host: "10.0.0.9", port: 6379 }, linkUp: false, offset: 100 })
      expect((yield* world.inspect(M)).replicas).toEqual([])
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryRedis: writes", () => {
  it.scoped("CLIENT PAUSE WRITE rejects writes until it expires under TestClock, or CLIENT UNPAUSE", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M)
      yield* m.pauseWrites("1500 millis")
      expect(yield* world.inspect(M)).toMatchObject({ paused: true, pausedUntil: 1500 })
      expect((yield* Effect.flip(world.write(M))).reason).toBe("PAUSED")
      yield* TestClock.adjust("1500 millis")
      expect((yield* world.inspect(M)).paused).toBe(false)
      expect(yield* world.write(M)).toBe(101)
      yield* m.pauseWrites("10 seconds")
      yield* m.unpause
      expect(yield* world.write(M)).toBe(102)
      expect(yield* world.commands(M)).toEqual(["CLIENT PAUSE 1500 WRITE", "CLIENT PAUSE 10000 WRITE", "CLIENT UNPAUSE"])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("min-replicas-to-write counts linked replicas; restart forgets CONFIG SET", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      const m = yield* connect(M)
      yield* m.configSet("min-replicas-to-write", "1")
      expect((yield* world.inspect(M)).config).toEqual({ "min-replicas-to-write": "1" })
      expect(yield* world.write(M)).toBe(101)
      yield* world.kill(R1)
      expect((yield* Effect.flip(world.write(M))).reason).toBe("NOREPLICAS")
      yield* world.restart(M)
      expect((yield* world.inspect(M)).config).toEqual({})
      expect(yield* world.write(M)).toBe(102)
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryRedis: killClients", () => {
  it.scoped("closes normal and pub/sub clients, counts them, and is logged as Redis spells it", () =>
    Effect.gen(function* () {
      const world = yield* masterAndReplica
      yield* world.connectClient(M, "normal")
      yield* world.connectClient(M, "normal")
      yield* world.connectClient(M, "pubsub")
      yield* world.connectClient(R1, "normal")
      const m = yield* connect(M)
      expect(yield* m.killClients).toBe(3)
      expect(yield* world.clients(M)).toEqual({ normal: 0, pubsub: 0 })
      // Only the server asked: the replica's clients stay.
      expect(yield* world.clients(R1)).toEqual({ normal: 1, pubsub: 0 })
      expect(yield* m.killClients).toBe(0)
      expect((yield* world.commands(M)).filter((c) => c.startsWith("CLIENT KILL"))).toEqual([
        "CLIENT KILL TYPE normal SKIPME yes",
        "CLIENT KILL TYPE pubsub SKIPME yes",
        "CLIENT KILL TYPE normal SKIPME yes",
        "CLIENT KILL TYPE pubsub SKIPME yes"
      ])
      yield* world.kill(M)
      expect(yield* Effect.flip(m.killClients)).toMatchObject({ _tag: "RedisUnavailable", reason: "refused" })
    }).pipe(Effect.provide(layerTest)))
})
