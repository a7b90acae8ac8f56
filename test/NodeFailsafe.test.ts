/**
 * Failsafe mode (issue 13) on whole nodes under TestClock: a master that loses ZooKeeper keeps
 * taking writes only while every other member answers that it cannot reach ZooKeeper either and
 * still follows it; renewals keep it going, a missing or negative one fences it at once; a
 * member that answered yes takes part in no election until its hold ran out, ZooKeeper answers
 * and it re-read the master znode.
 */
import { describe, expect, it, vi } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import type { RedisAddress } from "../src/Redis.js"
import { type Cluster, type ClusterNode, makeCluster, type NodeSpec, withTestSettings } from "./support/cluster.js"

// Seconds each on a quiet machine; the margin is for a loaded shared 2-core one.
vi.setConfig({ testTimeout: 180_000 })

const spec = (i: number): NodeSpec => ({ name: `n${i}`, host: `10.0.0.${i}` })
const acceptsWrites = (c: Cluster, a: RedisAddress) => Effect.isSuccess(c.world.write(a, 0))

const threeNodes = (c: Cluster) =>
  Effect.gen(function* () {
    const nodes: Array<ClusterNode> = []
    for (const i of [1, 2, 3]) nodes.push(yield* c.add(spec(i)))
    yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 3000 })
    yield* c.waitUntil("three members", () => c.members().length === 3, { within: 3000 })
    yield* TestClock.adjust("500 millis")
    return nodes as unknown as readonly [ClusterNode, ClusterNode, ClusterNode]
  })

/** Moves the clock `ms` in steps of `step` ms, failing if `check` fails at any step. */
const during = (ms: number, check: (t: number) => Effect.Effect<void>, step = 10) =>
  Effect.gen(function* () {
    for (let t = 0; t < ms; t += step) {
      yield* TestClock.adjust(`${step} millis`)
      yield* check(t + step)
    }
  })

/** Fails at once when two Redis servers take writes as masters. */
const oneWriter = (c: Cluster, nodes: ReadonlyArray<ClusterNode>) =>
  Effect.gen(function* () {
    const writable: Array<string> = []
    for (const n of nodes) {
      const s = yield* c.world.inspect(n.address)
      if (s.role === "master" && (yield* acceptsWrites(c, n.address))) writable.push(n.name)
    }
    if (writable.length > 1) return yield* Effect.dieMessage(`two writable masters: ${writable.join(", ")}\n${yield* c.describe()}`)
  })

const failsafeOn = { config: { failsafe: true } }

describe("Node failsafe: the whole ensemble away", () => {
  it.scoped("every member cut off too: the master keeps taking writes throughout (renewed), and still owns its znode afterwards", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster(failsafeOn)
        const [n1, n2, n3] = yield* threeNodes(c)
        const epoch = c.master()!.czxid
        // Before its election a node pauses its own Redis (a master it has no proof for): only what comes after counts.
        const logsBefore = c.logs.length
        for (const n of [n1, n2, n3]) yield* c.ensemble.disconnect(n.zk)
        // 8 s: far past fence_after_ms (1 s) and the session timeout (6 s), on the grants alone.
        yield* during(8000, (t) =>
          Effect.gen(function* () {
            if (!(yield* acceptsWrites(c, n1.address))) return yield* Effect.dieMessage(`n1 stopped taking writes ${t} ms into the outage\n${yield* c.describe()}`)
          }),
          50
        )
        expect((yield* n1.api.status).role).toBe("master")
        for (const n of [n1, n2, n3]) yield* c.ensemble.reconnect(n.zk)
        yield* TestClock.adjust("1 second")
        expect(c.master()?.czxid, "the same master znode").toBe(epoch)
        expect(yield* acceptsWrites(c, n1.address)).toBe(true)
        const said = c.logs.slice(logsBefore).map((l) => `${l.node} ${l.message}`)
        expect(said.some((l) => l.startsWith("n1 failsafe: ZooKeeper answers again and this session still owns the master znode"))).toBe(true)
        expect(said.filter((l) => l.startsWith("n1 fencing:")), "never fenced").toEqual([])
        expect(said.filter((l) => /^n[23] failsafe: answered yes to n1/.test(l)).length).toBeGreaterThan(0)
      })
    ))

  it.scoped("failsafe off (the control): the master fences at fence_after_ms", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        for (const n of [n1, n2, n3]) yield* c.ensemble.disconnect(n.zk)
        yield* TestClock.adjust("1500 millis")
        expect(yield* acceptsWrites(c, n1.address)).toBe(false)
      })
    ))

  it.scoped("one member's dictator is down (its record still there): no unanimous yes, the master fences", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster(failsafeOn)
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* c.crash(n3, { expire: false })
        for (const n of [n1, n2]) yield* c.ensemble.disconnect(n.zk)
        yield* TestClock.adjust("1500 millis")
        expect(yield* acceptsWrites(c, n1.address)).toBe(false)
        expect(c.logs.some((l) => l.node === "n1" && l.message.includes("not every member vouches") && l.message.includes("n3"))).toBe(true)
      })
    ))

  it.scoped("a renewal that fails fences at once: a member reaches ZooKeeper again mid-outage", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster(failsafeOn)
        const [n1, n2, n3] = yield* threeNodes(c)
        for (const n of [n1, n2, n3]) yield* c.ensemble.disconnect(n.zk)
        yield* TestClock.adjust("3 seconds")
        expect(yield* acceptsWrites(c, n1.address)).toBe(true)
        yield* c.ensemble.reconnect(n3.zk)
        // The next round (every third of a grant) gets n3's no; the grant is dropped at once.
        yield* TestClock.adjust("600 millis")
        expect(yield* acceptsWrites(c, n1.address)).toBe(false)
        expect(c.logs.some((l) => l.node === "n1" && l.message.includes("n3 answered no (this node reaches ZooKeeper)"))).toBe(true)
      })
    ))
})

