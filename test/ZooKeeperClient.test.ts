import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Logger, Option, Stream, SubscriptionRef, TestClock } from "effect"
import { createRequire } from "node:module"
import * as net from "node:net"
import zookeeper from "node-zookeeper-client"
import { type SessionInfo, type WatchPrimitives, watchDataStream, ZkConnectionLost, ZkError, type ZkFailure, type ZkNode } from "../src/ZooKeeper.js"
import { connectionString, make } from "../src/ZooKeeperClient.js"
import { currentServer, dropConnection, harden, withExactVersion } from "../src/ZooKeeperInternals.js"
import { livenessFor, nextSession } from "../src/ZooKeeperSession.js"

describe("connectionString", () => {
  it.each([
    [["127.0.0.1"], "127.0.0.1:2181"],
    [["localhost"], "localhost:2181"],
    [["zk1.example.com"], "zk1.example.com:2181"],
    [["zk1:2182"], "zk1:2182"],
    [["127.0.0.1:2181"], "127.0.0.1:2181"],
    [["10.0.0.1:1"], "10.0.0.1:1"],
    [["zk1", "zk2:2182", "zk3"], "zk1:2181,zk2:2182,zk3:2181"],
    [["10.0.0.1:2181", "10.0.0.2:2181", "10.0.0.3:2181"], "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"]
  ])("%j → %s", (hosts, expected) => {
    expect(connectionString(hosts)).toBe(expected)
  })

  it("keeps the order of the hosts", () => {
    const hosts = ["c", "a", "b"]
    expect(connectionString(hosts).split(",")).toEqual(["c:2181", "a:2181", "b:2181"])
  })

  // What node-zookeeper-client (the client ZooKeeper.ts hands the string to) makes of it.
  const require = createRequire(import.meta.url)
  const Parser = require("node-zookeeper-client/lib/ConnectionStringParser.js") as new (s: string) => {
    getServers(): Array<{ host: string; port: number | string }>
  }
  const servers = (hosts: ReadonlyArray<string>) =>
    new Parser(connectionString(hosts))
      .getServers()
      .map((s) => `${s.host}|${Number(s.port)}`)
      .sort()

  it("gives the ZooKeeper client every host with its port", () => {
    expect(servers(["zk1", "zk2:2182", "10.0.0.3"])).toEqual(["10.0.0.3|2181", "zk1|2181", "zk2|2182"])
  })

  // node-zookeeper-client splits every server on ":": IPv6 literals are rejected by the config
  // (test/Config.test.ts) rather than handed to it.
  it("would misread an IPv6 literal, which is why the config refuses them", () => {
    expect(servers(["[::1]:2182"])).not.toEqual(["::1|2182"])
  })
})

describe("nextSession", () => {
  const connected: SessionInfo = { status: "connected", sessionId: "a1", generation: 1, since: 1000, timeoutMs: 6000 }

  it("a new session bumps the generation and records the negotiated timeout", () => {
    const initial: SessionInfo = { status: "connecting", sessionId: null, generation: 0, since: 0 }
    expect(nextSession(initial, { _tag: "Established", sessionId: "a1", timeoutMs: 4000, at: 10 })).toEqual({
      status: "connected",
      sessionId: "a1",
      generation: 1,
      since: 10,
      timeoutMs: 4000
    })
  })

  it("a lost connection is dated from the last answer, and stays so however often it is reported", () => {
    const lost = nextSession(connected, { _tag: "Lost", generation: 1, lastAnswerAt: 5000 })
    expect(lost).toEqual({ ...connected, status: "disconnected", since: 5000 })
    // The library's own DISCONNECTED, reported after the liveness loop dropped the socket.
    expect(nextSession(lost, { _tag: "Lost", generation: 1, lastAnswerAt: 7000 })).toBe(lost)
    expect(nextSession(lost, { _tag: "Resumed", generation: 1, at: 8000 })).toEqual({ ...connected, since: 8000 })
  })

  it("expired stays expired: late events of the dead client change nothing until a new session", () => {
    const expired = nextSession(connected, { _tag: "Expired", generation: 1, at: 9000 })
    expect(expired).toEqual({ ...connected, status: "expired", since: 9000 })
    expect(nextSession(expired, { _tag: "Lost", generation: 1, lastAnswerAt: 9500 })).toBe(expired)
    expect(nextSession(expired, { _tag: "Resumed", generation: 1, at: 9600 })).toBe(expired)
    expect(nextSession(expired, { _tag: "Established", sessionId: "b2", timeoutMs: 6000, at: 9700 })).toMatchObject({
      status: "connected",
      sessionId: "b2",
      generation: 2
    })
  })

  it("events of an older generation are ignored", () => {
    const gen2: SessionInfo = { ...connected, generation: 2 }
    expect(nextSession(gen2, { _tag: "Lost", generation: 1, lastAnswerAt: 1 })).toBe(gen2)
    expect(nextSession(gen2, { _tag: "Expired", generation: 1, at: 1 })).toBe(gen2)
  })
})

