/**
 * Network partitions that today's code does not survive yet (issue 8 scenarios 3 and 7): the
 * same bed, service, workload and strict assertions as scenarios.test.ts, in a file of their own
 * that `npm test` leaves out and `DICTATOR_PENDING=1` runs. Each fails on its first violated bound
 * and prints its figures in a `[partition]` line either way.
 *
 * - 3: the master's Redis cut from its replicas while every dictator reaches ZooKeeper: the master
 *   is deposed by its replicas' votes, which wait `down_after_ms` (1 s) of timeouts; until its
 *   dictator sees the znode gone it acknowledges writes its replicas never get (measured: the
 *   last about 1.44 s after the cut, against the 1.25 s fence window). No two writers, one
 *   failover. This fault needs its own documented window or a faster deposition.
 * - 7: the master's dictator is connected to the ZooKeeper server left in the minority. That
 *   server keeps answering (locally) until it notices the lost quorum (syncLimit × tickTime), so
 *   the liveness probe, a local read, sees no silence: the master is fenced when the server drops
 *   it (measured: last ack 1.9 s after the cut). The fix is a probe that goes through the quorum
 *   (a sync); its cost at idle is what keeps it out for now.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { netnsSupport } from "../support/netns.js"
import { masterOf } from "../chaos/topology.js"
import { requireNetns } from "./support.js"
import { expectFencedFailover, expectSafe, replicasOf } from "./assertions.js"
import { PartTopo, allBut, partition, partitionLayer, partitionScenario, zkServerOf } from "./topology.js"

const support = await netnsSupport()
const now = Clock.currentTimeMillis

describe.skipIf(requireNetns(support))("partition", () => {
  layer(partitionLayer("part-unsafe"), { timeout: "180 seconds", excludeTestServices: true })(
    "not yet within the window (scenarios 3 and 7)",
    (it) => {
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
