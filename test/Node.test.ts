/**
 * Whole dictator nodes (src/Node.ts) on one in-memory ZooKeeper ensemble and one simulated Redis
 * world, time driven by TestClock. Each test asserts what the outside world sees: the master
 * znode (JSON and owner), the roles and replication targets of the Redis servers, the commands
 * they received.
 */
import { describe, expect, it, vi } from "@effect/vitest"
import { Chunk, Duration, Effect, Exit, Fiber, Layer, Option, Queue, Random, Schedule, Stream, TestClock } from "effect"
import { DictatorConfig } from "../src/Config.js"
import * as Node from "../src/Node.js"
import type { RedisAddress } from "../src/Redis.js"
import { backoff } from "../src/Retry.js"
import { ZooKeeper, type ZkNode } from "../src/ZooKeeper.js"
import { type Cluster, type ClusterNode, defaultConfig, makeCluster, type NodeSpec, withTestSettings } from "./support/cluster.js"
import { layer as redisLayer } from "./support/InMemoryRedis.js"
import { ZkEnsemble } from "./support/InMemoryZooKeeper.js"

// Each test takes well under a second of real time; the margin is for a loaded 2-core machine.
vi.setConfig({ testTimeout: 15_000 })

// ---------------------------------------------------------------------------------------------
// Helpers

const spec = (i: number, extra: Omit<Partial<NodeSpec>, "name" | "host"> = {}): NodeSpec => ({
  name: `n${i}`,
  host: `10.0.0.${i}`,
  ...extra
})

const replicaOf = (a: RedisAddress) => `REPLICAOF ${a.host} ${a.port}`
const bytes = (s: string) => new TextEncoder().encode(s)

/** Commands a node's Redis received from index `from` on. */
const commandsOf = (c: Cluster, n: ClusterNode, from = 0) => Effect.map(c.world.commands(n.address), (l) => l.slice(from))
const commandCount = (c: Cluster, n: ClusterNode) => Effect.map(c.world.commands(n.address), (l) => l.length)

/** The master's Redis is a master, every other running node's Redis replicates from it with its link up. */
const settledOn = (c: Cluster, master: ClusterNode) =>
  Effect.gen(function* () {
    if (c.masterName() !== master.name || c.master()?.owner !== master.sessionId()) return false
    if ((yield* c.world.inspect(master.address)).role !== "master") return false
    for (const n of c.nodes) {
      if (n === master || n.state() !== "running" || !(yield* n.api.status).enabled) continue
      const s = yield* c.world.inspect(n.address)
      if (s.role !== "replica" || s.master === null || s.master.host !== master.address.host || !s.linkUp) return false
    }
    return true
  })

/** `f`'s Redis replicates from `m`'s with its link up. */
const follows = (c: Cluster, f: ClusterNode, m: ClusterNode) =>
  Effect.map(c.world.inspect(f.address), (s) => s.role === "replica" && s.master?.host === m.address.host && s.master.port === m.address.port && s.linkUp)

/** Starts n1..n3 (healthy masters of their own, offset 0) and waits for n1 to be the master everyone follows. */
const threeNodes = (c: Cluster, extra: ReadonlyArray<Omit<Partial<NodeSpec>, "name" | "host">> = []) =>
  Effect.gen(function* () {
    const nodes = [] as Array<ClusterNode>
    for (const i of [1, 2, 3]) nodes.push(yield* c.add(spec(i, extra[i - 1] ?? {})))
    const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode]
    yield* c.waitUntil("n1 master, followed by n2 and n3", () => settledOn(c, n1), { within: 3000 })
    return [n1, n2, n3] as const
  })

/** Names of the nodes whose Redis would acknowledge a write right now (a zero-byte probe; one name per server). */
const writable = (c: Cluster) =>
  Effect.filter(
    c.nodes.filter((n, i) => c.nodes.findIndex((m) => m.address.host === n.address.host && m.address.port === n.address.port) === i),
    (n) => Effect.isSuccess(c.world.write(n.address, 0))
  ).pipe(Effect.map((ns) => ns.map((n) => n.name)))

const logged = (c: Cluster, node: string, fragment: string) =>
  c.logs.some((l) => l.node === node && l.message.includes(fragment))

/** A node run the way main.ts runs it (Layer.launch), on a session the test keeps open. */
const launch = (c: Cluster, s: NodeSpec) =>
  Effect.gen(function* () {
    const zk = yield* c.ensemble.session()
    const config = DictatorConfig.fromObject({
      ...defaultConfig,
      svc_name: c.svc,
      node: { name: s.name, host: s.host, port: s.port ?? 6379 }
    })
    const fiber = yield* Layer.launch(Node.layer).pipe(
      Effect.provideService(ZooKeeper, zk),
      Effect.provide(Layer.merge(redisLayer(c.world), DictatorConfig.layerValue(config))),
      c.withLogs(s.name),
      Effect.fork
    )
    return { zk, fiber, sessionId: c.ensemble.sessionIdOf(zk) }
  })

// ---------------------------------------------------------------------------------------------

describe("Node: first election", () => {
  it.scoped("3 healthy nodes: one master znode, REPLICAOF NO ONE on its Redis, the others replicate from it", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)

        // Equal offsets and priorities: the name decides, and every node ranks the same way.
        const m = c.master()!
        expect(m.json).toMatchObject({ host: "10.0.0.1", port: "6379", name: "n1" })
        expect(m.owner).toBe(n1.sessionId())
        expect(c.ensemble.dump().filter((z) => z.path.endsWith("/master")).map((z) => z.path)).toEqual(["/services/redis/svc/master"])
        expect(c.members()).toEqual(["n1", "n2", "n3"])

        expect(yield* commandsOf(c, n1)).toContain("REPLICAOF NO ONE")
        expect((yield* commandsOf(c, n1)).filter((x) => x.startsWith("REPLICAOF ") && x !== "REPLICAOF NO ONE")).toEqual([])
        for (const f of [n2, n3]) {
          const s = yield* c.world.inspect(f.address)
          expect(s).toMatchObject({ role: "replica", master: { host: "10.0.0.1", port: 6379 }, linkUp: true })
          const replicaofs = (yield* commandsOf(c, f)).filter((x) => x.startsWith("REPLICAOF"))
          expect(replicaofs).toEqual([replicaOf(n1.address)])
        }
        // Nobody replicates from itself.
        for (const n of [n1, n2, n3]) {
          expect(yield* commandsOf(c, n)).not.toContain(replicaOf(n.address))
          expect((yield* c.world.inspect(n.address)).master?.host).not.toBe(n.address.host)
        }
        // Fencing by replicas once it has them (seen at its next health check); it takes writes and they reach the replicas.
        yield* c.waitUntil("min-replicas-to-write 1 on the master", () =>
          Effect.map(c.world.inspect(n1.address), (s) => s.config["min-replicas-to-write"] === "1"), { within: 500 })
        const offset = yield* c.world.write(n1.address, 10)
        expect((yield* c.world.inspect(n3.address)).offset).toBe(offset)
        expect(yield* writable(c)).toEqual(["n1"])
        expect((yield* Effect.forEach([n1, n2, n3], (n) => n.api.status)).map((s) => s.role)).toEqual(["master", "replica", "replica"])

        // Stable: nothing changes in the following seconds.
        const epoch = m.czxid
        const before = yield* Effect.forEach([n1, n2, n3], (n) => commandsOf(c, n))
        yield* TestClock.adjust("3 seconds")
        expect(c.master()?.czxid).toBe(epoch)
        const after = yield* Effect.forEach([n1, n2, n3], (n) => commandsOf(c, n))
        for (let i = 0; i < 3; i++) {
          const added = after[i]!.slice(before[i]!.length)
          expect(added.filter((x) => !["PING", "INFO replication"].includes(x))).toEqual([])
        }
      })
    ))
})

