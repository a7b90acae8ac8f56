/**
 * Failsafe mode (issue 13) where it must NOT keep the master: ZooKeeper reachable from the
 * replicas but not from the master (network namespaces + nftables, the partition suite's bed).
 * The replicas reach ZooKeeper, so they answer no to the master's failsafe requests: the master
 * fences at fence_after_ms exactly as without failsafe, a replica is promoted once the old
 * master's session expires, and no two Redis servers ever take writes at once.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { netnsSupport } from "../support/netns.js"
import { expectFencedFailover } from "./assertions.js"
import { requireNetns } from "./support.js"
import { PartTopo, ZK_HOSTS, partition, partitionLayer, partitionScenario } from "./topology.js"

const support = await netnsSupport()
const now = Clock.currentTimeMillis

// The hosts are not each other's loopback: their POST /failsafe needs the shared http_token_file,
// so the replicas' "no" below is their answer, not the guard's 403.
const tokenFile = join(mkdtempSync(join(tmpdir(), "dictator-failsafe-")), "http.token")
writeFileSync(tokenFile, "partition-failsafe-token-0123456789\n", { mode: 0o600 })

describe.skipIf(requireNetns(support))("partition, failsafe on", () => {
  layer(partitionLayer("partfs", { extra: { failsafe: true, http_token_file: tokenFile } }), { timeout: "180 seconds", excludeTestServices: true })(
    "failsafe mode on namespaces",
    (it) => {
      it.effect("the master cut off from ZooKeeper only for 12 s: the replicas answer no, the master fences, a replica is promoted, never two writable masters", () =>
        Effect.gen(function* () {
          const t = yield* PartTopo
          const { outcome: o, figures: f } = yield* partitionScenario(t, "failsafe-master-zk-cut", "failsafe: master cut from ZooKeeper", ({ before }) =>
            Effect.gen(function* () {
              const faultAt = yield* now
              yield* partition(t, [{ host: before.master.name, peers: [...ZK_HOSTS] }])
              yield* Effect.sleep("12 seconds")
              return { faultAt }
            })
          )
          expectFencedFailover(o, f)
          expect(f.maxOverlapMs, "two writable masters").toBe(0)
          const masterLog = t.nodes.find((n) => n.name === o.before.master.name)!.dictator.output()
          expect(masterLog).toContain("answered no (this node reaches ZooKeeper)")
        })
      )
    }
  )
})