describe("Node failsafe: ZooKeeper reachable from the replicas, not from the master", () => {
  it.scoped("the replicas answer no: the master fences at fence_after_ms, a replica is promoted, never two writers", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster(failsafeOn)
        const nodes = yield* threeNodes(c)
        const [n1] = nodes
        yield* c.ensemble.disconnect(n1.zk)
        yield* during(1500, () => oneWriter(c, nodes))
        expect(yield* acceptsWrites(c, n1.address)).toBe(false)
        yield* c.ensemble.expire(n1.zk)
        yield* c.waitUntil("a new master", () => c.masterName() !== null && c.masterName() !== "n1", { within: 5000, step: 10 })
        yield* during(1000, () => oneWriter(c, nodes))
      })
    ))
})

describe("Node failsafe: no election after a yes", () => {
  it.scoped("members that vouched stay out of elections until their hold ran out and they re-read the znode; the master is fenced before", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster(failsafeOn)
        const nodes = yield* threeNodes(c)
        const [n1, n2, n3] = nodes
        for (const n of nodes) yield* c.ensemble.disconnect(n.zk)
        yield* TestClock.adjust("2 seconds")
        expect(yield* acceptsWrites(c, n1.address)).toBe(true)
        // ZooKeeper is back for the replicas only, and n1's session is gone: the znode with it.
        const lastYes = yield* TestClock.currentTimeMillis
        yield* c.ensemble.expire(n1.zk)
        yield* c.ensemble.reconnect(n2.zk)
        yield* c.ensemble.reconnect(n3.zk)
        expect(c.master()).toBeNull()
        let newMasterAt: number | null = null
        let n1FencedAt: number | null = null
        yield* during(8000, () =>
          Effect.gen(function* () {
            yield* oneWriter(c, nodes)
            const t = yield* TestClock.currentTimeMillis
            if (n1FencedAt === null && !(yield* acceptsWrites(c, n1.address))) n1FencedAt = t
            if (newMasterAt === null && c.masterName() !== null) newMasterAt = t
          })
        )
        expect(n1FencedAt, "n1 fenced").not.toBeNull()
        expect(newMasterAt, "a new master after the hold").not.toBeNull()
        expect(newMasterAt!).toBeGreaterThan(n1FencedAt!)
        // The hold (3 × the 1 s grant) counts from the last yes, given at most a round before.
        expect(newMasterAt! - lastYes).toBeGreaterThanOrEqual(3000 - 400)
        expect(["n2", "n3"]).toContain(c.masterName())
        const said = c.logs.map((l) => `${l.node} ${l.message}`)
        expect(said.some((l) => /^n[23] failsafe: ZooKeeper answers again; master znode re-read: absent/.test(l))).toBe(true)
        expect(said.some((l) => /^n[23] failsafe: .* taking part in elections again/.test(l))).toBe(true)
        void n3
      })
    ))
})