describe("livenessFor", () => {
  it.each([[6000], [4000], [30000]])("session %i ms: probes at T/6, gives up at T/3, leaving 2T/3 to move", (t) => {
    const l = livenessFor(t)
    expect(l.probeEveryMs).toBe(Math.floor(t / 6))
    expect(l.deadlineMs).toBe(Math.floor(t / 3))
    expect(t - l.deadlineMs).toBeGreaterThanOrEqual((2 * t) / 3 - 1)
  })
  it.each([
    [6000, 1000, 500, 1000],
    [6000, 3000, 1000, 2000],
    [6000, 0, 50, 100]
  ])("session %i ms, silence limit %i ms: probes at %i, gives up at %i (never past the limit, unless under the floor)", (t, limit, probe, deadline) => {
    expect(livenessFor(t, limit)).toEqual({ probeEveryMs: probe, deadlineMs: deadline })
  })
})

// The driver reaches into node-zookeeper-client in two places (src/ZooKeeperClient.ts, "Library
// internals"); these fail if a new version of the library moves them.
describe("node-zookeeper-client internals the driver relies on", () => {
  it("transactions still turn version 0 into -1, and withExactVersion puts 0 back", () => {
    const client = zookeeper.createClient("127.0.0.1:1")
    const ops = (tx: zookeeper.Transaction) => (tx as unknown as { ops: Array<{ version: number }> }).ops.map((o) => o.version)
    expect(ops(client.transaction().check("/a", 0).remove("/b", 0).setData("/c", Buffer.from("x"), 0))).toEqual([-1, -1, -1])
    const tx = client.transaction()
    withExactVersion(tx.check("/a", 0), 0)
    withExactVersion(tx.remove("/b", 0), 0)
    withExactVersion(tx.setData("/c", Buffer.from("x"), 0), 0)
    withExactVersion(tx.check("/d", 3), 3)
    expect(ops(tx)).toEqual([0, 0, 0, 3])
  })

  it.live("currentServer names the socket's peer; dropConnection closes it and the client dials the next server", () =>
    Effect.gen(function* () {
      const accepted: Array<net.Socket> = []
      const server = net.createServer((s) => void accepted.push(s))
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => {
          for (const s of accepted) s.destroy()
          server.close()
        })
      )
      const port = (server.address() as net.AddressInfo).port
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => zookeeper.createClient(`127.0.0.1:${port}`, { sessionTimeout: 6000, spinDelay: 10, retries: 0 })),
        (c) => Effect.sync(() => c.close())
      )
      client.connect()
      yield* waitFor(() => accepted.length === 1 && currentServer(client) !== undefined)
      expect(currentServer(client)).toBe(`127.0.0.1:${port}`)
      dropConnection(client)
      // The library reconnects by itself (to the next server: here the same one).
      yield* waitFor(() => accepted.length === 2)
    }).pipe(Effect.scoped)
  )
})

describe("watch streams", () => {
  it.effect("a failure other than a lost connection is logged once per change, and its end once", () =>
    Effect.gen(function* () {
      const session = yield* SubscriptionRef.make<SessionInfo>({ status: "connected", sessionId: "1", generation: 1, since: 0 })
      const results: Array<Effect.Effect<Option.Option<ZkNode>, ZkFailure>> = [
        Effect.fail(new ZkConnectionLost({ op: "watch", path: "/x" })),
        ...Array.from({ length: 4 }, () => Effect.fail(new ZkError({ op: "watch", path: "/x", reason: "NO_AUTH[-102]" }))),
        ...Array.from({ length: 2 }, () => Effect.fail(new ZkError({ op: "watch", path: "/x", reason: "MARSHALLING_ERROR[-5]" }))),
        Effect.succeed(Option.none())
      ]
      let calls = 0
      const prims: WatchPrimitives = {
        session,
        readAndArm: <A>() => (results[Math.min(calls++, results.length - 1)] as unknown as Effect.Effect<A, ZkFailure>)
      }
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(String(Array.isArray(message) ? message.join(" ") : message)))
      const fiber = yield* watchDataStream(prims, "/x").pipe(
        Stream.take(1),
        Stream.runCollect,
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        Effect.fork
      )
      // The backoff between retries runs on the TestClock.
      for (let i = 0; i < 10; i++) yield* TestClock.adjust("10 seconds")
      const first = yield* Fiber.join(fiber)
      expect([...first]).toEqual([Option.none()])
      expect(calls).toBe(8)
      expect(logs).toEqual([
        "watch of /x failed: ZooKeeper watch /x failed: NO_AUTH[-102]; retrying with backoff until it works",
        "watch of /x failed: ZooKeeper watch /x failed: MARSHALLING_ERROR[-5]; retrying with backoff until it works",
        "watch of /x works again"
      ])
    })
  )
})

