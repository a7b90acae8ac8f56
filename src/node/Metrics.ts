/**
 * The node's Prometheus metrics (GET /metrics), kept in a prom-client Registry of its own (one
 * per node: several nodes may share a process) and rendered by prom-client. Counters and
 * histograms are fed by the events they count (role changes, failovers seen, votes, handovers,
 * requests); gauges are set from one status snapshot just before each rendering.
 */
import { Context, Effect, Layer, Stream } from "effect"
import * as Prom from "prom-client"
import { DictatorConfig } from "../Config.js"
import type { Role } from "../domain/Controller.js"
import { initialFailovers, onMasterView, onVote } from "../domain/Failovers.js"
import type { HealthState } from "../domain/Health.js"
import type { LagEstimate } from "../domain/Lag.js"
import type { MasterView } from "../domain/Records.js"
import type { SessionInfo } from "../ZooKeeper.js"
import { Observer } from "./Observer.js"
import { RoleEvents } from "./RoleEvents.js"
import { Store } from "./Store.js"
import { supervised } from "./supervised.js"

const ROLES: ReadonlyArray<Role> = ["starting", "master", "replica", "candidate", "fenced", "disabled", "waiting", "handing-over"]
const SESSION_STATES: ReadonlyArray<SessionInfo["status"]> = ["connecting", "connected", "disconnected", "expired"]
const HEALTH_STATES: ReadonlyArray<Lowercase<HealthState["_tag"]>> = ["unknown", "healthy", "suspect", "down", "loading", "misconfigured"]

/** What the gauges show: one snapshot of the node, taken just before rendering. */
export interface MetricsSnapshot {
  readonly now: number
  readonly role: Role
  readonly enabled: boolean
  readonly session: SessionInfo
  readonly master: MasterView | null
  readonly health: HealthState
  /** This dictator has paused writes on its Redis (fencing, a handover). */
  readonly writesPaused: boolean
  readonly members: number
  readonly lagBytes: number | null
  readonly lag: LagEstimate | null
}

export type HandoverOutcome = "handed-over" | "refused" | "failed" | "interrupted"
export type HookOutcome = "ok" | "failed" | "timeout" | "error"

export type Instruments = ReturnType<typeof makeRegistry>["instruments"]

export interface MetricsService {
  readonly registry: Prom.Registry
  /** The instruments themselves, for the watcher of this module. */
  readonly instruments: Instruments
  /** Sets the gauges from `snapshot`, then renders the registry in the Prometheus text format. */
  readonly render: (snapshot: MetricsSnapshot) => Effect.Effect<string>
  readonly contentType: string
  readonly handover: (seconds: number, outcome: HandoverOutcome) => Effect.Effect<void>
  readonly hookRun: (outcome: HookOutcome) => Effect.Effect<void>
  readonly clientsClosed: (count: number) => Effect.Effect<void>
  readonly httpRequest: (path: string, code: number) => Effect.Effect<void>
  readonly sentinelRequest: (command: string) => Effect.Effect<void>
}

export class Metrics extends Context.Tag("dictator/Metrics")<Metrics, MetricsService>() {}

/** Durations of failovers and handovers: from tens of milliseconds to a minute. */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]

/** The paths /metrics counts by: the API's own (anything else is "other", bounding the label's values). */
const KNOWN_PATHS = new Set([
  "/ping", "/status", "/enable", "/disable", "/master", "/primary", "/read-write", "/replica", "/health", "/liveness", "/readiness", "/metrics"
])

/** Sentinel commands by name, bounded: anything unknown is "other". */
const KNOWN_COMMANDS = new Set([
  "hello", "auth", "ping", "client", "sentinel", "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ssubscribe", "sunsubscribe", "role", "quit", "reset", "info", "command", "echo", "select"
])

