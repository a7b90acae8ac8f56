import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Queue, Stream, SubscriptionRef, TestClock } from "effect"
import type { SessionInfo, ZkNode } from "../../src/ZooKeeper.js"
import { ZooKeeper } from "../../src/ZooKeeper.js"
import { layerTest, TestZooKeeper, ZkEnsemble } from "./InMemoryZooKeeper.js"

const bytes = (s: string) => new TextEncoder().encode(s)
const text = (n: Option.Option<ZkNode>) => Option.map(n, (x) => new TextDecoder().decode(x.data))

/**
 * Runs a stream in the background into a queue, so a test can take its values one by one. Returns
 * once the stream has started (subscribed, first value read), so later changes are not missed.
 */
const follow = <A>(stream: Stream.Stream<A>) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<A>()
    yield* stream.pipe(Stream.runForEach((a) => Queue.offer(queue, a)), Effect.forkScoped)
    yield* TestClock.adjust(0)
    return queue
  })

/** Values still waiting in a queue once every runnable fiber has had its turn. */
const settle = <A>(queue: Queue.Queue<A>) =>
  Effect.zipRight(TestClock.adjust(0), Effect.map(Queue.takeAll(queue), (c) => [...c]))

describe("InMemoryZooKeeper: nodes", () => {
  it.scoped("create, get and stat: czxid grows, ephemeralOwner names the session", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      expect(yield* zk.create("/a", bytes("1"), "persistent")).toBe("/a")
      expect(yield* zk.create("/a/e", bytes("2"), "ephemeral")).toBe("/a/e")
      const a = Option.getOrThrow(yield* zk.get("/a"))
      const e = Option.getOrThrow(yield* zk.get("/a/e"))
      expect(a.stat).toEqual({ version: 0, czxid: "1", mzxid: "1", ephemeralOwner: "0" })
      expect(e.stat.ephemeralOwner).toBe(ensemble.sessionIdOf(zk))
      expect(BigInt(e.stat.czxid)).toBeGreaterThan(BigInt(a.stat.czxid))
      expect(yield* zk.get("/missing")).toEqual(Option.none())
      expect(ensemble.dump().map((n) => [n.path, n.data])).toEqual([["/a", "1"], ["/a/e", "2"]])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("create fails with ZkNodeExists, ZkNoNode, and under an ephemeral", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      yield* zk.create("/a", bytes(""), "persistent")
      yield* zk.create("/e", bytes(""), "ephemeral")
      expect((yield* Effect.flip(zk.create("/a", bytes(""), "persistent")))._tag).toBe("ZkNodeExists")
      expect((yield* Effect.flip(zk.create("/x/y", bytes(""), "persistent")))._tag).toBe("ZkNoNode")
      const under = yield* Effect.flip(zk.create("/e/c", bytes(""), "persistent"))
      expect(under._tag).toBe("ZkError")
      expect(under.message).toContain("NO_CHILDREN_FOR_EPHEMERALS")
    }).pipe(Effect.provide(layerTest)))

  it.scoped("sequential names carry the parent's cversion on 10 digits", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      yield* zk.ensurePath("/el")
      const first = yield* zk.create("/el/n_", bytes(""), "ephemeral_sequential")
      const second = yield* zk.create("/el/n_", bytes(""), "persistent_sequential")
      expect([first, second]).toEqual(["/el/n_0000000000", "/el/n_0000000001"])
      // A deletion bumps cversion too: numbers are never reused.
      yield* zk.remove(first, -1)
      expect(yield* zk.create("/el/n_", bytes(""), "ephemeral_sequential")).toBe("/el/n_0000000003")
      expect(yield* zk.create("/el/", bytes(""), "persistent_sequential")).toBe("/el/0000000004")
      expect(yield* zk.children("/el")).toEqual(["0000000004", "n_0000000001", "n_0000000003"])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("ensurePath creates the parents and is idempotent", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      yield* zk.ensurePath("/services/redis/x")
      yield* zk.ensurePath("/services/redis/x")
      yield* zk.ensurePath("/")
      expect(ensemble.dump().map((n) => n.path)).toEqual(["/services", "/services/redis", "/services/redis/x"])
      expect(Option.getOrThrow(ensemble.get("/services/redis/x")).stat.version).toBe(0)
    }).pipe(Effect.provide(layerTest)))

  it.scoped("set and remove check versions; -1 means any", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      yield* zk.create("/n", bytes("a"), "persistent")
      const created = Option.getOrThrow(yield* zk.get("/n")).stat
      const stat = yield* zk.set("/n", bytes("b"), 0)
      expect(stat).toEqual({ ...created, version: 1, mzxid: String(BigInt(created.czxid) + 1n) })
      expect(yield* Effect.flip(zk.set("/n", bytes("c"), 0))).toMatchObject({ _tag: "ZkBadVersion", version: 0 })
      expect((yield* zk.set("/n", bytes("c"), -1)).version).toBe(2)
      expect(text(yield* zk.get("/n"))).toEqual(Option.some("c"))
      expect((yield* Effect.flip(zk.remove("/n", 1)))._tag).toBe("ZkBadVersion")
      yield* zk.remove("/n", 2)
      expect((yield* Effect.flip(zk.remove("/n", -1)))._tag).toBe("ZkNoNode")
      expect((yield* Effect.flip(zk.set("/n", bytes(""), -1)))._tag).toBe("ZkNoNode")
    }).pipe(Effect.provide(layerTest)))

  it.scoped("remove refuses a node with children; children are sorted, empty when missing", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      yield* zk.ensurePath("/p")
      for (const name of ["b", "c", "a"]) yield* zk.create(`/p/${name}`, bytes(""), "persistent")
      expect(yield* zk.children("/p")).toEqual(["a", "b", "c"])
      expect(yield* zk.children("/nope")).toEqual([])
      const error = yield* Effect.flip(zk.remove("/p", -1))
      expect(error._tag).toBe("ZkError")
      expect(error.message).toContain("NOT_EMPTY")
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryZooKeeper: transactions", () => {
  it.scoped("a multi applies every op as one transaction: one zxid for all", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      yield* zk.ensurePath("/svc/epoch")
      yield* zk.transaction([
        { op: "check", path: "/svc/epoch", version: 0 },
        { op: "create", path: "/svc/master", data: bytes("m1"), mode: "ephemeral" },
        { op: "set", path: "/svc/epoch", data: bytes(""), version: 0 }
      ])
      const master = Option.getOrThrow(yield* zk.get("/svc/master")).stat
      const epoch = Option.getOrThrow(yield* zk.get("/svc/epoch")).stat
      expect(epoch.version).toBe(1)
      expect(epoch.mzxid).toBe(master.czxid)
      yield* zk.transaction([
        { op: "remove", path: "/svc/master", version: 0 },
        { op: "create", path: "/svc/master", data: bytes("m2"), mode: "ephemeral" }
      ])
      expect(BigInt(Option.getOrThrow(yield* zk.get("/svc/master")).stat.czxid)).toBeGreaterThan(BigInt(master.czxid))
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a failed multi changes nothing, fires no watch, and fails like src/ZooKeeper.ts", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      yield* zk.ensurePath("/svc/epoch")
      const watched = yield* follow(zk.watchChildren("/svc"))
      expect(yield* Queue.take(watched)).toEqual(["epoch"])
      const stale = yield* Effect.flip(
        zk.transaction([
          { op: "create", path: "/svc/master", data: bytes(""), mode: "ephemeral" },
          { op: "set", path: "/svc/epoch", data: bytes(""), version: 3 }
        ])
      )
      expect(stale).toMatchObject({ _tag: "ZkBadVersion", path: "/svc/master, /svc/epoch", version: -1 })
      const missing = yield* Effect.flip(zk.transaction([{ op: "check", path: "/nope", version: -1 }]))
      expect(missing).toMatchObject({ _tag: "ZkNoNode", path: "/nope" })
      expect(ensemble.dump().map((n) => n.path)).toEqual(["/svc", "/svc/epoch"])
      expect(Option.getOrThrow(ensemble.get("/svc")).stat.version).toBe(0)
      expect(yield* settle(watched)).toEqual([])
      // The sequence counter was not consumed either.
      expect(yield* zk.create("/svc/n_", bytes(""), "persistent_sequential")).toBe("/svc/n_0000000001")
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryZooKeeper: sessions", () => {
  it.scoped("expire deletes the session's ephemerals and opens a new session", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const a = yield* ensemble.session()
      const b = yield* ensemble.session()
      const states = yield* follow(a.session.changes)
      yield* a.create("/ea", bytes(""), "ephemeral")
      yield* a.create("/pa", bytes(""), "persistent")
      yield* b.create("/eb", bytes(""), "ephemeral")
      const before = yield* SubscriptionRef.get(a.session)
      expect(before).toMatchObject({ status: "connected", generation: 1 })
      expect(ensemble.ephemeralsOf(before.sessionId!)).toEqual(["/ea"])

      yield* TestClock.adjust("3 seconds")
      yield* ensemble.expire(a)
      expect(ensemble.dump().map((n) => n.path)).toEqual(["/eb", "/pa"])
      const seen: Array<SessionInfo> = yield* settle(states)
      expect(seen.map((s) => [s.status, s.generation])).toEqual([["connected", 1], ["expired", 1], ["connected", 2]])
      expect(seen[1]!.sessionId).toBe(before.sessionId)
      expect(seen[2]!.sessionId).not.toBe(before.sessionId)
      expect(seen[2]!.since).toBe(3000)
      // The new session works and owns what it creates.
      yield* a.create("/ea", bytes(""), "ephemeral")
      expect(Option.getOrThrow(ensemble.get("/ea")).stat.ephemeralOwner).toBe(seen[2]!.sessionId)
    }))

  it.effect("closing the scope ends the session and deletes its ephemerals", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      yield* Effect.scoped(
        Effect.gen(function* () {
          const zk = yield* ensemble.session()
          yield* zk.create("/e", bytes(""), "ephemeral")
          yield* zk.create("/p", bytes(""), "persistent")
          expect(ensemble.dump()).toHaveLength(2)
        })
      )
      expect(ensemble.dump().map((n) => n.path)).toEqual(["/p"])
    }))

  it.scoped("a disconnected client fails fast with ZkConnectionLost and keeps its session", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      yield* zk.create("/e", bytes(""), "ephemeral")
      const id = ensemble.sessionIdOf(zk)
      yield* ensemble.disconnect(zk)
      expect((yield* SubscriptionRef.get(zk.session)).status).toBe("disconnected")
      expect(yield* Effect.flip(zk.get("/e"))).toMatchObject({ _tag: "ZkConnectionLost", op: "get", path: "/e" })
      expect((yield* Effect.flip(zk.create("/x", bytes(""), "persistent")))._tag).toBe("ZkConnectionLost")
      // The ensemble still has the session: its ephemeral stays.
      expect(ensemble.ephemeralsOf(id)).toEqual(["/e"])
      yield* ensemble.reconnect(zk)
      expect(yield* SubscriptionRef.get(zk.session)).toMatchObject({ status: "connected", generation: 1, sessionId: id })
      expect(Option.isSome(yield* zk.get("/e"))).toBe(true)
    }).pipe(Effect.provide(layerTest)))

  it.scoped("expiry during a partition: ephemerals go at once, the client learns on reconnect", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const zk = yield* ensemble.session()
      const states = yield* follow(zk.session.changes)
      yield* zk.create("/e", bytes(""), "ephemeral")
      yield* ensemble.disconnect(zk)
      yield* ensemble.expire(ensemble.sessionIdOf(zk))
      expect(ensemble.get("/e")).toEqual(Option.none())
      expect((yield* settle(states)).map((s) => s.status)).toEqual(["connected", "disconnected"])
      yield* ensemble.reconnect(zk)
      expect((yield* settle(states)).map((s) => [s.status, s.generation])).toEqual([["expired", 1], ["connected", 2]])
    }))

  it.effect("a client closed while disconnected leaves its ephemerals until the session expires", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const id = yield* Effect.scoped(
        Effect.gen(function* () {
          const zk = yield* ensemble.session()
          yield* zk.create("/e", bytes(""), "ephemeral")
          yield* ensemble.disconnect(zk)
          return ensemble.sessionIdOf(zk)
        })
      )
      expect(ensemble.ephemeralsOf(id)).toEqual(["/e"])
      yield* ensemble.expire(id)
      expect(ensemble.dump()).toEqual([])
    }))
})

