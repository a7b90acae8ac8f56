/**
 * Network partitions on real network namespaces (issue 8, scenarios 1–7): a 3-server ZooKeeper
 * ensemble and three Redis + dictator hosts, each in a namespace of its own, cut apart with
 * nftables drop rules while a writer follows the master znode, a stale client stays on the old
 * master and a checker samples which Redis accepts writes.
 *
 * After each: the time two Redis accepted writes (≤ OVERLAP_BOUND_MS), acknowledged writes lost
 * (only those acknowledged within PARTITION_WINDOW_MS of the cut — DEPOSITION_WINDOW_MS for 3,
 * where the old master's dictator loses nothing it can see), no failover where no Redis and
 * no quorum was lost (4, 5), at most one failover per fault (6), convergence within
 * CONVERGE_AFTER_HEAL_MS of the heal with every old master a linked replica of the current one.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { netnsSupport } from "../support/netns.js"
import { masterOf } from "../chaos/topology.js"
import { requireNetns } from "./support.js"
import { expectFencedFailover, expectNoFailover, expectSafe, replicasOf } from "./assertions.js"
import { DEPOSITION_WINDOW_MS, PartTopo, ZK_HOSTS, allBut, partition, partitionLayer, partitionScenario, zkServerOf } from "./topology.js"

const support = await netnsSupport()
/** Scenario 6: cuts and heals, 500 ms each. */
const FLAPS = 60
const now = Clock.currentTimeMillis

describe.skipIf(requireNetns(support))("partition", () => {
  layer(partitionLayer("part"), { timeout: "180 seconds", excludeTestServices: true })(
    "network partitions (namespaces + nftables)",
    (it) => {
      it.effect("4. one replica cut off from everything for 10 s, then healed: no failover, no lost write", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "4-replica-cut", "4. replica cut off", ({ before }) =>
            Effect.gen(function* () {
              const replica = replicasOf(t, { before })[0]!
              const cut = yield* partition(t, [{ host: replica, peers: allBut(t, replica) }])
              yield* Effect.sleep("10 seconds")
              return cut
            })
          )
          expectNoFailover(o, f)
          expect(f.lost, "no acknowledged write lost").toBe(0)
        })
      )

      it.effect("5. the ZooKeeper server the master's dictator uses cut off from its peers for 15 s: no failover", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "5-zk-cut", "5. master's ZooKeeper server cut from its peers", ({ before }) =>
            Effect.gen(function* () {
              const zk = yield* zkServerOf(t, masterOf(t, before))
              const cut = yield* partition(t, [{ host: zk, peers: ZK_HOSTS.filter((z) => z !== zk) }])
              yield* Effect.sleep("15 seconds")
              return cut
            })
          )
          expectNoFailover(o, f)
          expect(f.lost, "no acknowledged write lost").toBe(0)
        })
      )

      it.effect("1. the master host cut off from everything but its own clients for 8 s: the old master fenced within the window, before the new one takes writes", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "1-master-isolated", "1. master host isolated", ({ before }) =>
            Effect.gen(function* () {
              const old = before.master.name
              const cut = yield* partition(t, [{ host: old, peers: allBut(t, old) }])
              yield* Effect.sleep("8 seconds")
              return cut
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
              const cut = yield* partition(t, [{ host: before.master.name, peers: [...ZK_HOSTS] }])
              yield* Effect.sleep("12 seconds")
              return cut
            })
          )
          expectFencedFailover(o, f)
        })
      )

      it.effect("3. the master's Redis unreachable from the replicas only, every dictator reaching ZooKeeper, for 10 s: deposed by its replicas' votes, silent within the deposition window, one failover, never two writers", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "3-asymmetric", "3. master's Redis unreachable from the replicas", ({ before }) =>
            Effect.gen(function* () {
              const master = masterOf(t, before)
              const cut = yield* partition(t, [
                { host: master.name, peers: replicasOf(t, { before }), direction: "in", localPorts: [master.redis.port] }
              ])
              yield* Effect.sleep("10 seconds")
              return cut
            }),
            // Nothing the old master's dictator sees is cut: it stops when deposed (topology.ts).
            DEPOSITION_WINDOW_MS
          )
          expect(f.maxOverlapMs, "two Redis accepted writes at once").toBe(0)
          expectFencedFailover(o, f)
        })
      )

      it.effect("6. the master host's link flapping (cut/heal every 500 ms for 30 s): at most one failover, no two writers, writes lost only in the deposition window before a failover", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "6-flapping", "6. master link flapping", ({ before }) =>
            Effect.gen(function* () {
              const old = before.master.name
              const faultAt = yield* now
              // Toggled on a fixed 500 ms schedule (the time the nft commands take comes out of
              // each half-period, not on top of it), for 30 s: 60 toggles. Healed on failure too.
              yield* Effect.addFinalizer(() => t.bed.heal(old).pipe(Effect.ignore))
              for (let i = 0; i < FLAPS; i++) {
                if (i % 2 === 0) yield* t.bed.cut({ host: old, peers: allBut(t, old) })
                else yield* t.bed.heal(old)
                const wait = faultAt + (i + 1) * 500 - (yield* now)
                if (wait > 0) yield* Effect.sleep(`${wait} millis`)
              }
              return { faultAt }
            }),
            // Any write of the flapping may be at risk (checked more tightly below).
            FLAPS * 500 + DEPOSITION_WINDOW_MS
          )
          if (f.failovers === 1) {
            expect(f.oldAckedAfterNewWritable, "writes the old master acknowledged after a new one accepted writes").toBe(0)
            // Each heal lets the old master take writes again (its proof renewed), while its
            // replication link may stay stalled (TCP backs off): writes its replicas never got are
            // lost when it is deposed — only those acknowledged in the deposition window before
            // the new master took writes.
            const newWritableAt = o.result.faultAt + (f.newMasterWritableAfterMs ?? 0)
            const early = o.lost.filter((a) => a.at < newWritableAt - DEPOSITION_WINDOW_MS)
            expect(
              early.map((a) => `${a.member} ${a.at - newWritableAt} ms`),
              `acknowledged writes lost more than ${DEPOSITION_WINDOW_MS} ms before the new master took writes`
            ).toEqual([])
          } else {
            expect(f.lost, "no failover: no acknowledged write lost").toBe(0)
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
              const cut = yield* partition(
                t,
                minority.map((host) => ({ host, peers: majority }))
              )
              yield* Effect.sleep("12 seconds")
              return cut
            })
          )
          expectFencedFailover(o, f)
        })
      )
    }
  )
})
