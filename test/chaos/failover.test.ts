/**
 * Chaos, process deaths (issue 3, Proof 1, scenarios a, b, c, j, i) on a real 3-server ZooKeeper
 * ensemble, 3 redis-servers and 3 dictators: kill -9 (or SIGTERM) the master's processes under
 * a write load, then check that the service converges to one writable master named by the
 * znode, that no two Redis servers took writes at once outside the documented window, and that
 * the failed node rejoins as a replica once restarted.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { awaitConverged, longestAckGap } from "../support/workload.js"
import {
  FENCING_WINDOW_MS,
  HOST_RESTART_WINDOW_MS,
  RESTART_WINDOW_MS,
  type Outcome,
  Topo,
  awaitNewMaster,
  describeOverlaps,
  fmtMs,
  killMasterRedis,
  layer as topology,
  masterOf,
  newWritableAfter,
  scenario,
  summary
} from "./topology.js"

/** What every scenario asserts once the service has converged again. */
const expectSound = (o: Outcome<unknown>, failed: string, restartWindowMs = RESTART_WINDOW_MS) => {
  expect(o.after.master.name, "a new master").not.toBe(failed)
  expect(o.after.replicas, "the failed node rejoined as a replica").toContain(failed)
  expect(o.after.replicas).toHaveLength(2)
  expect(o.report.maxOverlapMs, `two writable masters: ${describeOverlaps(o.report)}`).toBeLessThanOrEqual(FENCING_WINDOW_MS)
  expect(o.report.maxUnplacedMs, "a restarted Redis writable before its dictator placed it").toBeLessThanOrEqual(restartWindowMs)
}

layer(topology("chaos-failover"), { timeout: "120 seconds", excludeTestServices: true })("chaos: process deaths", (it) => {
  it.effect("a. kill -9 the master's Redis: a replica takes over; restarted, it rejoins as a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "a", killMasterRedis)
      console.log(summary("a. kill -9 master redis", o, { "new writable master after": fmtMs(newWritableAfter(o)) }))
      expectSound(o, o.result.old)
    })
  )

  it.effect("b. kill -9 the master's dictator: a new master once its session is gone; restarted, its Redis becomes a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "b", ({ before }) =>
        Effect.gen(function* () {
          const old = masterOf(t, before)
          const faultAt = yield* Clock.currentTimeMillis
          yield* old.dictator.kill9
          yield* awaitNewMaster(t, old.name)
          yield* old.dictator.start
          return { faultAt, oldPort: old.redis.port, old: old.name }
        })
      )
      console.log(summary("b. kill -9 master dictator", o, { "new writable master after": fmtMs(newWritableAfter(o)) }))
      expectSound(o, o.result.old)
    })
  )

  it.effect("c. kill -9 the master's Redis and dictator (host death); both restarted, it rejoins as a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "c", ({ before }) =>
        Effect.gen(function* () {
          const old = masterOf(t, before)
          const faultAt = yield* Clock.currentTimeMillis
          yield* Effect.all([old.redis.kill9, old.dictator.kill9], { concurrency: "unbounded", discard: true })
          yield* awaitNewMaster(t, old.name)
          // The host comes back: Redis first, then its dictator.
          yield* old.redis.start
          yield* old.dictator.start
          return { faultAt, oldPort: old.redis.port, old: old.name }
        })
      )
      console.log(summary("c. kill -9 master host", o, { "new writable master after": fmtMs(newWritableAfter(o)) }))
      expectSound(o, o.result.old, HOST_RESTART_WINDOW_MS)
    })
  )

  it.effect("j. SIGTERM of the master's dictator under write load: handover without losing an acknowledged write", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "j", ({ before }) =>
        Effect.gen(function* () {
          const old = masterOf(t, before)
          const faultAt = yield* Clock.currentTimeMillis
          yield* old.dictator.stop // SIGTERM, waits for the exit
          const exitCode = yield* old.dictator.exitCode
          const stoppedAt = yield* Clock.currentTimeMillis
          yield* awaitNewMaster(t, old.name)
          yield* old.dictator.start
          return { faultAt, stoppedAt, exitCode, oldPort: old.redis.port, old: old.name }
        })
      )
      const { faultAt, stoppedAt, exitCode } = o.result
      const firstOnNew = o.acks.find((a) => a.at >= faultAt && a.address !== `127.0.0.1:${o.result.oldPort}`)
      const gap = longestAckGap(o.acks, faultAt, firstOnNew?.at ?? stoppedAt)
      console.log(
        summary("j. SIGTERM master dictator", o, {
          "dictator exited after": fmtMs(stoppedAt - faultAt),
          "exit code": String(exitCode),
          "writes blocked (longest gap between acks)": fmtMs(gap.ms),
          "first ack on the new master after": fmtMs(firstOnNew && firstOnNew.at - faultAt)
        })
      )
      expectSound(o, o.result.old)
      expect(o.lost.map((a) => a.member), "acknowledged writes lost on the graceful path").toEqual([])
    })
  )

  it.effect("i. 20 failovers in a row (kill -9 the master's Redis, wait for the new master, restart it)", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const rounds = 20
      const o = yield* scenario(t, "i", ({ before }) =>
        Effect.gen(function* () {
          const times: Array<number> = []
          let current = before
          const masters: Array<string> = [before.master.name]
          for (let round = 1; round <= rounds; round++) {
            const old = masterOf(t, current)
            const faultAt = yield* Clock.currentTimeMillis
            yield* old.redis.kill9
            const next = yield* awaitNewMaster(t, old.name)
            times.push((yield* Clock.currentTimeMillis) - faultAt)
            yield* old.redis.start
            current = yield* awaitConverged(t, "60 seconds")
            expect(current.master.name, `round ${round}`).toBe(next.name)
            expect(current.replicas, `round ${round}: ${old.name} rejoined`).toContain(old.name)
            masters.push(current.master.name)
          }
          return { times, masters, old: masters[masters.length - 2]! }
        })
      )
      const { times, masters } = o.result
      const mean = times.reduce((a, b) => a + b, 0) / times.length
      console.log(
        summary(`i. ${rounds} failovers`, o, {
          "failovers converged": `${times.length}/${rounds}`,
          "new writable master after (mean)": fmtMs(mean),
          "(max)": fmtMs(Math.max(...times)),
          masters: masters.join(">")
        })
      )
      expect(times).toHaveLength(rounds)
      expectSound(o, o.result.old)
    })
  )
})
