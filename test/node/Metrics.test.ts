import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { DictatorConfig } from "../../src/Config.js"
import { Metrics, layer, type MetricsSnapshot } from "../../src/node/Metrics.js"
import { scrape } from "../support/prometheus.js"

const here = path.dirname(fileURLToPath(import.meta.url))
const config = DictatorConfig.layerValue(DictatorConfig.fromObject({ svc_name: "orders", node: { name: "redis2" } }))

const snapshot: MetricsSnapshot = {
  now: 10_000,
  role: "replica",
  enabled: true,
  session: { status: "disconnected", sessionId: "abc", generation: 1, since: 7_500 },
  master: { _tag: "Present", record: { name: "redis1", host: "10.0.0.1", port: 6379 }, version: 0, epoch: "4294967301", owner: "def", epochVersion: 3 },
  health: {
    _tag: "Healthy",
    at: 0,
    info: { role: "replica", master: { host: "10.0.0.1", port: 6379 }, linkUp: true, linkDownSinceSeconds: null, syncInProgress: false, offset: 1234, replid: "r", replicas: [] }
  },
  writesPaused: false,
  members: 3,
  lagBytes: 66,
  lag: { _tag: "Seconds", seconds: 0.2 }
}

/** Metric names a dashboard's expressions use (histogram series by their family name). */
const dashboardMetrics = (): ReadonlySet<string> => {
  const text = readFileSync(path.join(here, "..", "..", "examples", "grafana-dashboard.json"), "utf8")
  const exprs = [...text.matchAll(/"expr":\s*"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!)
  return new Set(exprs.flatMap((e) => [...e.matchAll(/\bdictator_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ""))))
}

describe("metrics", () => {
  it.effect("renders the snapshot in the Prometheus text format, labelled with service and node", () =>
    Effect.gen(function* () {
      const metrics = yield* Metrics
      yield* metrics.httpRequest("/status", 200)
      yield* metrics.httpRequest("/../../etc/passwd", 404)
      yield* metrics.sentinelRequest("SENTINEL")
      yield* metrics.sentinelRequest("FLUSHALL")
      yield* metrics.handover(0.4, "handed-over")
      const text = yield* metrics.render(snapshot)
      expect(text).toContain('dictator_role{role="replica",service="orders",node="redis2"} 1')
      const m = scrape(text)
      expect(m.value("dictator_role", { role: "replica" })).toBe(1)
      expect(m.value("dictator_role", { role: "master" })).toBe(0)
      expect(m.value("dictator_master_epoch")).toBe(4294967301)
      expect(m.value("dictator_zookeeper_last_contact_seconds")).toBe(2.5)
      expect(m.value("dictator_zookeeper_session_state", { state: "disconnected" })).toBe(1)
      expect(m.value("dictator_redis_replication_offset_bytes")).toBe(1234)
      expect(m.value("dictator_replication_lag_bytes")).toBe(66)
      expect(m.value("dictator_replication_lag_seconds")).toBe(0.2)
      expect(m.value("dictator_http_requests_total", { path: "/status", code: "200" })).toBe(1)
      // Label values are bounded: unknown paths and commands are "other".
      expect(m.value("dictator_http_requests_total", { path: "other", code: "404" })).toBe(1)
      expect(m.value("dictator_sentinel_requests_total", { command: "sentinel" })).toBe(1)
      expect(m.value("dictator_sentinel_requests_total", { command: "other" })).toBe(1)
      expect(m.value("dictator_handovers_total", { outcome: "handed-over" })).toBe(1)
      expect(m.value("dictator_handovers_total", { outcome: "refused" })).toBe(0)
      expect(m.count("dictator_handover_duration_seconds")).toBe(1)
      const unknown = scrape(yield* metrics.render({ ...snapshot, lag: { _tag: "Unknown", reason: "x" }, lagBytes: null }))
      expect(unknown.value("dictator_replication_lag_seconds")).toBeNaN()
      expect(unknown.value("dictator_replication_lag_bytes")).toBeNaN()
    }).pipe(Effect.provide(Layer.provide(layer, config)))
  )

  it.effect("every metric the example Grafana dashboard uses is exported", () =>
    Effect.gen(function* () {
      const metrics = yield* Metrics
      const names = scrape(yield* metrics.render(snapshot)).names
      const used = dashboardMetrics()
      expect(used.size).toBeGreaterThan(10)
      expect([...used].filter((n) => !names.has(n))).toEqual([])
    }).pipe(Effect.provide(Layer.provide(layer, config)))
  )
})
