/**
 * Chaos, frozen processes and slow commands (issue 3, Proof 1, scenarios d, e, f) on a real
 * 3-server ZooKeeper ensemble, 3 redis-servers and 3 dictators: SIGSTOP the master's host (Redis
 * and dictator) or only its Redis, or make it busy with a slow command, under a write load.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import { redisCommand, waitUntil } from "../support/servers.js"
import { awaitConverged, staleClient } from "../support/workload.js"
import {
  DOWN_AFTER_MS,
  FENCING_WINDOW_MS,
  RESTART_WINDOW_MS,
  STALE_ACK_WINDOW_MS,
  type Outcome,
  Topo,
  awaitNewMaster,
  describeOverlaps,
  fmtMs,
  layer as topology,
  masterOf,
  scenario,
  summary
} from "./topology.js"

const expectNoSplitBrain = (o: Outcome<unknown>) => {
  expect(o.report.maxOverlapMs, `two writable masters: ${describeOverlaps(o.report)}`).toBeLessThanOrEqual(FENCING_WINDOW_MS)
  expect(o.report.maxUnplacedMs, "a restarted Redis writable before its dictator placed it").toBeLessThanOrEqual(RESTART_WINDOW_MS)
}

/** A failover happened and the old master is a linked replica of the new one. */
const expectFailedOver = (o: Outcome<unknown>, old: string) => {
  expect(o.after.master.name, "a new master").not.toBe(old)
  expect(o.after.replicas, "the old master rejoined as a replica").toContain(old)
  expect(o.after.replicas).toHaveLength(2)
  expectNoSplitBrain(o)
}

const now = Clock.currentTimeMillis

