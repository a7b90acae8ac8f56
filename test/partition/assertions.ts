/** The assertions every partition scenario is judged by (issue 8); the bounds are in ./topology.ts. */
import { expect } from "@effect/vitest"
import { type Outcome, describeOverlaps } from "../chaos/topology.js"
import {
  CONVERGE_AFTER_HEAL_MS,
  type FaultTimes,
  type Figures,
  OVERLAP_BOUND_MS,
  type PartitionTopology
} from "./topology.js"

/** Checks every scenario shares: no split brain, no lost write outside the window, convergence. */
export const expectSafe = (o: Outcome<FaultTimes>, f: Figures) => {
  expect(f.maxOverlapMs, `two Redis accepted writes at once: ${describeOverlaps(o.report)}`).toBeLessThanOrEqual(OVERLAP_BOUND_MS)
  expect(
    f.lostOutsideWindow,
    `acknowledged writes lost outside [cut, cut + ${f.windowMs} ms]: ${o.lost
      .filter((a) => a.at < o.result.cutStartedAt || a.at > o.result.faultAt + f.windowMs)
      .slice(0, 5)
      .map((a) => `${a.member}@${a.address} ${a.at - o.result.faultAt} ms`)
      .join(", ")}`
  ).toBe(0)
  expect(f.failovers, "at most one failover per fault").toBeLessThanOrEqual(1)
  expect(f.convergedAfterHealMs, "converged after the heal").toBeLessThan(CONVERGE_AFTER_HEAL_MS)
  expect(o.after.replicas, "every other Redis (old masters too) a linked replica of the master").toHaveLength(2)
}

/** The old master was cut off (or deposed): one failover, and it stopped acknowledging in the scenario's window, before the new master took writes. */
export const expectFencedFailover = (o: Outcome<FaultTimes>, f: Figures) => {
  expect(f.failovers, "one failover").toBe(1)
  expect(o.after.master.name, "a new master").not.toBe(o.before.master.name)
  expect(o.after.replicas, "the old master rejoined as a replica").toContain(o.before.master.name)
  expect(f.oldMasterLastAckAfterMs ?? 0, `the old master acknowledged writes until ${f.oldMasterLastAckAfterMs} ms after the cut`).toBeLessThanOrEqual(
    f.windowMs
  )
  expect(f.oldAckedAfterNewWritable, "writes the old master acknowledged after the new one accepted writes").toBe(0)
  expectSafe(o, f)
}

/** Nothing a quorum depends on was lost: the same master, the same epoch, throughout. */
export const expectNoFailover = (o: Outcome<FaultTimes>, f: Figures) => {
  expect(f.failovers, "no failover").toBe(0)
  expect(o.after.master.name, "the same master").toBe(o.before.master.name)
  expect(o.after.master.czxid, "the same master epoch").toBe(o.before.master.czxid)
  expectSafe(o, f)
}

export const replicasOf = (t: PartitionTopology, o: { readonly before: { readonly master: { readonly name: string } } }) =>
  t.nodes.map((n) => n.name).filter((n) => n !== o.before.master.name)

