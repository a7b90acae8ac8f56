/**
 * Issue 9: the chaos suite's kill scenario once on a secured setup. The dictators authenticate to
 * Redis as an ACL user with exactly the least ACL (`redis_auth`, password from a file; replicas
 * replicate as that user through the masteruser/masterauth the dictators set) and to ZooKeeper
 * with digest credentials (`zk_auth`: every znode creator-all + world-read). kill -9 of the
 * master's Redis under a write load: a new master is elected, no acknowledged write is lost, and
 * the restarted Redis rejoins as a replica, as in failover.test.ts.
 *
 * The `default` Redis user stays open here for the harness's own writer and checker (they do not
 * speak AUTH); test/integration/secured.test.ts covers Redis servers with `default` off.
 */
import { expect, layer } from "@effect/vitest"
import * as path from "node:path"
import { Effect, Layer } from "effect"
import { LEAST_ACL } from "../support/acl.js"
import { tempDir, writeFile } from "../support/servers.js"
import { describeOverlaps, FENCING_WINDOW_MS, fmtMs, killMasterRedis, makeTopology, newWritableAfter, RESTART_WINDOW_MS, scenario, summary, Topo } from "./topology.js"

const REDIS_PASSWORD = "chaos-redis-s3cret"

const securedTopology = Layer.scoped(
  Topo,
  Effect.gen(function* () {
    const dir = yield* tempDir("chaos-secured")
    const redisPassword = path.join(dir, "redis.password")
    const zkCredentials = path.join(dir, "zk.auth")
    yield* writeFile(redisPassword, `${REDIS_PASSWORD}\n`)
    yield* writeFile(zkCredentials, "dictator:chaos-zk-s3cret\n")
    return yield* makeTopology("chaos-secured", {
      redisConfigLines: [`user dictator on >${REDIS_PASSWORD} ${LEAST_ACL}`],
      readyTimeout: "60 seconds",
      extra: {
        redis_auth: { username: "dictator", password_file: redisPassword },
        zk_auth: { scheme: "digest", credentials_file: zkCredentials }
      }
    })
  })
)

layer(securedTopology, { timeout: "150 seconds", excludeTestServices: true })("chaos: secured (redis_auth + zk_auth)", (it) => {
  it.effect("a. kill -9 the master's Redis: a replica takes over, no acknowledged write lost; restarted, it rejoins as a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "secured-a", killMasterRedis)
      console.log(summary("secured a. kill -9 master redis", o, { "new writable master after": fmtMs(newWritableAfter(o)) }))
      expect(o.after.master.name, "a new master").not.toBe(o.result.old)
      expect(o.after.replicas, "the failed node rejoined as a replica").toContain(o.result.old)
      expect(o.after.replicas).toHaveLength(2)
      expect(o.lost, "acknowledged writes lost").toEqual([])
      expect(o.report.maxOverlapMs, `two writable masters: ${describeOverlaps(o.report)}`).toBeLessThanOrEqual(FENCING_WINDOW_MS)
      expect(o.report.maxUnplacedMs).toBeLessThanOrEqual(RESTART_WINDOW_MS)
    })
  )
})
