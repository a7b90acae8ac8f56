/**
 * What /status shows of the members: offsets as their Redis servers have them now, not as their
 * records last said (a record is rewritten for an offset change alone at most every 5 s).
 */
import { describe, expect, it, vi } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { makeCluster, type NodeSpec, withTestSettings } from "./support/cluster.js"

vi.setConfig({ testTimeout: 30_000 })

const spec = (i: number): NodeSpec => ({ name: `n${i}`, host: `10.0.0.${i}` })

describe("Node status", () => {
  it.scoped("statusNow reads every member's offset from its Redis; status keeps the records' (up to 5 s old)", () =>
    withTestSettings(
      Effect.gen(function* () {
        const c = yield* makeCluster()
        const n1 = yield* c.add(spec(1))
        yield* c.waitUntil("n1 master", () => c.masterName() === "n1", { within: 1000 })
        const n2 = yield* c.add(spec(2))
        yield* c.waitUntil("n2 replicates", () => Effect.map(c.world.inspect(n2.address), (s) => s.role === "replica" && s.linkUp), { within: 2000 })
        yield* TestClock.adjust("6 seconds")
        // The first change is published at once; the next one, within 5 s of it, is not.
        yield* c.world.write(n1.address, 500)
        yield* TestClock.adjust("300 millis")
        yield* c.world.write(n1.address, 300)
        yield* TestClock.adjust("200 millis")
        const real = (yield* c.world.inspect(n2.address)).offset
        const offsetIn = (members: ReadonlyArray<{ readonly name: string; readonly offset: number }>) => members.find((m) => m.name === "n2")?.offset
        expect(offsetIn((yield* n1.api.statusNow).members)).toBe(real)
        expect(offsetIn((yield* n1.api.status).members)).toBeLessThan(real)
      })
    ))
})