describe("Node: freshest replica first", () => {
  /**
   * n1 (priority 10) is master of n2 and n3; n2's link is cut while n1 takes more writes, so n3 is
   * fresher (150 against 100). Then n1's host dies: its dictator crashes and its Redis is killed.
   */
  const failover = (priorities: readonly [number, number]) =>
    Effect.gen(function* () {
      const c = yield* makeCluster()
      const [n1, n2, n3] = yield* threeNodes(c, [{ priority: 10 }, { priority: priorities[0] }, { priority: priorities[1] }])
      yield* c.world.write(n1.address, 100)
      yield* c.world.cutLink(n2.address)
      yield* c.world.write(n1.address, 50)
      expect((yield* c.world.inspect(n2.address)).offset).toBe(100)
      expect((yield* c.world.inspect(n3.address)).offset).toBe(150)
      // No clock moves between the last writes and the failure: the replicas' last health checks
      // predate those writes, so the ranking must read every offset fresh, its own included.
      const n2Mark = yield* commandCount(c, n2)
      const n3Mark = yield* commandCount(c, n3)
      yield* c.crash(n1)
      yield* c.world.kill(n1.address)
      const waited = yield* c.waitUntil("a new master", () => c.masterName() !== null && c.masterName() !== "n1", { within: 3000, step: 10 })
      // The crash deleted n1's znodes at once: the best candidate acts without waiting an election step.
      expect(waited).toBeLessThan(150)
      return { c, n1, n2, n3, n2Mark, n3Mark }
    })

  it.scoped("the replica with the highest offset is promoted, the other follows it", () =>
    withTestSettings(
      Effect.gen(function* () {
        const { c, n2, n3, n2Mark, n3Mark } = yield* failover([100, 100])
        expect(c.masterName()).toBe("n3")
        expect(c.master()?.owner).toBe(n3.sessionId())
        expect(yield* commandsOf(c, n3, n3Mark)).toContain("REPLICAOF NO ONE")
        expect((yield* commandsOf(c, n2, n2Mark)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n3.address)])
        expect(logged(c, "n3", "promoting: highest offset 150")).toBe(true)
        yield* c.world.healLink(n2.address)
        yield* c.waitUntil("n2 linked to n3", () => settledOn(c, n3), { within: 1000 })
        expect((yield* c.world.inspect(n2.address)).offset).toBe(150)
        expect(yield* writable(c)).toEqual(["n3"])
      })
    ))

  it.scoped("priority beats offset: a lower priority number wins over a fresher replica", () =>
    withTestSettings(
      Effect.gen(function* () {
        const { c, n2, n3, n3Mark } = yield* failover([50, 100])
        expect(c.masterName()).toBe("n2")
        expect(c.master()?.owner).toBe(n2.sessionId())
        expect((yield* commandsOf(c, n3, n3Mark)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n2.address)])
        yield* c.waitUntil("n3 follows n2", () => settledOn(c, n2), { within: 1000 })
        expect(yield* writable(c)).toEqual(["n2"])
      })
    ))

  it.scoped("priority 0 never becomes master, even when it is the freshest", () =>
    withTestSettings(
      Effect.gen(function* () {
        const { c, n2, n3, n3Mark } = yield* failover([100, 0])
        expect(c.masterName()).toBe("n2")
        yield* c.waitUntil("n3 follows n2", () => settledOn(c, n2), { within: 1000 })
        yield* TestClock.adjust("3 seconds")
        expect(c.masterName()).toBe("n2")
        expect(yield* commandsOf(c, n3, n3Mark)).not.toContain("REPLICAOF NO ONE")
        expect(yield* commandsOf(c, n3)).not.toContain("REPLICAOF NO ONE")
        expect(JSON.parse(c.ensemble.get(`${c.paths.members}/n3`).pipe(Option.map((z) => new TextDecoder().decode(z.data)), Option.getOrThrow))).toMatchObject({
          priority: 0
        })
      })
    ))
})

describe("Node: freshest replica first, on the graceful path", () => {
  // Regression (f28a52c): a node ranked itself with the offset of its last health check but its
  // peers with a fresh INFO. Right after writes, the caught-up replica saw itself behind the
  // lagging one, both waited one step, and here the lagging n2 won: acknowledged writes lost.
  it.scoped("a graceful stop right after writes: the caught-up replica acts at once and keeps every acknowledged write", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        // Added in this order, the lagging n2 used to win the tie of both waiting one step.
        const n1 = yield* c.add(spec(1, { priority: 10 }))
        const n3 = yield* c.add(spec(3))
        const n2 = yield* c.add(spec(2))
        yield* c.waitUntil("settled on n1", () => settledOn(c, n1), { within: 1000 })
        yield* TestClock.adjust("300 millis")
        yield* c.world.cutLink(n2.address)
        const acked = yield* c.world.write(n1.address, 100)
        yield* c.stop(n1)
        expect(logged(c, "n1", "handover: n3 reached offset 100 >= 100")).toBe(true)
        expect(c.logs.filter((l) => l.message.startsWith("promoting") && l.message.includes("did not act within"))).toEqual([])
        expect(c.masterName()).toBe("n3")
        expect((yield* c.world.inspect(n3.address)).offset).toBe(acked)
        expect(logged(c, "n1", "handover done: n3 is master")).toBe(true)
        expect((yield* c.world.inspect(n1.address)).offset).toBe(acked)
        yield* c.world.healLink(n2.address)
        yield* c.waitUntil("n2 follows n3 and catches up", () => settledOn(c, n3), { within: 1000 })
        expect((yield* c.world.inspect(n2.address)).offset).toBe(acked)
      })
    ))
})

