/**
 * The node-zookeeper-client driver (src/ZooKeeperClient.ts) against real ZooKeeper servers:
 * versioned transactions honour version 0, the sync barrier, and the driver's own liveness
 * (DESIGN.md invariant 8) when the server it uses freezes, including a session that expires, and
 * the quorum-backed probe when the server answers locally without a quorum.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Stream, SubscriptionRef } from "effect"
import type { SessionInfo } from "../../src/ZooKeeper.js"
import { make } from "../../src/ZooKeeperClient.js"
import { waitUntil, zkSessionsOn, zooKeeper, zooKeeperEnsemble } from "../support/servers.js"
import { tcpForwarder } from "../support/tcpForwarder.js"

const bytes = (s: string) => new TextEncoder().encode(s)

const driver = (hosts: ReadonlyArray<string>, sessionTimeoutMs: number) =>
  make({ hosts, sessionTimeout: `${sessionTimeoutMs} millis`, connectTimeout: "3 seconds", requestTimeout: "5 seconds" })

/** Every session state the driver publishes from now on, in order. */
const recordSessions = (session: SubscriptionRef.SubscriptionRef<SessionInfo>) =>
  Effect.gen(function* () {
    const seen: Array<SessionInfo> = []
    // `changes` starts with the current value: only what comes after it.
    yield* Effect.forkScoped(Stream.runForEach(Stream.drop(session.changes, 1), (s) => Effect.sync(() => void seen.push(s))))
    return seen
  })