export const makeRegistry = (labels: { readonly service: string; readonly node: string }) => {
  const registry = new Prom.Registry()
  registry.setDefaultLabels({ service: labels.service, node: labels.node })
  const registers = [registry]
  const instruments = {
    role: new Prom.Gauge({ name: "dictator_role", help: "1 for this node's current role, 0 for the others", labelNames: ["role"], registers }),
    enabled: new Prom.Gauge({ name: "dictator_enabled", help: "1 while this node takes part in the election (not /disable'd)", registers }),
    epoch: new Prom.Gauge({ name: "dictator_master_epoch", help: "Epoch (czxid of the master znode) of the master this node sees; 0 with none", registers }),
    electionsWon: new Prom.Counter({ name: "dictator_elections_won_total", help: "Elections this node won (master znode created, Redis promoted)", registers }),
    roleChanges: new Prom.Counter({ name: "dictator_role_changes_total", help: "Role changes of the local Redis made by this node, by new role", labelNames: ["role"], registers }),
    failovers: new Prom.Counter({ name: "dictator_failovers_total", help: "New master epochs seen after a previous one (failovers and handovers)", registers }),
    failoverSeconds: new Prom.Histogram({
      name: "dictator_failover_duration_seconds",
      help: "From the first sign here that the master was lost (this node's vote, or its znode gone) to the new master's znode seen",
      buckets: DURATION_BUCKETS,
      registers
    }),
    zkContact: new Prom.Gauge({
      name: "dictator_zookeeper_last_contact_seconds",
      help: "Seconds since the last answer from ZooKeeper: 0 while connected (the driver's liveness probe turns silence into disconnected)",
      registers
    }),
    session: new Prom.Gauge({ name: "dictator_zookeeper_session_state", help: "1 for the ZooKeeper session's current state", labelNames: ["state"], registers }),
    writesPaused: new Prom.Gauge({ name: "dictator_writes_paused", help: "1 while this dictator holds writes paused on its Redis (fencing or a handover)", registers }),
    fenced: new Prom.Gauge({ name: "dictator_fenced", help: "1 while this node's role is fenced", registers }),
    redisHealthy: new Prom.Gauge({ name: "dictator_redis_healthy", help: "1 while the local Redis answers its checks", registers }),
    redisHealth: new Prom.Gauge({ name: "dictator_redis_health_state", help: "1 for the local Redis's health state", labelNames: ["state"], registers }),
    offset: new Prom.Gauge({ name: "dictator_redis_replication_offset_bytes", help: "Replication offset of the local Redis at its last check", registers }),
    lagBytes: new Prom.Gauge({ name: "dictator_replication_lag_bytes", help: "Bytes this replica is behind the master's published offset; NaN when unknown or not a replica", registers }),
    lagSeconds: new Prom.Gauge({
      name: "dictator_replication_lag_seconds",
      help: "Upper bound of this replica's lag in seconds (README: lag in seconds); NaN when unknown or not a replica",
      registers
    }),
    members: new Prom.Gauge({ name: "dictator_members", help: "Member records of the service seen in ZooKeeper", registers }),
    votes: new Prom.Counter({ name: "dictator_votes_cast_total", help: "Votes this node cast against an unreachable master", registers }),
    handovers: new Prom.Counter({
      name: "dictator_handovers_total",
      help: "Graceful handovers run by this node as master (shutdown, /disable), by outcome: handed-over, refused, failed (left fenced), interrupted",
      labelNames: ["outcome"],
      registers
    }),
    handoverSeconds: new Prom.Histogram({
      name: "dictator_handover_duration_seconds",
      help: "Duration of the graceful handovers run by this node as master, whatever their outcome",
      buckets: DURATION_BUCKETS,
      registers
    }),
    hookRuns: new Prom.Counter({ name: "dictator_role_hook_runs_total", help: "on_role_change hook runs by outcome (ok, failed: non-zero exit, timeout: killed, error: not started)", labelNames: ["outcome"], registers }),
    clientsClosed: new Prom.Counter({ name: "dictator_clients_closed_total", help: "Client connections of the local Redis closed on role changes", registers }),
    http: new Prom.Counter({ name: "dictator_http_requests_total", help: "HTTP API requests by path and status code", labelNames: ["path", "code"], registers }),
    sentinel: new Prom.Counter({ name: "dictator_sentinel_requests_total", help: "Sentinel-endpoint requests by command", labelNames: ["command"], registers })
  }
  return { registry, instruments }
}