describe("Node: re-election", () => {
  it.scoped("the master's node stops gracefully: handover to a caught-up replica, the old Redis follows it", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        // Stopped right after a write, as under load.
        const offset = yield* c.world.write(n1.address, 42)
        const s1 = n1.sessionId()
        const mark = yield* commandCount(c, n1)
        const oldEpoch = c.master()!.czxid

        yield* c.stop(n1)

        expect(c.ensemble.ephemeralsOf(s1)).toEqual([])
        expect(c.members()).toEqual(["n2", "n3"])
        const m = c.master()!
        expect(m.json).toMatchObject({ host: "10.0.0.2", port: "6379", name: "n2" })
        expect(m.owner).toBe(n2.sessionId())
        expect(BigInt(m.czxid)).toBeGreaterThan(BigInt(oldEpoch))
        // The new master had every write the old one acknowledged.
        expect((yield* c.world.inspect(n2.address)).offset).toBe(offset)

        // Writes paused first, the master znode given up, then the old Redis follows and is unpaused.
        const cmds = yield* commandsOf(c, n1, mark)
        const pause = cmds.indexOf("CLIENT PAUSE 3600000 WRITE")
        const follow = cmds.indexOf(replicaOf(n2.address))
        const unpause = cmds.lastIndexOf("CLIENT UNPAUSE")
        expect(pause).toBeGreaterThanOrEqual(0)
        expect(follow).toBeGreaterThan(pause)
        expect(unpause).toBeGreaterThan(follow)
        expect(yield* c.world.inspect(n1.address)).toMatchObject({ role: "replica", master: { host: "10.0.0.2" }, linkUp: true, paused: false })
        expect(logged(c, "n1", "handover: n2 reached offset")).toBe(true)
        expect(logged(c, "n1", "handover done: n2 is master")).toBe(true)

        yield* c.waitUntil("n3 follows n2", () => settledOn(c, n2), { within: 1000 })
        expect((yield* commandsOf(c, n3)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n1.address), replicaOf(n2.address)])
        expect(yield* writable(c)).toEqual(["n2"])
        expect(yield* Effect.flip(c.world.write(n1.address))).toMatchObject({ reason: "READONLY" })
      })
    ))

  it.scoped("the master's session expires (crash): a new master, the old node's ephemerals gone, its orphaned Redis demoted", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        const offset = yield* c.world.write(n1.address, 7)
        yield* TestClock.adjust("300 millis")
        const s1 = n1.sessionId()
        expect(c.ensemble.ephemeralsOf(s1)).toEqual(["/services/redis/svc/master", "/services/redis/svc/members/n1"])

        yield* c.crash(n1)
        expect(c.ensemble.ephemeralsOf(s1)).toEqual([])
        const waited = yield* c.waitUntil("n2 master", () => c.masterName() === "n2", { within: 3000, step: 10 })
        expect(waited).toBeLessThan(150)
        yield* c.waitUntil("n3 and the old Redis follow n2", () => settledOn(c, n2), { within: 1000 })

        expect(c.master()?.owner).toBe(n2.sessionId())
        expect(c.members()).toEqual(["n2", "n3"])
        // Nobody manages n1's Redis any more: the new master makes it its replica.
        expect(yield* c.world.inspect(n1.address)).toMatchObject({ role: "replica", master: { host: "10.0.0.2" }, linkUp: true })
        expect(logged(c, "n2", "old master n1 (10.0.0.1:6379) has no dictator any more")).toBe(true)
        expect((yield* c.world.inspect(n2.address)).offset).toBe(offset)
        expect((yield* commandsOf(c, n3)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n1.address), replicaOf(n2.address)])
        expect(yield* writable(c)).toEqual(["n2"])
      })
    ))

  it.scoped("the master's Redis is killed: its node resigns, a new master; restarted empty, it replicates from the new one", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* c.world.write(n1.address, 20)
        yield* TestClock.adjust("300 millis")
        const oldEpoch = c.master()!.czxid

        yield* c.world.kill(n1.address)
        const waited = yield* c.waitUntil("a master other than n1", () => c.masterName() === "n2", { within: 3000, step: 10 })
        // A refused connection is down at once: within one check interval n1 resigns, or the
        // others (who see it refused too) vote it down.
        expect(waited).toBeLessThanOrEqual(200)
        expect(logged(c, "n1", "resigning as master: local Redis down") || logged(c, "n2", "deposing master n1") || logged(c, "n3", "deposing master n1")).toBe(true)
        expect(c.master()!.czxid).not.toBe(oldEpoch)
        expect(c.master()!.owner).toBe(n2.sessionId())
        yield* c.waitUntil("n3 follows n2", () => follows(c, n3, n2), { within: 1000 })
        // n1 stays a member, unhealthy, and is no candidate.
        const record = JSON.parse(new TextDecoder().decode(Option.getOrThrow(c.ensemble.get(`${c.paths.members}/n1`)).data))
        expect(record).toMatchObject({ name: "n1", healthy: false })
        const offset = yield* c.world.write(n2.address, 5)

        const mark = yield* commandCount(c, n1)
        yield* c.world.restart(n1.address, { empty: true })
        expect(yield* c.world.inspect(n1.address)).toMatchObject({ role: "master", offset: 0 })
        yield* c.waitUntil("the restarted Redis replicates from n2", () => settledOn(c, n2), { within: 1000 })
        expect((yield* commandsOf(c, n1, mark)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n2.address)])
        expect((yield* c.world.inspect(n1.address)).offset).toBe(offset)
        expect(yield* commandsOf(c, n1, mark)).not.toContain("REPLICAOF NO ONE")
        expect(c.masterName()).toBe("n2")
        expect(yield* writable(c)).toEqual(["n2"])
        expect((yield* n1.api.status).role).toBe("replica")
      })
    ))

  it.scoped("a frozen master host is voted down and deposed; once back it is fenced, then follows the new master", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        const offset = yield* c.world.write(n1.address, 10)
        const s1 = n1.sessionId()
        const before = c.master()!
        const epochVersion = Option.getOrThrow(c.ensemble.get(c.paths.epoch)).stat.version
        const mark = yield* commandCount(c, n1)

        yield* c.world.freeze(n1.address)
        yield* c.ensemble.disconnect(n1.zk)
        // One writer at every step of the way.
        const oneWriter = Effect.map(writable(c), (w) => w.length <= 1)
        const waited = yield* c.waitUntil(
          "a new master",
          () => Effect.zipRight(Effect.flatMap(oneWriter, (ok) => (ok ? Effect.void : Effect.dieMessage("two writable masters"))), Effect.succeed(c.master() !== null && c.master()!.czxid !== before.czxid)),
          { within: 5000 }
        )
        // Votes need the master's Redis down for down_after_ms (1 s) as seen by a majority.
        expect(waited).toBeGreaterThanOrEqual(1000)
        expect(waited).toBeLessThanOrEqual(2000)
        expect(c.logs.some((l) => (l.node === "n2" || l.node === "n3") && l.message.includes(`deposing master n1 (epoch ${before.czxid})`))).toBe(true)
        expect(c.masterName()).toBe("n2")
        expect(c.master()!.owner).toBe(n2.sessionId())
        expect(Option.getOrThrow(c.ensemble.get(c.paths.epoch)).stat.version).toBe(epochVersion + 1)
        // n1's session is alive (only disconnected): its member record is still there, not the master znode.
        expect(c.ensemble.ephemeralsOf(s1)).toEqual(["/services/redis/svc/members/n1"])
        yield* c.waitUntil("n3 follows n2", () => follows(c, n3, n2), { within: 1000 })

        // The host thaws, still cut off from ZooKeeper: its Redis is fenced.
        yield* c.world.thaw(n1.address)
        yield* c.waitUntil("n1's Redis paused", () => Effect.map(c.world.inspect(n1.address), (s) => s.paused), { within: 1000 })
        expect(yield* Effect.flip(c.world.write(n1.address))).toMatchObject({ reason: "PAUSED" })
        expect(yield* writable(c)).toEqual(["n2"])

        // Back in ZooKeeper with the same session: it follows n2, then lifts the pause.
        yield* c.ensemble.reconnect(n1.zk)
        expect(n1.sessionId()).toBe(s1)
        yield* c.waitUntil("n1 follows n2", () => settledOn(c, n2), { within: 2000 })
        yield* c.waitUntil("n1 unpaused", () => Effect.map(c.world.inspect(n1.address), (s) => !s.paused), { within: 1000 })
        const cmds = yield* commandsOf(c, n1, mark)
        const lastPause = cmds.lastIndexOf("CLIENT PAUSE 3600000 WRITE")
        const follow = cmds.indexOf(replicaOf(n2.address))
        expect(lastPause).toBeGreaterThanOrEqual(0)
        expect(follow).toBeGreaterThan(lastPause)
        expect(cmds.lastIndexOf("CLIENT UNPAUSE")).toBeGreaterThan(follow)
        expect(yield* Effect.flip(c.world.write(n1.address))).toMatchObject({ reason: "READONLY" })
        expect((yield* c.world.inspect(n1.address)).offset).toBe((yield* c.world.inspect(n2.address)).offset)
        expect((yield* c.world.inspect(n2.address)).offset).toBeGreaterThanOrEqual(offset)
        expect(yield* writable(c)).toEqual(["n2"])
        expect(c.members()).toEqual(["n1", "n2", "n3"])
      })
    ))
})

