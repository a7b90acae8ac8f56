/**
 * The Store on the in-memory ZooKeeper: ownership is proven by a quorum-fresh read (invariant 9),
 * and the driver's liveness probe goes through the quorum exactly while this session holds the
 * master znode (issue 8, scenario 7).
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import { DictatorConfig } from "../../src/Config.js"
import * as Store from "../../src/node/Store.js"
import { servicePaths } from "../../src/Paths.js"
import { ZkConnectionLost, ZooKeeper } from "../../src/ZooKeeper.js"
import { layerSession, ZkEnsemble } from "../support/InMemoryZooKeeper.js"
import { waitUntil } from "../support/servers.js"

const config = DictatorConfig.layerValue(DictatorConfig.fromObject({ svc_name: "svc", node: { name: "n1", host: "10.0.0.1" } }))

/** A session whose `sync` fails when `syncFails()` says so (its server cut off from the quorum). */
const flakySync = (syncFails: () => boolean) =>
  Layer.effect(
    ZooKeeper,
    Effect.map(ZooKeeper, (zk) => ({
      ...zk,
      sync: (path: string) => (syncFails() ? Effect.fail(new ZkConnectionLost({ op: "sync", path })) : zk.sync(path))
    }))
  )

const storeOn = (ensemble: ZkEnsemble, syncFails: () => boolean) =>
  Layer.provide(Store.layer, Layer.merge(config, Layer.provide(flakySync(syncFails), layerSession(ensemble))))

describe("Store.confirmOwnership", () => {
  it.scoped("true only after a sync: a read the quorum cannot vouch for proves nothing", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      let failing = false
      const store = Context.get(yield* Layer.build(storeOn(ensemble, () => failing)), Store.Store)
      expect(yield* store.createMaster({ name: "n1", host: "10.0.0.1", port: 6379 }, {})).toBe(true)
      expect(yield* store.confirmOwnership).toBe(true)
      failing = true
      expect(yield* store.confirmOwnership).toBe(false)
    })
  )
})

describe("Store: the liveness probe follows master ownership", () => {
  it.scopedLive("quorum-backed while this session holds the master znode (also while disconnected), a local read otherwise", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const ctx = yield* Layer.build(Layer.provideMerge(Store.layer, Layer.merge(config, layerSession(ensemble))))
      const store = Context.get(ctx, Store.Store)
      const zk = Context.get(ctx, ZooKeeper)
      const probe = (want: boolean, what: string) =>
        waitUntil(what, Effect.sync(() => (ensemble.quorumProbeOf(zk) === want ? Option.some(true) : Option.none())), {
          timeout: "5 seconds",
          interval: "10 millis"
        })
      expect(ensemble.quorumProbeOf(zk), "a node that is not master probes locally").toBe(false)
      expect(yield* store.createMaster({ name: "n1", host: "10.0.0.1", port: 6379 }, {})).toBe(true)
      // Switched on by the creation itself, before the watch shows the znode.
      expect(ensemble.quorumProbeOf(zk), "on as soon as the master znode is created").toBe(true)
      yield* ensemble.disconnect(zk)
      yield* Effect.sleep("100 millis")
      expect(ensemble.quorumProbeOf(zk), "still on while disconnected: the znode may still be ours").toBe(true)
      yield* ensemble.reconnect(zk)
      const view = yield* store.refreshMaster
      if (view._tag !== "Present") return expect.fail(`master znode ${view._tag}`)
      yield* store.removeMaster(view)
      yield* probe(false, "a local probe once the master znode is gone")
      // Another session's master znode: not ours, local probe.
      const other = yield* ensemble.session()
      yield* other.create(servicePaths("svc").master, new TextEncoder().encode("{}"), "ephemeral")
      yield* waitUntil(
        "the other session's master znode seen",
        Effect.map(store.master.get, (m) => (m !== null && m._tag !== "Absent" ? Option.some(m) : Option.none())),
        { timeout: "5 seconds", interval: "10 millis" }
      )
      expect(ensemble.quorumProbeOf(zk), "another session's master znode is not ours").toBe(false)
    })
  )
})