describe("InMemoryZooKeeper: watches", () => {
  it.scoped("watchData follows create, set and remove, and re-arms each time", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      const values = yield* follow(zk.watchData("/w"))
      expect(yield* Queue.take(values)).toEqual(Option.none())
      yield* zk.create("/w", bytes("a"), "persistent")
      expect(text(yield* Queue.take(values))).toEqual(Option.some("a"))
      yield* zk.set("/w", bytes("b"), -1)
      const changed = yield* Queue.take(values)
      expect(text(changed)).toEqual(Option.some("b"))
      expect(Option.getOrThrow(changed).stat.version).toBe(1)
      yield* zk.remove("/w", -1)
      expect(yield* Queue.take(values)).toEqual(Option.none())
      // Exactly one one-shot watch is armed at a time.
      yield* TestClock.adjust(0)
      expect(ensemble.watchCount("/w")).toEqual({ data: 1, children: 0 })
      expect(yield* settle(values)).toEqual([])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("watchData sees other sessions' changes and keeps going after its own session expires", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const watcher = yield* ensemble.session()
      const writer = yield* ensemble.session()
      const values = yield* follow(Stream.map(watcher.watchData("/m"), text))
      expect(yield* Queue.take(values)).toEqual(Option.none())
      yield* watcher.create("/m", bytes("mine"), "ephemeral")
      expect(yield* Queue.take(values)).toEqual(Option.some("mine"))

      yield* ensemble.expire(watcher)
      // The old session's ephemeral is gone, and the new session re-reads.
      expect(yield* Queue.take(values)).toEqual(Option.none())
      yield* writer.create("/m", bytes("theirs"), "ephemeral")
      expect(yield* Queue.take(values)).toEqual(Option.some("theirs"))
      yield* ensemble.expire(writer)
      expect(yield* Queue.take(values)).toEqual(Option.none())
      // No watch of the expired sessions is left behind: only the live stream's.
      yield* TestClock.adjust(0)
      expect(ensemble.watchCount("/m")).toEqual({ data: 1, children: 0 })
    }))

  it.scoped("watchChildren follows children added and removed", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const values = yield* follow(zk.watchChildren("/members"))
      expect(yield* Queue.take(values)).toEqual([])
      yield* zk.ensurePath("/members")
      yield* zk.create("/members/b", bytes(""), "ephemeral")
      // Creating the parent and a child before the re-read: one value, like ZooKeeper.
      expect(yield* Queue.take(values)).toEqual(["b"])
      yield* zk.create("/members/a", bytes(""), "ephemeral")
      expect(yield* Queue.take(values)).toEqual(["a", "b"])
      yield* zk.remove("/members/b", -1)
      expect(yield* Queue.take(values)).toEqual(["a"])
      // Data changes of a child are not child events.
      yield* zk.set("/members/a", bytes("x"), -1)
      expect(yield* settle(values)).toEqual([])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("events during a disconnection are delivered on reconnection", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const watcher = yield* ensemble.session()
      const writer = yield* ensemble.session()
      const values = yield* follow(Stream.map(watcher.watchData("/k"), text))
      expect(yield* Queue.take(values)).toEqual(Option.none())
      yield* ensemble.disconnect(watcher)
      yield* writer.create("/k", bytes("1"), "persistent")
      expect(yield* settle(values)).toEqual([])
      yield* ensemble.reconnect(watcher)
      expect(yield* Queue.take(values)).toEqual(Option.some("1"))
    }))

  it.scoped("a watch started while disconnected retries with backoff and reads once reconnected", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      yield* zk.create("/k", bytes("v"), "persistent")
      yield* ensemble.disconnect(zk)
      const values = yield* follow(Stream.map(zk.watchData("/k"), text))
      yield* TestClock.adjust("30 seconds")
      expect(yield* settle(values)).toEqual([])
      yield* ensemble.reconnect(zk)
      // The production stream retries on its reconnect schedule (at most 5 s apart).
      yield* TestClock.adjust("5 seconds")
      expect(yield* settle(values)).toEqual([Option.some("v")])
    }).pipe(Effect.provide(layerTest)))

  it.scoped("a watch stream interrupted with its scope leaves the session usable", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const first = yield* Effect.scoped(Effect.flatMap(follow(zk.watchData("/x")), Queue.take))
      expect(first).toEqual(Option.none())
      const exit = yield* Effect.exit(zk.create("/x", bytes(""), "persistent"))
      expect(Exit.isSuccess(exit)).toBe(true)
    }).pipe(Effect.provide(layerTest)))
})

describe("InMemoryZooKeeper: sync and the negotiated timeout", () => {
  it.scoped("sync succeeds while connected and fails with ZkConnectionLost while disconnected; timeoutMs is the ensemble's", () =>
    Effect.gen(function* () {
      const zk = yield* ZooKeeper
      const ensemble = yield* TestZooKeeper
      expect((yield* SubscriptionRef.get(zk.session)).timeoutMs).toBe(ensemble.sessionTimeoutMs)
      yield* zk.sync("/services")
      yield* ensemble.disconnect(zk)
      expect((yield* Effect.flip(zk.sync("/services")))._tag).toBe("ZkConnectionLost")
      expect((yield* SubscriptionRef.get(zk.session)).timeoutMs).toBe(ensemble.sessionTimeoutMs)
      yield* ensemble.reconnect(zk)
      yield* zk.sync("/services")
    }).pipe(Effect.provide(layerTest)))
})