describe("Node: previous master preference", () => {
  it.scoped("equal offsets: a master restarted under the same name clears its stale znode and wins again", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* c.world.write(n1.address, 30)
        yield* TestClock.adjust("300 millis")
        const old = c.master()!
        const oldSession = n1.sessionId()
        const marks = yield* Effect.forEach([n2, n3], (n) => commandCount(c, n))

        // The dictator dies; ZooKeeper has not expired its session yet: its znodes linger.
        yield* c.crash(n1, { expire: false })
        expect(c.ensemble.ephemeralsOf(oldSession)).toEqual(["/services/redis/svc/master", "/services/redis/svc/members/n1"])
        // It is started again at once, same name, same Redis, a new session.
        const again = yield* c.start(spec(1))
        yield* c.waitUntil("n1 master again under its new session", () => c.master()?.owner === again.sessionId(), { within: 2000, step: 10 })

        expect(logged(c, "n1", "clearing stale master znode: master znode names this node but belongs to an older session")).toBe(true)
        const m = c.master()!
        expect(m.json).toMatchObject({ host: "10.0.0.1", port: "6379", name: "n1" })
        expect(BigInt(m.czxid)).toBeGreaterThan(BigInt(old.czxid))
        // n2 and n3 had the same offset: the previous master comes first, they only waited.
        expect(c.logs.some((l) => l.node !== "n1" && l.message.startsWith("promoting"))).toBe(false)
        expect(c.ensemble.ephemeralsOf(oldSession)).toEqual([])
        // Same address as before: the followers have nothing to change.
        yield* c.waitUntil("settled on n1", () => settledOn(c, again), { within: 1000 })
        for (const [i, n] of [n2, n3].entries()) {
          expect((yield* commandsOf(c, n, marks[i])).filter((x) => x.startsWith("REPLICAOF"))).toEqual([])
        }
        // The old session finally expires: nothing of the new one is touched.
        yield* c.ensemble.expire(oldSession)
        yield* TestClock.adjust("1 second")
        expect(c.master()?.czxid).toBe(m.czxid)
        expect(c.members()).toEqual(["n1", "n2", "n3"])
        expect(yield* writable(c)).toEqual(["n1"])
      })
    ))

  it.scoped("equal offsets: when the master znode is removed under a live master, the previous master is elected again", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        // n3 is master first (alone), so the name does not decide for it afterwards.
        const n3 = yield* c.add(spec(3))
        yield* c.waitUntil("n3 master", () => c.masterName() === "n3", { within: 1000 })
        const n1 = yield* c.add(spec(1))
        const n2 = yield* c.add(spec(2))
        yield* c.waitUntil("n1 and n2 follow n3", () => settledOn(c, n3), { within: 1000 })
        yield* c.world.write(n3.address, 30)
        yield* TestClock.adjust("300 millis")
        const old = c.master()!
        const marks = yield* Effect.forEach([n1, n2], (n) => commandCount(c, n))

        // Another program (an operator) deletes the master znode.
        const other = yield* c.ensemble.session()
        yield* other.remove(c.paths.master, -1)
        const waited = yield* c.waitUntil("a master", () => c.master() !== null, { within: 1000, step: 10 })
        expect(waited).toBeLessThan(150)
        expect(c.masterName()).toBe("n3")
        expect(c.master()!.owner).toBe(n3.sessionId())
        expect(BigInt(c.master()!.czxid)).toBeGreaterThan(BigInt(old.czxid))
        expect(c.logs.filter((l) => l.message.startsWith("promoting")).map((l) => l.node)).toEqual(["n3", "n3"])
        expect(c.logs.some((l) => l.node === "n1" && l.message.includes("candidate rank 2 of 3: waiting 150 ms for n3"))).toBe(true)
        expect(c.logs.some((l) => l.node === "n2" && l.message.includes("candidate rank 3 of 3: waiting 300 ms for n3"))).toBe(true)
        yield* TestClock.adjust("1 second")
        expect(yield* settledOn(c, n3)).toBe(true)
        for (const [i, n] of [n1, n2].entries()) {
          expect((yield* commandsOf(c, n, marks[i])).filter((x) => x.startsWith("REPLICAOF"))).toEqual([])
        }
      })
    ))

  it.scoped("a master whose session expires while connected fences its Redis at once and follows the replica elected meanwhile", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2] = yield* threeNodes(c)
        const offset = yield* c.world.write(n1.address, 30)
        yield* TestClock.adjust("300 millis")
        const oldSession = n1.sessionId()
        const mark = yield* commandCount(c, n1)

        // The client hears "expired" and gets a new session at once. Its member record went with
        // the old session, so it is no candidate when the others elect.
        yield* c.ensemble.expire(n1.zk)
        expect(n1.sessionId()).not.toBe(oldSession)
        expect(c.ensemble.ephemeralsOf(oldSession)).toEqual([])
        yield* c.waitUntil("n2 master", () => c.masterName() === "n2", { within: 1000, step: 10 })
        yield* c.waitUntil("n1 and n3 follow n2", () => settledOn(c, n2), { within: 1000 })
        const cmds = yield* commandsOf(c, n1, mark)
        expect(cmds.indexOf("CLIENT PAUSE 3600000 WRITE")).toBeGreaterThanOrEqual(0)
        expect(cmds.indexOf(replicaOf(n2.address))).toBeGreaterThan(cmds.indexOf("CLIENT PAUSE 3600000 WRITE"))
        expect(cmds.lastIndexOf("CLIENT UNPAUSE")).toBeGreaterThan(cmds.indexOf(replicaOf(n2.address)))
        expect(cmds).not.toContain("REPLICAOF NO ONE")
        expect((yield* c.world.inspect(n2.address)).offset).toBe(offset)
        // Its member record comes back with the new session within one check interval.
        yield* c.waitUntil("n1 a member again", () => c.members().includes("n1"), { within: 100, step: 10 })
        expect(yield* writable(c)).toEqual(["n2"])
      })
    ))
})

