/**
 * Role changes on whole nodes (in-memory layers, TestClock): the local Redis's clients closed
 * after each change once the master znode names the new master (and not with the setting off),
 * the metrics counting the failover, and announce_host / announce_port handed to the others.
 */
import { describe, expect, it, vi } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import type { RedisAddress } from "../src/Redis.js"
import { type Cluster, type ClusterNode, makeCluster, type NodeSpec, withTestSettings } from "./support/cluster.js"
import { scrape } from "./support/prometheus.js"

vi.setConfig({ testTimeout: 30_000 })

const spec = (i: number, config: Record<string, unknown> = {}): NodeSpec => ({ name: `n${i}`, host: `10.0.0.${i}`, config })
const replicaOf = (a: RedisAddress) => `REPLICAOF ${a.host} ${a.port}`
const KILL = "CLIENT KILL TYPE normal SKIPME yes"
const commandsOf = (c: Cluster, n: ClusterNode) => c.world.commands(n.address)
const follows = (c: Cluster, f: ClusterNode, m: ClusterNode) =>
  Effect.map(c.world.inspect(f.address), (s) => s.role === "replica" && s.master?.host === m.address.host && s.linkUp)

const threeNodes = (c: Cluster, config: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const n1 = yield* c.add(spec(1, config))
    yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 3000 })
    const n2 = yield* c.add(spec(2, config))
    const n3 = yield* c.add(spec(3, config))
    yield* c.waitUntil("n2, n3 follow n1", () => Effect.zipWith(follows(c, n2, n1), follows(c, n3, n1), (a, b) => a && b), { within: 3000 })
    return [n1, n2, n3] as const
  })

describe("Node: role changes", () => {
  it.scoped("each role change closes the Redis's clients after the znode names the new master; metrics count the failover", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c)
        yield* TestClock.adjust("500 millis")
        // The first election already changed roles: n1 promoted, n2 and n3 pointed at it.
        for (const n of [n1, n2, n3]) expect(yield* commandsOf(c, n)).toContain(KILL)
        const before = scrape((yield* n3.api.metrics).text)

        yield* c.crash(n1)
        yield* c.waitUntil("n2 master, n3 follows it", () => Effect.map(follows(c, n3, n2), (f) => f && c.masterName() === "n2"), { within: 3000 })
        yield* TestClock.adjust("500 millis")
        const n2cmds = yield* commandsOf(c, n2)
        expect(n2cmds.lastIndexOf(KILL)).toBeGreaterThan(n2cmds.lastIndexOf("REPLICAOF NO ONE"))
        const n3cmds = yield* commandsOf(c, n3)
        expect(n3cmds.lastIndexOf(KILL)).toBeGreaterThan(n3cmds.lastIndexOf(replicaOf(n2.address)))

        const m2 = scrape((yield* n2.api.metrics).text)
        expect(m2.value("dictator_role", { role: "master" })).toBe(1)
        expect(m2.value("dictator_elections_won_total")).toBe(1)
        expect(m2.value("dictator_role_changes_total", { role: "master" })).toBe(1)
        expect(m2.value("dictator_clients_closed_total")).toBeGreaterThanOrEqual(0)
        const m3 = scrape((yield* n3.api.metrics).text)
        expect(m3.value("dictator_role", { role: "replica" })).toBe(1)
        expect(m3.value("dictator_failovers_total")).toBe((before.value("dictator_failovers_total") ?? Number.NaN) + 1)
        expect(m3.count("dictator_failover_duration_seconds")).toBe(1)
        expect(m3.value("dictator_master_epoch")).toBeGreaterThan(before.value("dictator_master_epoch") ?? Number.POSITIVE_INFINITY)
        expect(m3.value("dictator_role_changes_total", { role: "replica" })).toBe(2)
      })
    ))

  it.scoped("a handover by /disable is counted and timed in the old master's metrics", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2] = yield* threeNodes(c)
        expect(yield* c.driven(n1.api.disable)).toBe(true)
        expect(c.masterName()).toBe("n2")
        const m1 = scrape((yield* n1.api.metrics).text)
        expect(m1.value("dictator_handovers_total", { outcome: "handed-over" })).toBe(1)
        expect(m1.count("dictator_handover_duration_seconds")).toBe(1)
        expect(m1.value("dictator_role", { role: "disabled" })).toBe(1)
        void n2
      })
    ))

  it.scoped("kill_clients_on_role_change false: no client is closed", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2, n3] = yield* threeNodes(c, { kill_clients_on_role_change: false })
        yield* c.crash(n1)
        yield* c.waitUntil("n2 master, n3 follows it", () => Effect.map(follows(c, n3, n2), (f) => f && c.masterName() === "n2"), { within: 3000 })
        yield* TestClock.adjust("1 second")
        for (const n of [n1, n2, n3]) expect((yield* commandsOf(c, n)).filter((x) => x.startsWith("CLIENT KILL"))).toEqual([])
      })
    ))

  it.scoped("announce_host / announce_port: the records and the replicas' REPLICAOF name the announced address; the node checks its Redis at node.host", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const n1 = yield* c.add(spec(1, { announce_host: "192.0.2.1", announce_port: 7001 }))
        yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 3000 })
        expect(c.master()?.json).toMatchObject({ name: "n1", host: "192.0.2.1", port: "7001" })
        // Its own Redis, at node.host, was promoted and is checked there.
        expect(yield* commandsOf(c, n1)).toContain("REPLICAOF NO ONE")
        expect((yield* c.world.inspect(n1.address)).role).toBe("master")
        const n2 = yield* c.add(spec(2))
        yield* c.waitUntil("n2 pointed at n1's announced address", () =>
          Effect.map(commandsOf(c, n2), (cs) => cs.includes("REPLICAOF 192.0.2.1 7001")), { within: 3000 })
        const members = (yield* n2.api.status).members
        expect(members.find((m) => m.name === "n1")).toMatchObject({ host: "192.0.2.1", port: 7001 })
        expect(members.find((m) => m.name === "n2")).toMatchObject({ host: "10.0.0.2", port: 6379 })
      })
    ))
})