const nanIfNull = (n: number | null) => (n === null ? Number.NaN : n)

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const { instruments: m, registry } = makeRegistry({ service: config.svc_name, node: config.node.name })
  // Zero-valued series exist from the start, so dashboards and rate() see them before the first event.
  for (const r of ["master", "replica"]) m.roleChanges.labels(r).inc(0)
  for (const o of ["handed-over", "refused", "failed", "interrupted"] as const) m.handovers.labels(o).inc(0)
  for (const o of ["ok", "failed", "timeout", "error"] as const) m.hookRuns.labels(o).inc(0)

  const setOne = (g: Prom.Gauge<string>, all: ReadonlyArray<string>, current: string) => {
    for (const v of all) g.labels(v).set(v === current ? 1 : 0)
  }

  const render = (s: MetricsSnapshot) =>
    Effect.promise(() => {
      setOne(m.role, ROLES, s.role)
      m.enabled.set(s.enabled ? 1 : 0)
      m.epoch.set(s.master !== null && s.master._tag === "Present" ? Number(s.master.epoch) : 0)
      m.zkContact.set(s.session.status === "connected" ? 0 : Math.max(0, s.now - s.session.since) / 1000)
      setOne(m.session, SESSION_STATES, s.session.status)
      m.writesPaused.set(s.writesPaused ? 1 : 0)
      m.fenced.set(s.role === "fenced" ? 1 : 0)
      m.redisHealthy.set(s.health._tag === "Healthy" ? 1 : 0)
      setOne(m.redisHealth, HEALTH_STATES, s.health._tag.toLowerCase())
      if (s.health._tag === "Healthy" || s.health._tag === "Suspect") {
        const info = s.health._tag === "Healthy" ? s.health.info : null
        if (info !== null) m.offset.set(info.offset)
      }
      m.lagBytes.set(nanIfNull(s.lagBytes))
      m.lagSeconds.set(s.lag !== null && s.lag._tag !== "Unknown" ? s.lag.seconds : Number.NaN)
      m.members.set(s.members)
      return registry.metrics()
    })

  const bounded = (known: ReadonlySet<string>, v: string) => (known.has(v) ? v : "other")

  return {
    registry,
    render,
    contentType: registry.contentType,
    handover: (seconds, outcome) =>
      Effect.sync(() => {
        m.handovers.labels(outcome).inc()
        m.handoverSeconds.observe(seconds)
      }),
    hookRun: (outcome) => Effect.sync(() => m.hookRuns.labels(outcome).inc()),
    clientsClosed: (count) => Effect.sync(() => m.clientsClosed.inc(count)),
    httpRequest: (path, code) => Effect.sync(() => m.http.labels(bounded(KNOWN_PATHS, path), String(code)).inc()),
    sentinelRequest: (command) => Effect.sync(() => m.sentinel.labels(bounded(KNOWN_COMMANDS, command.toLowerCase())).inc()),
    instruments: m
  } satisfies MetricsService
})

export const layer = Layer.scoped(Metrics, make)

/**
 * Feeds the counters that count what this node sees: failovers (new master epochs) and their
 * durations, votes cast, role changes and elections won. Each stream in a supervised fiber.
 */
export const watch = Layer.scopedDiscard(
  Effect.gen(function* () {
    const metrics = yield* Metrics
    const m = metrics.instruments
    const store = yield* Store
    const observer = yield* Observer
    const roles = yield* RoleEvents
    const changes = yield* roles.subscribe
    const now = Effect.clockWith((c) => c.currentTimeMillis)
    let failovers = initialFailovers

    yield* supervised("metrics-roles")(
      Effect.forever(
        Effect.flatMap(changes.take, (c) =>
          Effect.sync(() => {
            m.roleChanges.labels(c.role).inc()
            if (c.cause === "elected") m.electionsWon.inc()
          })
        )
      )
    )
    yield* supervised("metrics-master")(
      Stream.runForEach(store.master.changes, (view) =>
        view === null
          ? Effect.void
          : Effect.flatMap(now, (t) =>
              Effect.sync(() => {
                const [next, seen] = onMasterView(failovers, view, t)
                failovers = next
                if (seen === null) return
                m.failovers.inc()
                if (seen.durationMs !== null) m.failoverSeconds.observe(seen.durationMs / 1000)
              })
            )
      )
    )
    yield* supervised("metrics-votes")(
      Stream.runForEach(observer.opinion.changes, (epoch) =>
        Effect.flatMap(now, (t) =>
          Effect.sync(() => {
            if (epoch !== null) m.votes.inc()
            failovers = onVote(failovers, epoch, t)
          })
        )
      )
    )
  })
)
