/**
 * Network partitions that today's code does not survive (issue 8 scenarios 1, 2, 3, 6, 7; the fixes
 * are issue 7's): the same bed, service, workload and strict assertions as scenarios.test.ts, in
 * a file of their own so they can be run, or left out, as one. Each fails on its first violated
 * bound and prints its figures in a `[partition]` line either way.
 *
 * - 1, 2, 7: a dropped ZooKeeper connection is silent (node-zookeeper-client has no read
 *   timeout), so the master's dictator never fences: the old master acknowledges writes until
 *   Redis's own min-replicas check or its replicas' departure stops it, seconds after the cut.
 * - 3: votes need a majority of the visible others and a deposed node is not excluded, so the
 *   master moves back and forth and each winner takes writes alone (vote flapping).
 * - 6: the same missing hysteresis: the flapping master is voted down, wins the next election
 *   itself (its link is up again, it has the highest offset), and is voted down again — two
 *   failovers for one fault. Timing-dependent: it failed in 2 of the first 4 runs here.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { netnsSupport } from "../support/netns.js"
import { masterOf } from "../chaos/topology.js"
import { requireNetns } from "./support.js"
import { expectFencedFailover, expectSafe, replicasOf } from "./assertions.js"
import { PartTopo, ZK_HOSTS, allBut, partition, partitionLayer, partitionScenario, zkServerOf } from "./topology.js"

const support = await netnsSupport()
const now = Clock.currentTimeMillis

describe.skipIf(requireNetns(support))("partition", () => {
  layer(partitionLayer("part-unsafe"), { timeout: "180 seconds", excludeTestServices: true })(
    "known unsafe on today's code (issue 7: silent ZooKeeper, vote flapping)",
    (it) => {
      it.effect("1. the master host cut off from everything but its own clients for 8 s: the old master fenced within the window, before the new one takes writes", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "1-master-isolated", "1. master host isolated", ({ before }) =>
            Effect.gen(function* () {
              const old = before.master.name
              const faultAt = yield* now
              yield* partition(t, [{ host: old, peers: allBut(t, old) }])
              yield* Effect.sleep("8 seconds")
              return { faultAt }
            })
          )
          expectFencedFailover(o, f)
        })
      )

      it.effect("2. the master host cut off from ZooKeeper only (replicas still reach it) for 12 s: fenced within the window", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "2-master-zk-cut", "2. master cut from ZooKeeper", ({ before }) =>
            Effect.gen(function* () {
              const faultAt = yield* now
              yield* partition(t, [{ host: before.master.name, peers: [...ZK_HOSTS] }])
              yield* Effect.sleep("12 seconds")
              return { faultAt }
            })
          )
          expectFencedFailover(o, f)
        })
      )

      it.effect("3. the master's Redis unreachable from the replicas only, every dictator reaching ZooKeeper, for 10 s: at most one failover, no two writers", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "3-asymmetric", "3. master's Redis unreachable from the replicas", ({ before }) =>
            Effect.gen(function* () {
              const master = masterOf(t, before)
              const faultAt = yield* now
              yield* partition(t, [
                { host: master.name, peers: replicasOf(t, { before }), direction: "in", localPorts: [master.redis.port] }
              ])
              yield* Effect.sleep("10 seconds")
              return { faultAt }
            })
          )
          expect(f.oldAckedAfterNewWritable, "writes the old master acknowledged after a new one accepted writes").toBe(0)
          expectSafe(o, f)
        })
      )

      it.effect("6. the master host's link flapping (cut/heal every 500 ms for 30 s): at most one failover, no two writers", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "6-flapping", "6. master link flapping", ({ before }) =>
            Effect.gen(function* () {
              const old = before.master.name
              const faultAt = yield* now
              // Toggled on a fixed 500 ms schedule (the time the nft commands take comes out of
              // each half-period, not on top of it), for 30 s: 60 toggles. Healed on failure too.
              yield* Effect.addFinalizer(() => t.bed.heal(old).pipe(Effect.ignore))
              for (let i = 0; i < 60; i++) {
                if (i % 2 === 0) yield* t.bed.cut({ host: old, peers: allBut(t, old) })
                else yield* t.bed.heal(old)
                const wait = faultAt + (i + 1) * 500 - (yield* now)
                if (wait > 0) yield* Effect.sleep(`${wait} millis`)
              }
              return { faultAt }
            })
          )
          if (f.failovers === 1) {
            expect(f.oldAckedAfterNewWritable, "writes the old master acknowledged after a new one accepted writes").toBe(0)
          }
          expectSafe(o, f)
        })
      )

      it.effect("7. a clean split, master + one ZooKeeper server vs two replicas + two ZooKeeper servers, for 12 s: the minority fenced within the window", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "7-split", "7. majority/minority split", ({ before }) =>
            Effect.gen(function* () {
              const old = before.master.name
              // The master's own ZooKeeper server goes with it: its session is on the minority side.
              const zk = yield* zkServerOf(t, masterOf(t, before))
              const minority = [old, zk]
              const majority = allBut(t, ...minority)
              const faultAt = yield* now
              yield* partition(
                t,
                minority.map((host) => ({ host, peers: majority }))
              )
              yield* Effect.sleep("12 seconds")
              return { faultAt }
            })
          )
          expectFencedFailover(o, f)
        })
      )
    }
  )
})