describe("Node: following", () => {
  it.scoped("followers re-point on every change of the master record, also after their own session expired", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        // A master record written by another program, for servers no dictator manages.
        const x = yield* c.world.addServer("10.0.0.9", 6379, { offset: 500 })
        const y = yield* c.world.addServer("10.0.0.8", 6380, { offset: 500 })
        const other = yield* c.ensemble.session()
        const record = (name: string, a: RedisAddress) => bytes(JSON.stringify({ host: a.host, port: String(a.port), name }))
        yield* other.ensurePath(c.paths.service)
        yield* other.create(c.paths.master, record("x", x), "ephemeral")

        const nodes = [] as Array<ClusterNode>
        for (const i of [1, 2, 3]) nodes.push(yield* c.add(spec(i)))
        const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode]
        const allFollow = (a: RedisAddress) =>
          Effect.map(Effect.forEach(nodes, (n) => c.world.inspect(n.address)), (ss) =>
            ss.every((s) => s.role === "replica" && s.master?.host === a.host && s.master.port === a.port && s.linkUp)
          )
        yield* c.waitUntil("everyone follows x", () => allFollow(x), { within: 1000 })

        // Same znode (same epoch), new data.
        yield* other.set(c.paths.master, record("y", y), -1)
        yield* c.waitUntil("everyone follows y", () => allFollow(y), { within: 1000 })

        // n3's session expires (connected: a new one at once); its watches must be re-armed.
        const s3 = n3.sessionId()
        yield* c.ensemble.expire(n3.zk)
        expect(n3.sessionId()).not.toBe(s3)
        yield* TestClock.adjust("200 millis")
        expect(c.members()).toEqual(["n1", "n2", "n3"])

        yield* other.set(c.paths.master, record("x", x), -1)
        yield* c.waitUntil("everyone follows x again", () => allFollow(x), { within: 1000 })

        // The record goes away: the nodes elect one of them, and the others re-point to it.
        yield* other.remove(c.paths.master, -1)
        yield* c.waitUntil("n1 elected and followed", () => settledOn(c, n1), { within: 2000 })
        for (const n of [n2, n3]) {
          expect((yield* commandsOf(c, n)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([
            replicaOf(x),
            replicaOf(y),
            replicaOf(x),
            replicaOf(n1.address)
          ])
        }
        expect((yield* commandsOf(c, n1)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(x), replicaOf(y), replicaOf(x), "REPLICAOF NO ONE"])
        // Nobody votes against a reachable master.
        expect(c.logs.some((l) => l.message.includes("voting it down"))).toBe(false)
      })
    ))
})

describe("Node: disable and enable", () => {
  it.scoped("disable on the master hands over and leaves the Redis alone; enable rejoins and follows", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        const offset = yield* c.world.write(n1.address, 12)
        yield* TestClock.adjust("300 millis")
        const mark = yield* commandCount(c, n1)

        expect(yield* c.driven(n1.api.disable)).toBe(true)
        expect(c.masterName()).toBe("n2")
        expect(c.master()!.owner).toBe(n2.sessionId())
        expect((yield* c.world.inspect(n2.address)).offset).toBe(offset)
        expect(c.members()).toEqual(["n2", "n3"])
        // The session is still open: only the node's znodes went.
        expect(c.ensemble.ephemeralsOf(n1.sessionId())).toEqual([])
        const cmds = yield* commandsOf(c, n1, mark)
        const pause = cmds.indexOf("CLIENT PAUSE 3600000 WRITE")
        const follow = cmds.indexOf(replicaOf(n2.address))
        expect(pause).toBeGreaterThanOrEqual(0)
        expect(follow).toBeGreaterThan(pause)
        expect(cmds.lastIndexOf("CLIENT UNPAUSE")).toBeGreaterThan(follow)
        expect(yield* follows(c, n1, n2)).toBe(true)
        const status = yield* n1.api.status
        expect(status).toMatchObject({ role: "disabled", enabled: false })
        expect(yield* n1.api.disable).toBe(false)
        yield* c.waitUntil("n3 follows n2", () => follows(c, n3, n2), { within: 1000 })

        // The handover's last consequence: its clients closed a check interval after the new master is seen.
        yield* c.waitUntil("n1 closed its Redis's clients after the handover", () =>
          Effect.map(commandsOf(c, n1, mark), (cs) => cs.includes("CLIENT KILL TYPE pubsub SKIPME yes")), { within: 2000 })
        // Somebody turns its Redis into a master by hand: a disabled node does not interfere.
        const manual = yield* c.world.service.connect(n1.address, "1 second")
        yield* manual.replicaOf(null)
        const quiet = yield* commandCount(c, n1)
        yield* TestClock.adjust("3 seconds")
        const meanwhile = yield* commandsOf(c, n1, quiet)
        expect(meanwhile.filter((x) => !["PING", "INFO replication"].includes(x))).toEqual([])
        expect((yield* c.world.inspect(n1.address)).role).toBe("master")
        expect(c.members()).toEqual(["n2", "n3"])
        expect(c.masterName()).toBe("n2")

        // Enabled again: member record back, its Redis follows the master.
        expect(yield* n1.api.enable).toBe(true)
        expect(yield* n1.api.enable).toBe(false)
        yield* c.waitUntil("n1 a member again, following n2", () =>
          Effect.map(follows(c, n1, n2), (ok) => ok && c.members().includes("n1")), { within: 1000 })
        expect((yield* commandsOf(c, n1, quiet)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n2.address)])
        expect((yield* n1.api.status).role).toBe("replica")
        expect(c.masterName()).toBe("n2")
        expect(yield* writable(c)).toEqual(["n2"])
      })
    ))
})