const waitFor = (cond: () => boolean, tries = 200) =>
  Effect.gen(function* () {
    for (let i = 0; i < tries && !cond(); i++) yield* Effect.sleep("10 millis")
    expect(cond()).toBe(true)
  })

describe("connecting", () => {
  it.live("an unreachable ensemble: each attempt says which server failed and why", () =>
    Effect.gen(function* () {
      const closedPort = yield* Effect.async<number>((resume) => {
        const s = net.createServer()
        s.listen(0, "127.0.0.1", () => {
          const port = (s.address() as net.AddressInfo).port
          s.close(() => resume(Effect.succeed(port)))
        })
      })
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(String(Array.isArray(message) ? message.join(" ") : message)))
      const fiber = yield* make({
        hosts: [`127.0.0.1:${closedPort}`, "no-such-host.invalid"],
        sessionTimeout: "6 seconds",
        connectTimeout: "1 second",
        requestTimeout: "2 seconds"
      }).pipe(Effect.scoped, Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Effect.fork)
      yield* waitFor(() => logs.some((l) => l.includes("unreachable")), 500)
      yield* Fiber.interrupt(fiber)
      const line = logs.find((l) => l.includes("unreachable"))!
      expect(line).toContain(`ZooKeeper 127.0.0.1:${closedPort},no-such-host.invalid:2181 unreachable (attempt 1): `)
      expect(line).toContain(`127.0.0.1:${closedPort} refused the connection`)
      expect(line).toMatch(/no-such-host\.invalid:2181 (has no address \(DNS E[A-Z_]+\)|timed out after \d+ ms)/)
    })
  )
})

describe("a connection dropped in the middle of a reply", () => {
  /** A fake server that answers each connection's first bytes with `reply(n)` (n = 1, 2, …), if any. */
  const fakeServer = (reply: (n: number) => Buffer | null) =>
    Effect.gen(function* () {
      const accepted: Array<net.Socket> = []
      const server = net.createServer((s) => {
        accepted.push(s)
        const n = accepted.length
        s.once("data", () => {
          const r = reply(n)
          if (r !== null) s.write(r)
        })
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () =>
          Effect.sync(() => {
            for (const s of accepted) s.destroy()
            server.close()
          })
      )
      return { accepted, port: (server.address() as net.AddressInfo).port }
    })
  const clientOf = (port: number) =>
    Effect.acquireRelease(
      Effect.sync(() => zookeeper.createClient(`127.0.0.1:${port}`, { sessionTimeout: 6000, spinDelay: 10, retries: 0 })),
      (c) => Effect.sync(() => c.close())
    )
  const pending = (c: zookeeper.Client) => (c as unknown as { connectionManager: { pendingBuffer: Buffer | null } }).connectionManager.pendingBuffer
  /** 6 bytes of a 40-byte reply: the rest never comes. */
  const partial = Buffer.from([0, 0, 0, 40, 1, 2])

  it.live("the library keeps the partial reply for the next socket; hardened, each socket starts clean", () =>
    Effect.gen(function* () {
      const { accepted, port } = yield* fakeServer((n) => (n === 1 ? partial : null))
      const raw = yield* clientOf(port)
      raw.connect()
      yield* waitFor(() => pending(raw) !== null)
      dropConnection(raw)
      yield* waitFor(() => accepted.length === 2)
      // The flaw this guards against: the old socket's bytes wait to prefix the new one's reply.
      expect(pending(raw)?.equals(partial)).toBe(true)

      const second = yield* fakeServer((n) => (n === 1 ? partial : null))
      const hardened = yield* clientOf(second.port)
      harden(hardened, () => {})
      hardened.connect()
      yield* waitFor(() => pending(hardened) !== null)
      dropConnection(hardened)
      yield* waitFor(() => second.accepted.length === 2)
      expect(pending(hardened)).toBeNull()
    }).pipe(Effect.scoped)
  )

  it.live("a reply the library cannot parse drops the connection instead of throwing out of a socket event", () =>
    Effect.gen(function* () {
      // A complete 4-byte "handshake reply": reading its timeout runs past the end and throws.
      const { accepted, port } = yield* fakeServer(() => Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]))
      const client = yield* clientOf(port)
      const errors: Array<unknown> = []
      harden(client, (e) => void errors.push(e))
      client.connect()
      yield* waitFor(() => errors.length >= 1 && accepted.length >= 2)
      expect(String(errors[0])).toMatch(/RangeError|out of range|outside/i)
    }).pipe(Effect.scoped)
  )
})
