/**
 * The operator's controls seen by whole nodes (in-memory ZooKeeper and Redis, TestClock):
 * maintenance mode (`control/maintenance`) stops every automatic failover and its removal lets it
 * happen; a switchover request (`control/switchover`) is run by the master's node, which records
 * the outcome and removes the request.
 */
import { describe, expect, it, vi } from "@effect/vitest"
import { Effect, Option, TestClock } from "effect"
import { encodeMaintenance, encodeSwitchoverRequest, parseSwitchoverResult, type SwitchoverResult } from "../../src/domain/Records.js"
import { type Cluster, type ClusterNode, makeCluster, type NodeSpec, withTestSettings } from "../support/cluster.js"

vi.setConfig({ testTimeout: 30_000 })

const spec = (i: number): NodeSpec => ({ name: `n${i}`, host: `10.0.0.${i}` })

const logged = (c: Cluster, node: string, fragment: string) => c.logs.filter((l) => l.node === node && l.message.includes(fragment)).length

const threeNodes = (c: Cluster) =>
  Effect.gen(function* () {
    const nodes = [] as Array<ClusterNode>
    for (const i of [1, 2, 3]) nodes.push(yield* c.add(spec(i)))
    yield* c.waitUntil("n1 master, n2 and n3 members", () => c.masterName() === "n1" && c.members().length === 3, { within: 3000 })
    return nodes as unknown as readonly [ClusterNode, ClusterNode, ClusterNode]
  })

const request = (id: string, to: string | null) =>
  encodeSwitchoverRequest({ id, to, at: null, requested_at: "2026-12-02T00:00:00.000Z", by: "test@host" })

describe("maintenance mode (dictator pause)", () => {
  it.scoped("the master's Redis dies: no failover while paused (logged once per node); resumed: a new master", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, n2] = yield* threeNodes(c)
        const operator = yield* c.ensemble.session()
        yield* operator.ensurePath(c.paths.control)
        yield* operator.create(c.paths.maintenance, encodeMaintenance({ since: "2026-12-02T00:00:00.000Z", by: "test@host" }), "persistent")
        yield* TestClock.adjust("1 second")
        for (const n of c.nodes) expect((yield* n.api.status).maintenance).toBe(true)
        const epoch = c.master()?.czxid

        yield* c.world.kill(n1.address)
        // Far past down_after_ms (1 s) and any election step.
        for (let i = 0; i < 10; i++) yield* TestClock.adjust("1 second")
        expect(c.masterName()).toBe("n1")
        expect(c.master()?.czxid).toBe(epoch)
        expect((yield* n1.api.status).role).toBe("master")
        expect((yield* c.world.inspect(n2.address)).role).toBe("replica")
        for (const n of ["n1", "n2", "n3"]) {
          expect(logged(c, n, "maintenance mode on: no automatic failover")).toBe(1)
          expect(logged(c, n, "resigning as master")).toBe(0)
          expect(logged(c, n, "deposing master")).toBe(0)
        }

        yield* operator.remove(c.paths.maintenance, -1)
        yield* c.waitUntil("a new master once resumed", () => c.masterName() !== null && c.masterName() !== "n1", { within: 5000 })
        for (const n of ["n2", "n3"]) expect(logged(c, n, "maintenance mode off: automatic failover resumes")).toBe(1)
      })
    ))
})

describe("switchover requests (dictator switchover)", () => {
  it.scoped("the master hands over to the named member, records the outcome and removes the request; a bad target is refused", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const [n1, , n3] = yield* threeNodes(c)
        const operator = yield* c.ensemble.session()
        yield* operator.ensurePath(c.paths.control)
        const result = Effect.map(operator.get(c.paths.switchoverResult), Option.flatMap((n) => parseSwitchoverResult(n.data))).pipe(Effect.orElseSucceed(() => Option.none<SwitchoverResult>()))

        yield* operator.create(c.paths.switchover, request("r1", "n3"), "persistent")
        yield* c.waitUntil("n3 master", () => c.masterName() === "n3" && c.master()?.owner === n3.sessionId(), { within: 10_000 })
        yield* c.waitUntil("the outcome of r1", () => Effect.map(result, Option.exists((r) => r.id === "r1")), { within: 5000 })
        expect(Option.getOrThrow(yield* result)).toMatchObject({ id: "r1", ok: true, from: "n1", to: "n3" })
        expect(Option.isNone(yield* operator.get(c.paths.switchover))).toBe(true)
        yield* c.waitUntil("n1 follows n3", () => Effect.map(c.world.inspect(n1.address), (s) => s.role === "replica" && s.master?.host === "10.0.0.3"), { within: 5000 })
        // The old master stays in the election (not disabled) and publishes its record again.
        yield* c.waitUntil("n1 a member again", () => c.members().includes("n1"), { within: 5000 })
        expect((yield* n1.api.status).enabled).toBe(true)

        yield* operator.create(c.paths.switchover, request("r2", "nosuch"), "persistent")
        yield* c.waitUntil("the outcome of r2", () => Effect.map(result, Option.exists((r) => r.id === "r2")), { within: 5000 })
        const refused = Option.getOrThrow(yield* result)
        expect(refused).toMatchObject({ id: "r2", ok: false, from: "n3", to: null })
        expect(refused.message).toMatch(/^nosuch is not a member of service svc \(members: (n1, n2|n2, n1)\)$/)
        expect(c.masterName()).toBe("n3")
        // Refused before anything was paused: the master kept taking writes.
        expect(logged(c, "n3", "handover (switchover")).toBe(0)
      })
    ))
})