describe("Node: fencing", () => {
  it.scoped("a master disconnected from ZooKeeper pauses writes after fence_after_ms, before its session can expire; reconnected, it resumes", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* TestClock.adjust("300 millis")
        const before = c.master()!
        const mark = yield* commandCount(c, n1)

        yield* c.ensemble.disconnect(n1.zk)
        yield* TestClock.adjust("900 millis")
        expect((yield* c.world.inspect(n1.address)).paused).toBe(false)
        const waited = 900 + (yield* c.waitUntil("n1's Redis paused", () => Effect.map(c.world.inspect(n1.address), (s) => s.paused), { within: 2000, step: 10 }))
        // fence_after_ms is 1000, the controller ticks every 100 ms; the session timeout is 6000.
        expect(waited).toBeGreaterThanOrEqual(1000)
        expect(waited).toBeLessThanOrEqual(1150)
        expect(yield* commandsOf(c, n1, mark)).toContain("CLIENT PAUSE 3600000 WRITE")
        expect(yield* Effect.flip(c.world.write(n1.address))).toMatchObject({ reason: "PAUSED" })
        expect(yield* writable(c)).toEqual([])
        expect((yield* n1.api.status).role).toBe("fenced")

        // Meanwhile nothing changed for the others: same master znode, no votes.
        yield* TestClock.adjust("2 seconds")
        expect(c.master()).toEqual(before)
        expect(c.logs.some((l) => l.message.includes("voting it down"))).toBe(false)
        yield* Effect.forEach([n2, n3], (n) => Effect.map(follows(c, n, n1), (ok) => expect(ok).toBe(true)))

        // Same session again: ownership confirmed, the pause lifted, still the master.
        yield* c.ensemble.reconnect(n1.zk)
        yield* c.waitUntil("n1's Redis unpaused", () => Effect.map(c.world.inspect(n1.address), (s) => !s.paused), { within: 500, step: 10 })
        const cmds = yield* commandsOf(c, n1, mark)
        expect(cmds.lastIndexOf("CLIENT UNPAUSE")).toBeGreaterThan(cmds.indexOf("CLIENT PAUSE 3600000 WRITE"))
        expect(c.master()).toEqual(before)
        expect((yield* n1.api.status).role).toBe("master")
        expect(yield* writable(c)).toEqual(["n1"])
        expect(cmds.filter((x) => x.startsWith("REPLICAOF"))).toEqual([])
      })
    ))

  it.scoped("a master partitioned from ZooKeeper past its session timeout: fenced first, then replaced; back, it follows", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        const offset = yield* c.world.write(n1.address, 25)
        yield* TestClock.adjust("300 millis")
        const s1 = n1.sessionId()
        const mark = yield* commandCount(c, n1)
        const oneWriter = Effect.flatMap(writable(c), (w) => (w.length <= 1 ? Effect.succeed(w) : Effect.dieMessage(`two writers: ${w.join(", ")}`)))

        yield* c.ensemble.disconnect(n1.zk)
        // Until the server expires the session (6 s here) nobody else may take over; n1 is fenced long before.
        yield* c.waitUntil("n1 fenced", () => Effect.map(oneWriter, (w) => w.length === 0), { within: 1500 })
        for (let t = 0; t < 4500; t += 500) {
          yield* TestClock.adjust("500 millis")
          expect(yield* oneWriter).toEqual([])
          expect(c.masterName()).toBe("n1")
        }
        yield* c.ensemble.expire(s1)
        expect(c.ensemble.ephemeralsOf(s1)).toEqual([])
        yield* c.waitUntil("n2 master", () => Effect.zipRight(oneWriter, Effect.succeed(c.masterName() === "n2")), { within: 1000, step: 10 })
        yield* c.waitUntil("n3 follows n2", () => Effect.zipRight(oneWriter, follows(c, n3, n2)), { within: 1000 })
        expect(yield* oneWriter).toEqual(["n2"])
        expect((yield* c.world.inspect(n2.address)).offset).toBe(offset)

        // Back: it learns that its session expired, gets a new one, and follows n2.
        yield* c.ensemble.reconnect(n1.zk)
        expect(n1.sessionId()).not.toBe(s1)
        yield* c.waitUntil("n1 follows n2", () => Effect.zipRight(oneWriter, settledOn(c, n2)), { within: 1000 })
        yield* c.waitUntil("n1 a member again", () => c.members().includes("n1"), { within: 500 })
        const cmds = yield* commandsOf(c, n1, mark)
        expect(cmds.indexOf("CLIENT PAUSE 3600000 WRITE")).toBeGreaterThanOrEqual(0)
        expect(cmds.indexOf(replicaOf(n2.address))).toBeGreaterThan(cmds.indexOf("CLIENT PAUSE 3600000 WRITE"))
        expect(cmds).not.toContain("REPLICAOF NO ONE")
        expect((yield* c.world.inspect(n1.address)).paused).toBe(false)
        expect(yield* oneWriter).toEqual(["n2"])
      })
    ))
})