describe("ZooKeeperClient against real ZooKeeper", () => {
  it.scopedLive("transactions honour version 0: check/remove/set at 0 fail on a znode at version 1, succeed at version 0", () =>
    Effect.gen(function* () {
      const server = yield* zooKeeper({ tickTime: 500 })
      const zk = yield* driver([server.connectString], 6000)
      yield* zk.create("/v", bytes("a"), "persistent")
      expect((yield* zk.set("/v", bytes("b"), 0)).version).toBe(1)

      for (const op of [
        { op: "check", path: "/v", version: 0 },
        { op: "remove", path: "/v", version: 0 },
        { op: "set", path: "/v", data: bytes("c"), version: 0 }
      ] as const) {
        const error = yield* Effect.flip(zk.transaction([op]))
        expect(error._tag, `${op.op} /v at version 0`).toBe("ZkBadVersion")
      }
      const still = yield* zk.get("/v")
      expect(Option.map(still, (n) => [n.stat.version, new TextDecoder().decode(n.data)])).toEqual(Option.some([1, "b"]))

      // Version 0 is a version, not "any": it matches a znode that was never changed.
      yield* zk.create("/w", bytes("x"), "persistent")
      yield* zk.transaction([
        { op: "check", path: "/w", version: 0 },
        { op: "remove", path: "/w", version: 0 }
      ])
      expect(Option.isNone(yield* zk.get("/w"))).toBe(true)
    })
  )

  it.scopedLive("sync: a barrier through the quorum, then a read on another server sees a write made through a second session", () =>
    Effect.gen(function* () {
      const { servers } = yield* zooKeeperEnsemble(3, { tickTime: 500 })
      const reader = yield* driver([servers[0]!.connectString], 4000)
      const writer = yield* driver([servers[1]!.connectString], 4000)
      for (let i = 0; i < 10; i++) {
        yield* writer.create(`/s${i}`, bytes(String(i)), "persistent")
        yield* reader.sync(`/s${i}`)
        expect(Option.isSome(yield* reader.get(`/s${i}`)), `write ${i} seen after sync`).toBe(true)
      }
    })
  )

  it.scopedLive("a frozen server: disconnected as of the last answer, moved to another server within the session timeout, same session", () =>
    Effect.gen(function* () {
      const sessionTimeoutMs = 3000
      const { servers, hosts } = yield* zooKeeperEnsemble(3, { tickTime: 500 })
      const zk = yield* driver(hosts, sessionTimeoutMs)
      const start = yield* SubscriptionRef.get(zk.session)
      expect(start).toMatchObject({ status: "connected", generation: 1, timeoutMs: sessionTimeoutMs })
      const sid = start.sessionId!
      const frozen = yield* waitUntil(
        "the server of the driver's session",
        Effect.map(Effect.forEach(servers, (s) => Effect.option(zkSessionsOn(s.clientPort))), (on) => {
          const i = on.findIndex((o) => Option.isSome(o) && o.value.has(sid))
          return i < 0 ? Option.none() : Option.some(servers[i]!)
        }),
        { timeout: "10 seconds", interval: "100 millis" }
      )
      const seen = yield* recordSessions(zk.session)
      const faultAt = Date.now()
      yield* frozen.signal("SIGSTOP")
      yield* Effect.addFinalizer(() => frozen.signal("SIGCONT"))
      const back = yield* waitUntil(
        "the session connected again",
        Effect.sync(() => Option.fromNullable(seen.find((s) => s.status === "connected"))),
        { timeout: `${2 * sessionTimeoutMs} millis`, interval: "20 millis" }
      )
      const backAt = Date.now()
      const lost = seen.filter((s) => s.status === "disconnected")
      expect(lost, `one disconnection, dated once: ${JSON.stringify(seen)} (frozen at ${faultAt})`).toHaveLength(1)
      // The last answer came before the freeze (a probe goes out every T/6 = 500 ms).
      expect(lost[0]!.since).toBeLessThanOrEqual(faultAt + 50)
      expect(lost[0]!.since).toBeGreaterThanOrEqual(faultAt - sessionTimeoutMs / 6 - 200)
      expect(backAt - faultAt, "moved within the session timeout").toBeLessThan(sessionTimeoutMs)
      expect(back).toMatchObject({ sessionId: sid, generation: 1 })
      const others = servers.filter((s) => s !== frozen)
      const on = yield* Effect.forEach(others, (s) => zkSessionsOn(s.clientPort))
      expect(on.some((o) => o.has(sid)), "the session is on another server").toBe(true)
      // Requests work through the new server.
      yield* zk.sync("/")
      expect(seen.every((s) => s.status !== "expired")).toBe(true)
    })
  )

  it.scopedLive("quorum probe: a server whose peers froze still answers reads; the quorum-probing session is lost within the deadline, the local-probing one stays connected", () =>
    Effect.gen(function* () {
      // tickTime 2000 and syncLimit 2: the server notices its lost quorum only after ~4 s.
      const { servers } = yield* zooKeeperEnsemble(3, { tickTime: 2000 })
      const [alone, ...peers] = servers
      const silenceLimitMs = 1000
      const probing = (quorum: boolean) =>
        Effect.tap(
          make({
            hosts: [alone!.connectString],
            sessionTimeout: "8000 millis",
            connectTimeout: "3 seconds",
            requestTimeout: "5 seconds",
            silenceLimit: `${silenceLimitMs} millis`
          }),
          (zk) => zk.quorumProbe(quorum)
        )
      const master = yield* probing(true)
      const replica = yield* probing(false)
      yield* master.create("/q", bytes("x"), "persistent")
      const masterSeen = yield* recordSessions(master.session)
      const replicaSeen = yield* recordSessions(replica.session)
      // Let a quorum probe or two go through first: idle, they are answered.
      yield* Effect.sleep(`${silenceLimitMs} millis`)
      expect(masterSeen, "a healthy ensemble answers the quorum probe").toEqual([])
      const faultAt = Date.now()
      yield* Effect.forEach(peers, (p) => p.signal("SIGSTOP"), { discard: true })
      yield* Effect.addFinalizer(() => Effect.forEach(peers, (p) => p.signal("SIGCONT"), { discard: true }))
      const lost = yield* waitUntil(
        "the quorum-probing session lost",
        Effect.sync(() => Option.fromNullable(masterSeen.find((s) => s.status === "disconnected"))),
        { timeout: "10 seconds", interval: "20 millis" }
      )
      const lostAt = Date.now()
      // As of the last request the quorum answered, sent before the cut (one every half deadline).
      expect(lost.since).toBeLessThanOrEqual(faultAt + 50)
      expect(lost.since).toBeGreaterThanOrEqual(faultAt - silenceLimitMs / 2 - 300)
      expect(lostAt - faultAt, "lost within the deadline of the last quorum answer").toBeLessThan(silenceLimitMs + 700)
      // The same server still answers the local probe, and reads.
      expect(yield* replica.get("/q").pipe(Effect.map(Option.isSome)), "reads answered locally without a quorum").toBe(true)
      expect(replicaSeen, `the local-probing session: ${JSON.stringify(replicaSeen)}`).toEqual([])
    })
  )

  it.scopedLive("an expired session stays expired until the new one: no later 'disconnected' of the old client, since kept", () =>
    Effect.gen(function* () {
      const sessionTimeoutMs = 2000
      const server = yield* zooKeeper({ tickTime: 500 })
      // The client reaches the only server through a forwarder: cut, it has nowhere to move.
      const path = yield* tcpForwarder(server.clientPort)
      const zk = yield* driver([path.address], sessionTimeoutMs)
      const first = yield* SubscriptionRef.get(zk.session)
      const seen = yield* recordSessions(zk.session)
      // Cut for twice the session while the server runs: the server expires the session (a
      // frozen server could not, and the client might win the race back once it thaws).
      yield* path.block
      yield* Effect.sleep(`${2 * sessionTimeoutMs} millis`)
      yield* path.unblock
      yield* waitUntil(
        "a new session",
        Effect.sync(() => Option.fromNullable(seen.find((s) => s.status === "connected" && s.generation === 2))),
        { timeout: "20 seconds", interval: "20 millis" }
      )
      const old = seen.filter((s) => s.generation === 1).map((s) => [s.status, s.since] as const)
      expect(old.map(([s]) => s), `the old session's states: ${JSON.stringify(seen)}`).toEqual(["disconnected", "expired"])
      const gen2 = seen.filter((s) => s.generation === 2)
      expect(gen2.every((s) => s.status === "connected")).toBe(true)
      expect(gen2[0]!.sessionId).not.toBe(first.sessionId)
      // Whatever the dead client still reports, nothing moves once the new session is there.
      const settled = seen.length
      yield* Effect.sleep("1 second")
      expect(seen.slice(settled)).toEqual([])
    })
  )
})
