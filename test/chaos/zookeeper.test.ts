/**
 * Chaos, ZooKeeper failures (issue 3, Proof 1, scenarios g, h) on a real 3-server ensemble
 * (tickTime 2000), 3 redis-servers and 3 dictators, under a write load: kill the ZooKeeper
 * leader; lose the quorum for 10 s. The service keeps (or regains) exactly one master and never
 * has two writable ones; while ZooKeeper is away the master fences itself before its session
 * could expire (DESIGN.md §2.3).
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import { waitUntil } from "../support/servers.js"
import { awaitConverged, longestAckGap } from "../support/workload.js"
import {
  FENCING_WINDOW_MS,
  RESTART_WINDOW_MS,
  type Outcome,
  Topo,
  awaitQuorum,
  describeOverlaps,
  fmtMs,
  layer as topology,
  scenario,
  summary
} from "./topology.js"

/** zk_session_timeout_ms of src/Config.ts (the harness keeps it): a master must be fenced before this. */
const SESSION_TIMEOUT_MS = 6000

const now = Clock.currentTimeMillis

const expectNoSplitBrain = (o: Outcome<unknown>) => {
  expect(o.report.maxOverlapMs, `two writable masters: ${describeOverlaps(o.report)}`).toBeLessThanOrEqual(FENCING_WINDOW_MS)
  expect(o.report.maxUnplacedMs, "a restarted Redis writable before its dictator placed it").toBeLessThanOrEqual(RESTART_WINDOW_MS)
  expect(o.after.replicas).toHaveLength(2)
}

layer(topology("chaos-zookeeper"), { timeout: "120 seconds", excludeTestServices: true })("chaos: ZooKeeper failures", (it) => {
  it.effect("g. kill -9 the ZooKeeper leader: the service keeps (or regains) one master, no split brain", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "g", () =>
        Effect.gen(function* () {
          const modes = yield* Effect.forEach(t.zk.servers, (s) => s.mode, { concurrency: "unbounded" })
          const leader = t.zk.servers[modes.indexOf("leader")]
          expect(leader, `a leader among ${modes.join(", ")}`).toBeDefined()
          const others = t.zk.servers.filter((s) => s !== leader)
          const faultAt = yield* now
          yield* leader!.kill9
          yield* waitUntil(
            "a new ZooKeeper leader",
            Effect.forEach(others, (s) => s.mode, { concurrency: "unbounded" }).pipe(
              Effect.map((ms) => (ms.includes("leader") && ms.every((m) => m === "leader" || m === "follower") ? Option.some(ms) : Option.none()))
            ),
            { timeout: "60 seconds", interval: "100 millis" }
          )
          const newLeaderAt = yield* now
          // One master again with two servers of three.
          const during = yield* awaitConverged(t, "60 seconds")
          const convergedAt = yield* now
          yield* leader!.start
          yield* awaitQuorum(t)
          return { faultAt, newLeaderAt, convergedAt, during, leader: leader!.id }
        })
      )
      const { faultAt, newLeaderAt, convergedAt, during } = o.result
      const gap = longestAckGap(o.acks, faultAt, convergedAt)
      console.log(
        summary("g. kill -9 ZooKeeper leader", o, {
          "new ZooKeeper leader after": fmtMs(newLeaderAt - faultAt),
          "converged after": fmtMs(convergedAt - faultAt),
          master: during.master.czxid === o.before.master.czxid ? "kept" : `changed to ${during.master.name}`,
          "writes blocked (longest gap between acks)": fmtMs(gap.ms)
        })
      )
      expectNoSplitBrain(o)
    })
  )

  it.effect("h. lose the ZooKeeper quorum for 10 s: the master fences itself, no split brain, one master after", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "h", () =>
        Effect.gen(function* () {
          const modes = yield* Effect.forEach(t.zk.servers, (s) => s.mode, { concurrency: "unbounded" })
          // The leader and one follower go: the last server has no quorum.
          const leaderIndex = Math.max(0, modes.indexOf("leader"))
          const stopped = [t.zk.servers[leaderIndex]!, t.zk.servers[(leaderIndex + 1) % t.zk.servers.length]!]
          const faultAt = yield* now
          yield* Effect.forEach(stopped, (s) => s.kill9, { concurrency: "unbounded", discard: true })
          yield* Effect.sleep("10 seconds")
          const restoreAt = yield* now
          yield* Effect.forEach(stopped, (s) => s.start, { concurrency: "unbounded", discard: true })
          yield* awaitQuorum(t)
          const quorumAt = yield* now
          return { faultAt, restoreAt, quorumAt }
        })
      )
      const { faultAt, restoreAt, quorumAt } = o.result
      const fenceDeadline = faultAt + SESSION_TIMEOUT_MS
      const lastAckBefore = [...o.acks].reverse().find((a) => a.at < restoreAt)
      const lastProbeBefore = [...o.checker.samples()].reverse().find((s) => s.accepted && s.at < restoreAt)
      const lateAcks = o.acks.filter((a) => a.sentAt >= fenceDeadline && a.at < restoreAt)
      const lateProbes = o.checker.samples().filter((s) => s.accepted && s.sentAt >= fenceDeadline && s.at < restoreAt)
      const firstAfter = o.acks.find((a) => a.at >= restoreAt)
      console.log(
        summary("h. ZooKeeper quorum lost 10 s", o, {
          "last write acked after": fmtMs(lastAckBefore && lastAckBefore.at - faultAt),
          "last probe accepted after": fmtMs(lastProbeBefore && lastProbeBefore.at - faultAt),
          "quorum back after restart in": fmtMs(quorumAt - restoreAt),
          "first write after restore": fmtMs(firstAfter && firstAfter.at - restoreAt),
          master: o.after.master.czxid === o.before.master.czxid ? "kept" : `changed to ${o.after.master.name}`
        })
      )
      expect(lateAcks, "writes acknowledged after the master's session could have expired").toEqual([])
      expect(lateProbes.map((s) => `${s.name}@${s.sentAt - faultAt}`), "writes accepted after the master's session could have expired").toEqual([])
      expectNoSplitBrain(o)
    })
  )
})