describe("Node: loading", () => {
  it.scoped("a LOADING Redis: no member record until loading_timeout, never master; once loaded it follows", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const n1 = yield* c.add(spec(1, { loadingTimeout: 2 }), { state: "loading" })
        const n2 = yield* c.add(spec(2))
        const n3 = yield* c.add(spec(3))
        yield* c.waitUntil("n2 master, n3 follows", () => Effect.map(follows(c, n3, n2), (ok) => ok && c.masterName() === "n2"), { within: 1000 })
        yield* TestClock.adjust("1500 millis")
        expect(c.members()).toEqual(["n2", "n3"])
        yield* c.waitUntil("n1 joins as a member once loading_timeout is over", () => c.members().includes("n1"), { within: 1000 })
        const record = JSON.parse(new TextDecoder().decode(Option.getOrThrow(c.ensemble.get(`${c.paths.members}/n1`)).data))
        expect(record).toMatchObject({ name: "n1", healthy: false })
        expect(logged(c, "n1", "local Redis not ready after loading_timeout 2s")).toBe(true)
        yield* TestClock.adjust("2 seconds")
        expect(c.masterName()).toBe("n2")
        // Only health checks reached it: nothing to promote or re-point while it loads.
        expect((yield* commandsOf(c, n1)).filter((x) => !["PING", "INFO replication"].includes(x))).toEqual([])

        yield* c.world.setLoading(n1.address, false)
        yield* c.waitUntil("n1 follows n2", () => follows(c, n1, n2), { within: 1000 })
        expect((yield* commandsOf(c, n1)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([replicaOf(n2.address)])
        yield* c.waitUntil("n1's record healthy", () =>
          JSON.parse(new TextDecoder().decode(Option.getOrThrow(c.ensemble.get(`${c.paths.members}/n1`)).data)).healthy === true, { within: 1000 })
      })
    ))

  it.scoped("a lone LOADING node never becomes master while loading; it does once loaded", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const n1 = yield* c.add(spec(1, { loadingTimeout: 1 }), { state: "loading" })
        yield* TestClock.adjust("5 seconds")
        expect(c.master()).toBeNull()
        expect(c.members()).toEqual(["n1"])
        expect((yield* n1.api.status).role).toBe("fenced")
        expect(yield* commandsOf(c, n1)).not.toContain("REPLICAOF NO ONE")
        yield* c.world.setLoading(n1.address, false)
        const waited = yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 1000, step: 10 })
        expect(waited).toBeLessThanOrEqual(150)
        expect(yield* commandsOf(c, n1)).toContain("REPLICAOF NO ONE")
      })
    ))

  it.scoped("a master whose Redis restarts LOADING gives the role up; it follows the new master once loaded", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* c.world.write(n1.address, 9)
        yield* TestClock.adjust("300 millis")
        yield* c.world.restart(n1.address, { loading: true })
        yield* c.waitUntil("n2 master", () => c.masterName() === "n2", { within: 2000, step: 10 })
        yield* c.waitUntil("n3 follows n2", () => follows(c, n3, n2), { within: 1000 })
        yield* TestClock.adjust("1 second")
        expect(c.masterName()).toBe("n2")
        yield* c.world.setLoading(n1.address, false)
        yield* c.waitUntil("n1 follows n2", () => follows(c, n1, n2), { within: 1000 })
        expect(yield* writable(c)).toEqual(["n2"])
      })
    ))
})

describe("Node: bad input", () => {
  it.scoped("a malformed master znode is logged and never followed; the nodes keep running", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const other = yield* c.ensemble.session()
        yield* other.ensurePath(c.paths.members)
        yield* other.create(c.paths.master, bytes("not json {"), "ephemeral")
        yield* other.create(`${c.paths.members}/ghost`, bytes("[1, 2"), "ephemeral")
        yield* c.world.addServer("10.0.0.9", 6379)

        const nodes = [] as Array<ClusterNode>
        for (const i of [1, 2, 3]) nodes.push(yield* c.add(spec(i)))
        const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode]
        yield* TestClock.adjust("2 seconds")
        expect(c.master()?.raw).toBe("not json {")
        for (const n of nodes) {
          expect((yield* commandsOf(c, n)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([])
          expect(logged(c, n.name, "is malformed (not JSON)")).toBe(true)
          expect(yield* n.api.status).toMatchObject({ role: "fenced", master: { _tag: "Malformed" } })
          // The ghost's record is unreadable: not a member as far as the nodes know.
          expect((yield* n.api.status).members.map((m) => m.name).sort()).toEqual(["n1", "n2", "n3"])
        }
        expect(c.members()).toEqual(["ghost", "n1", "n2", "n3"])

        // Valid JSON with a port out of range: still never followed.
        yield* other.set(c.paths.master, bytes(JSON.stringify({ host: "10.0.0.9", port: "70000", name: "x" })), -1)
        yield* TestClock.adjust("1 second")
        for (const n of nodes) {
          expect((yield* commandsOf(c, n)).filter((x) => x.startsWith("REPLICAOF"))).toEqual([])
          expect(logged(c, n.name, "port 70000 out of range")).toBe(true)
        }
        expect(yield* c.world.commands("10.0.0.9:6379")).toEqual([])

        // A record naming n2's own address under another name: n2 never replicates from itself.
        yield* other.set(c.paths.master, bytes(JSON.stringify({ host: "10.0.0.2", port: "6379", name: "impostor" })), -1)
        yield* c.waitUntil("n1 and n3 follow 10.0.0.2", () =>
          Effect.map(Effect.all([follows(c, n1, n2), follows(c, n3, n2)]), (r) => r.every((x) => x)), { within: 1000 })
        yield* TestClock.adjust("1 second")
        expect(yield* commandsOf(c, n2)).not.toContain(replicaOf(n2.address))
        expect((yield* c.world.inspect(n2.address)).role).toBe("master")
        expect(logged(c, "n2", "at this node's own Redis address: never replicating from itself")).toBe(true)

        // The bad record goes: the nodes, all alive, elect a master.
        yield* other.remove(c.paths.master, -1)
        yield* c.waitUntil("a master elected and followed", () =>
          Effect.map(Effect.all(nodes.map((n) => settledOn(c, n))), (r) => r.some((x) => x)), { within: 2000 })
        expect(c.master()!.json).toMatchObject({ port: "6379" })
        expect(c.logs.some((l) => l.message.includes("stopped"))).toBe(false)
      })
    ))
})

