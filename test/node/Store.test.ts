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

describe("Store.removeMaster of a master znode not made by a dictator (issue 7 item 13d)", () => {
  it.scoped("a dictator elected between the read and the removal keeps its master znode", () =>
    Effect.gen(function* () {
      const ensemble = yield* ZkEnsemble.make
      const bytes = (s: string) => new TextEncoder().encode(s)
      const paths = servicePaths("svc")
      // Another program's master znode (no epoch bump), as this node last saw it.
      const other = yield* ensemble.session()
      yield* other.ensurePath(paths.service)
      yield* other.create(paths.epoch, new Uint8Array(), "persistent")
      yield* other.create(paths.master, bytes(JSON.stringify({ host: "10.0.0.7", port: "6379", name: "x" })), "ephemeral")
      // Between this node's read of the master znode and its removal, x goes and a dictator is elected.
      let interleave = false
      const dictator = yield* ensemble.session()
      const racing = Layer.effect(
        ZooKeeper,
        Effect.map(ZooKeeper, (zk) => ({
          ...zk,
          get: (path: string) =>
            Effect.tap(zk.get(path), () =>
              path !== paths.master || !interleave
                ? Effect.void
                : Effect.gen(function* () {
                    interleave = false
                    yield* other.remove(paths.master, -1)
                    const record = bytes(JSON.stringify({ host: "10.0.0.2", port: "6379", name: "n2" }))
                    yield* dictator.transaction([
                      { op: "create", path: paths.master, data: record, mode: "ephemeral" },
                      { op: "set", path: paths.epoch, data: record, version: -1 }
                    ])
                  }).pipe(Effect.orDie)
            )
        }))
      )
      const store = Context.get(
        yield* Layer.build(Layer.provide(Store.layer, Layer.merge(config, Layer.provide(racing, layerSession(ensemble))))),
        Store.Store
      )
      const view = yield* store.refreshMaster
      expect(view).toMatchObject({ _tag: "Present", epochVersion: null, version: 0 })
      if (view._tag !== "Present") return
      interleave = true
      yield* store.removeMaster(view)
      const n = ensemble.get(paths.master)
      expect(n._tag).toBe("Some")
      expect(n._tag === "Some" && new TextDecoder().decode(n.value.data)).toContain('"name":"n2"')
    })
  )
})