layer(topology("chaos-freeze"), { timeout: "120 seconds", excludeTestServices: true })("chaos: frozen processes, slow commands", (it) => {
  it.effect("f. a slow command shorter than down_after_ms on the master (DEBUG SLEEP 0.5): no failover", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "f", ({ before }) =>
        Effect.gen(function* () {
          const master = masterOf(t, before)
          const faultAt = yield* now
          for (let i = 0; i < 3; i++) {
            expect(yield* redisCommand(master.redis.port, ["DEBUG", "SLEEP", "0.5"])).toBe("OK")
            yield* Effect.sleep("1 second")
          }
          // Longer than a detection time after the last sleep: a failover would have shown by now.
          yield* Effect.sleep(2 * DOWN_AFTER_MS)
          return { faultAt }
        })
      )
      const epochs = o.writer.follower.history().map((h) => h.master?.czxid ?? "none")
      console.log(summary("f. DEBUG SLEEP 0.5 on master x3", o, { "master znode epochs seen": epochs.join(",") }))
      expect(o.after.master.name, "the same master").toBe(o.before.master.name)
      expect(o.after.master.czxid, "the same master epoch").toBe(o.before.master.czxid)
      expect(epochs, "the master znode never changed").toEqual([o.before.master.czxid])
      expect(o.after.replicas).toHaveLength(2)
      expectNoSplitBrain(o)
    })
  )

  it.effect("d. SIGSTOP the master's Redis and dictator until a new master is elected, then SIGCONT: a stale client sees writes acknowledged only in the moments after the wake-up, before its dictator pauses it", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const o = yield* scenario(t, "d", ({ before }) =>
        Effect.gen(function* () {
          const old = masterOf(t, before)
          const stale = yield* staleClient(old.redis, { tag: "d-stale" })
          yield* waitUntil(
            "the stale client's first acknowledged writes",
            Effect.sync(() => (stale.acks().length >= 5 ? Option.some(true) : Option.none())),
            { timeout: "10 seconds", interval: "10 millis" }
          )
          const faultAt = yield* now
          // The whole host freezes: both processes in the same tick.
          yield* Effect.all([old.redis.signal("SIGSTOP"), old.dictator.signal("SIGSTOP")], { discard: true })
          yield* awaitNewMaster(t, old.name)
          const resumedAt = yield* now
          yield* Effect.all([old.redis.signal("SIGCONT"), old.dictator.signal("SIGCONT")], { discard: true })
          // The old master must stop acknowledging: wait until the stale client's writes fail again.
          const failuresAtResume = stale.failures().filter((f) => f.at >= resumedAt).length
          yield* waitUntil(
            "the stale client's writes to fail on the old master",
            Effect.sync(() => (stale.failures().filter((f) => f.at >= resumedAt).length > failuresAtResume + 3 ? Option.some(true) : Option.none())),
            { timeout: "30 seconds", interval: "20 millis" }
          )
          yield* stale.stop
          return { faultAt, resumedAt, oldPort: old.redis.port, old: old.name, stale }
        })
      )
      const { faultAt, resumedAt, oldPort, stale } = o.result
      const first = o.checker.firstAcceptSince(faultAt, oldPort)
      expect(first, "a new master took writes while the old one was frozen").toBeDefined()
      // Conservative: the new master took writes at the latest when this probe was executed.
      const newWritableAt = first!.sentAt
      const late = stale.ackedSince(newWritableAt)
      console.log(
        summary("d. SIGSTOP master host", o, {
          "new writable master after": fmtMs(first!.at - faultAt),
          "frozen for": fmtMs(resumedAt - faultAt),
          "stale acks after the new master was writable": `${late.length}, the last ${late.length === 0 ? "-" : fmtMs(late.at(-1)!.at - resumedAt)} after the wake-up (window ${STALE_ACK_WINDOW_MS} ms; ${stale.acks().length} acked, ${stale.failures().length} failed in all)`,
          "last stale failure": stale.failures().at(-1)?.error.slice(0, 60) ?? "-"
        })
      )
      expectFailedOver(o, o.result.old)
      // Only in the moments after the wake-up, before the dictator paused its Redis.
      const outside = late.filter((a) => a.at - resumedAt > STALE_ACK_WINDOW_MS)
      expect(outside, `stale acks after the new master was writable, later than ${STALE_ACK_WINDOW_MS} ms after the wake-up: ${JSON.stringify(late)} (woke at ${resumedAt})`).toEqual([])
    })
  )

  // e runs last: it exposes a dictator bug that leaves the old master's Redis paused (see the
  // report), which no reset of this file can undo; the other scenarios must not inherit it.
  it.effect("e. SIGSTOP the master's Redis for twice the detection time, then SIGCONT (5 rounds): failover, the old master rejoins as a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      // Five rounds: which of the master's own health check and the replicas' votes sees the
      // frozen Redis down first is a race of a few ms, and the outcome differs (see the report).
      const rounds = 5
      const o = yield* scenario(t, "e", ({ before }) =>
        Effect.gen(function* () {
          let current = before
          const times: Array<string> = []
          let faultAt = 0
          let old = masterOf(t, current)
          for (let round = 1; round <= rounds; round++) {
            old = masterOf(t, current)
            faultAt = yield* now
            yield* old.redis.signal("SIGSTOP")
            yield* Effect.sleep(2 * DOWN_AFTER_MS)
            yield* old.redis.signal("SIGCONT")
            current = yield* awaitConverged(t, "45 seconds")
            expect(current.master.name, `round ${round}: a new master`).not.toBe(old.name)
            expect(current.replicas, `round ${round}: ${old.name} rejoined as a replica`).toContain(old.name)
            times.push(`${old.name}->${current.master.name}`)
          }
          return { faultAt, oldPort: old.redis.port, old: old.name, times }
        })
      )
      const { faultAt, oldPort } = o.result
      const first = o.checker.firstAcceptSince(faultAt, oldPort)
      console.log(
        summary(`e. SIGSTOP master redis 2 x down_after, ${rounds} rounds`, o, {
          failovers: o.result.times.join(" "),
          "new writable master after (last round)": fmtMs(first && first.at - faultAt)
        })
      )
      expectFailedOver(o, o.result.old)
    })
  )
})