describe("Retry and watch streams", () => {
  const delays = (cap: Duration.DurationInput, random: number, n = 9) =>
    Schedule.run(Schedule.delays(backoff(cap)), 0, Array.from({ length: n }, () => undefined)).pipe(
      Effect.map((c) => Chunk.toArray(c).map(Duration.toMillis)),
      Effect.withRandom(Random.fixed([random]))
    )

  it.effect("backoff: exponential from 100 ms, jittered ±20 %, capped at the cap", () =>
    Effect.gen(function* () {
      expect(yield* delays("1 second", 0.5)).toEqual([100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000])
      expect(yield* delays("5 seconds", 0.5)).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000])
      expect(yield* delays("1 second", 0)).toEqual([80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000])
      const high = yield* delays("1 second", 0.999)
      expect(high.slice(0, 4).map(Math.round)).toEqual([120, 240, 480, 960])
      expect(high.every((d) => d <= 1000)).toBe(true)
      expect((yield* delays("5 seconds", 0.999, 30)).every((d) => d <= 5000)).toBe(true)
    }))

  it.effect("backoff under TestClock: retries at 0, 100, 300, 700, 1500, then every second", () =>
    Effect.gen(function* () {
      const attempts: Array<number> = []
      const fiber = yield* Effect.clockWith((c) => c.currentTimeMillis).pipe(
        Effect.flatMap((t) => Effect.sync(() => attempts.push(t))),
        Effect.zipRight(Effect.fail("unreachable")),
        Effect.retry(backoff("1 second")),
        Effect.fork
      )
      yield* TestClock.adjust("3500 millis")
      expect(attempts).toEqual([0, 100, 300, 700, 1500, 2500, 3500])
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a watch stream keeps emitting after its session expired (new generation), also when it expired while away", () =>
    withTestSettings(
      Effect.gen(function* () {
        const ensemble = yield* ZkEnsemble.make
        const watcher = yield* ensemble.session()
        const writer = yield* ensemble.session()
        const seen = yield* Queue.unbounded<string | null>()
        const value = (n: Option.Option<ZkNode>) => Option.match(n, { onNone: () => null, onSome: (z) => new TextDecoder().decode(z.data) })
        yield* watcher.watchData("/x").pipe(Stream.runForEach((n) => Queue.offer(seen, value(n))), Effect.forkScoped)
        const settle = Effect.zipRight(TestClock.adjust(0), Effect.map(Queue.takeAll(seen), Chunk.toArray))
        const generation = Effect.map(ZooKeeper.pipe(Effect.provideService(ZooKeeper, watcher), Effect.flatMap((zk) => zk.session.get)), (s) => s.generation)

        expect(yield* settle).toEqual([null])
        yield* writer.create("/x", bytes("1"), "persistent")
        expect(yield* settle).toEqual(["1"])

        yield* ensemble.expire(watcher)
        expect(yield* generation).toBe(2)
        expect(yield* settle).toEqual([]) // re-read in the new session: same node, not repeated
        yield* writer.set("/x", bytes("2"), -1)
        expect(yield* settle).toEqual(["2"])

        // Expired while disconnected: the change made meanwhile is read once it is back.
        yield* ensemble.disconnect(watcher)
        yield* writer.set("/x", bytes("3"), -1)
        yield* ensemble.expire(watcher)
        expect(yield* settle).toEqual([])
        yield* ensemble.reconnect(watcher)
        expect(yield* generation).toBe(3)
        expect(yield* settle).toEqual(["3"])
        yield* writer.remove("/x", -1)
        expect(yield* settle).toEqual([null])
      })
    ))
})

describe("Node: interruption", () => {
  it.scoped("interrupting a master deletes its znodes (the session stays open) and hands over", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        yield* c.world.addServer("10.0.0.1", 6379)
        const n1 = yield* launch(c, spec(1))
        yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 1000 })
        const n2 = yield* c.add(spec(2))
        const n3 = yield* c.add(spec(3))
        yield* c.waitUntil("n2 and n3 follow n1", () =>
          Effect.map(Effect.all([c.world.inspect(n2.address), c.world.inspect(n3.address)]), (ss) => ss.every((s) => s.master?.host === "10.0.0.1" && s.linkUp)), { within: 1000 })
        expect(c.ensemble.ephemeralsOf(n1.sessionId)).toEqual(["/services/redis/svc/master", "/services/redis/svc/members/n1"])

        const exit = yield* c.driven(Fiber.interrupt(n1.fiber))
        expect(Exit.isInterrupted(exit)).toBe(true)
        expect(c.ensemble.sessionIdOf(n1.zk)).toBe(n1.sessionId)
        expect(c.ensemble.ephemeralsOf(n1.sessionId)).toEqual([])
        expect(c.masterName()).toBe("n2")
        expect(c.members()).toEqual(["n2", "n3"])
        yield* c.waitUntil("the old Redis follows n2", () =>
          Effect.map(c.world.inspect("10.0.0.1:6379"), (s) => s.master?.host === "10.0.0.2" && s.linkUp && !s.paused), { within: 1000 })
      })
    ))

  it.scoped("interrupting a follower deletes its member record, nothing else", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const n1 = yield* c.add(spec(1))
        yield* c.waitUntil("n1 master", () => c.masterName() === "n1" && c.master()?.owner === n1.sessionId(), { within: 1000 })
        yield* c.world.addServer("10.0.0.2", 6379)
        const n2 = yield* launch(c, spec(2))
        yield* c.waitUntil("n2 member, following n1", () =>
          Effect.map(c.world.inspect("10.0.0.2:6379"), (s) => s.master?.host === "10.0.0.1" && s.linkUp && c.members().includes("n2")), { within: 1000 })
        const before = c.master()
        yield* c.driven(Fiber.interrupt(n2.fiber))
        expect(c.ensemble.ephemeralsOf(n2.sessionId)).toEqual([])
        expect(c.members()).toEqual(["n1"])
        expect(c.master()).toEqual(before)
        expect((yield* c.world.inspect("10.0.0.2:6379")).master?.host).toBe("10.0.0.1")
      })
    ))

  // Regression (f28a52c): after a handover with nobody to hand over to, the controller saw no
  // master and the election fiber promoted the stopping node again (new epoch, CLIENT UNPAUSE).
  it.scoped("interrupting a lone master: the znodes go while its session is still open, no new epoch, its Redis left paused", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        yield* c.world.addServer("10.0.0.1", 6379)
        const n1 = yield* launch(c, spec(1))
        yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 1000 })
        yield* TestClock.adjust("300 millis")
        const epoch = c.master()!.czxid
        const epochVersion = Option.getOrThrow(c.ensemble.get(c.paths.epoch)).stat.version
        // A reader of the master znode, as a client of the service would have.
        const seen: Array<string | null> = []
        const reader = yield* c.ensemble.session()
        yield* reader.watchData(c.paths.master).pipe(
          Stream.runForEach((n) => Effect.sync(() => seen.push(Option.match(n, { onNone: () => null, onSome: (z) => z.stat.czxid })))),
          Effect.forkScoped
        )
        yield* TestClock.adjust(0)

        yield* c.driven(Fiber.interrupt(n1.fiber))
        expect(logged(c, "n1", "handover: no healthy replica to hand over to; releasing the znodes and leaving writes paused")).toBe(true)
        // Released by the node, not by the end of its session: that one is still open.
        expect(c.ensemble.sessionIdOf(n1.zk)).toBe(n1.sessionId)
        expect(c.ensemble.ephemeralsOf(n1.sessionId)).toEqual([])
        expect(c.master()).toBeNull()
        expect(seen).toEqual([epoch, null])
        expect(Option.getOrThrow(c.ensemble.get(c.paths.epoch)).stat.version).toBe(epochVersion)
        expect(c.logs.filter((l) => l.message.startsWith("promoting")).length).toBe(1)
        expect((yield* c.world.inspect("10.0.0.1:6379")).paused).toBe(true)
        expect(yield* c.world.openConnections("10.0.0.1:6379")).toBe(0)
      })
    ))
})
