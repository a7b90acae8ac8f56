/**
 * The Store on the in-memory ZooKeeper: ownership is proven by a quorum-fresh read (invariant 9).
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { DictatorConfig } from "../../src/Config.js"
import * as Store from "../../src/node/Store.js"
import { ZkConnectionLost, ZooKeeper } from "../../src/ZooKeeper.js"
import { layerSession, ZkEnsemble } from "../support/InMemoryZooKeeper.js"

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
