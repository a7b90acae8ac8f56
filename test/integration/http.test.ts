/**
 * The HTTP checks (issue 10) and the status (issue 14) on the built dictator with real servers:
 * while ZooKeeper is unreachable the node is live but not ready and /status?format=json answers
 * 503 {"state":"starting"}; once it is there /master, /replica?lag=, /health and /readiness answer
 * 200 where they should; a killed Redis shows in /status text with its reason.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { accepts, type DictatorProcess, dictator, readMaster, redisServer, waitUntil, zooKeeper } from "../support/servers.js"

const SVC = "it-http"

const codes = (d: DictatorProcess, paths: ReadonlyArray<string>) =>
  Effect.forEach(paths, (p) => Effect.map(d.http(p), (r) => [p, r.status] as const)).pipe(Effect.map((e) => Object.fromEntries(e)))

describe("HTTP checks on the built dictator", () => {
  it.scopedLive("starting, then master and replica checks, then a dead Redis in /status", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 2000 })
      yield* zk.stop
      expect(yield* accepts(zk.clientPort)).toBe(false)
      const redisA = yield* redisServer()
      const redisB = yield* redisServer()
      const extra = { zk_connect_timeout_ms: 1000, handover_timeout_ms: 0 }
      const a = yield* dictator({ name: "a", svc: SVC, zkHosts: [zk.connectString], redisPort: redisA.port, extra, node: { priority: 1 } })

      // Starting: alive, not ready; JSON status says so with 503.
      const starting = yield* a.http("/status?format=json")
      expect(starting).toEqual({ status: 503, body: `{"state":"starting"}` })
      expect(yield* codes(a, ["/liveness", "/readiness", "/master", "/replica", "/health"])).toEqual({
        "/liveness": 200,
        "/readiness": 503,
        "/master": 503,
        "/replica": 503,
        "/health": 503
      })

      yield* zk.start
      yield* waitUntil("a to be master", Effect.map(readMaster([zk.connectString], SVC), Option.filter((m) => m.name === "a")), {
        timeout: "60 seconds"
      }).pipe(Effect.tapError(() => Effect.logError(`dictator a's output:\n${a.output()}`)))
      const b = yield* dictator({ name: "b", svc: SVC, zkHosts: [zk.connectString], redisPort: redisB.port, extra })
      const want = { a: { "/master": 200, "/replica": 503, "/health": 200, "/readiness": 200, "/liveness": 200 }, b: { "/master": 503, "/replica": 200, "/health": 200, "/readiness": 200, "/liveness": 200 } }
      const paths = Object.keys(want.a)
      const seen = yield* waitUntil(
        "a: 200 on /master, b: 200 on /replica",
        Effect.map(Effect.all({ a: codes(a, paths), b: codes(b, paths) }), (s) =>
          JSON.stringify(s) === JSON.stringify(want) ? Option.some(s) : Option.none()
        ),
        { timeout: "60 seconds", interval: "250 millis" }
      )
      expect(seen).toEqual(want)
      const master = yield* a.http("/master")
      expect(JSON.parse(master.body)).toMatchObject({ name: "a", role: "master", master: { state: "elected", name: "a" } })
      // A linked replica that took the initial sync is well within 1 MB; a bad ?lag= is a 400.
      expect((yield* b.http("/replica?lag=1MB")).status).toBe(200)
      expect((yield* b.http("/replica?lag=soon")).status).toBe(400)
      // Non-ASCII in the parameter is quoted in a header: the server must still answer.
      expect((yield* b.http("/replica?lag=%E4%B8%AD%0A")).status).toBe(400)

      // The master's Redis dies: the text status says why; the checks follow.
      yield* redisA.kill9
      const text = yield* waitUntil(
        "a's /status to show its Redis down",
        Effect.map(a.http("/status"), (r) => (/^redis: down since \S+: .+$/m.test(r.body) ? Option.some(r.body) : Option.none())),
        { timeout: "30 seconds", interval: "200 millis" }
      )
      expect(text).toMatch(/^redis: down since \S+: .*(refused|ECONNREFUSED)/im)
      expect((yield* a.http("/health")).status).toBe(503)
      expect((yield* a.http("/master")).status).toBe(503)
      yield* waitUntil(
        "b to answer 200 on /master",
        Effect.map(b.http("/master"), (r) => (r.status === 200 ? Option.some(true) : Option.none())),
        { timeout: "30 seconds", interval: "200 millis" }
      )
    })
  )
})
