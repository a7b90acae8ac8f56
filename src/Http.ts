/**
 * The HTTP interface of the original program, kept: /ping, /status, /enable, /disable (GET or
 * POST). /status is plain text by default and JSON with `Accept: application/json` or
 * `?format=json`.
 *
 * Checks for load balancers and orchestrators, as Patroni's: /master (/primary, /read-write),
 * /replica?lag=, /health, /liveness, /readiness. Each answers 200 or 503 with the JSON status as
 * its body (`{"state":"starting"}` before the node is built) and the reason in the
 * `X-Dictator-Check` header.
 */
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Deferred, Effect, Layer, Option } from "effect"
import { createServer } from "node:http"
import type { HealthState } from "./domain/Health.js"
import type { MasterView } from "./domain/Records.js"
import { DictatorNode, type DictatorNodeService, type NodeStatus, replicaLagBytes } from "./Node.js"

export { replicaLagBytes }
import { formatAddress } from "./Redis.js"

const masterJson = (m: MasterView | null) =>
  m === null
    ? { state: "unknown" }
    : m._tag === "Present"
      ? { state: "elected", name: m.record.name, host: m.record.host, port: m.record.port, epoch: m.epoch, owner: `0x${m.owner}` }
      : m._tag === "Malformed"
        ? { state: "malformed", reason: m.reason, raw: m.raw }
        : { state: "none" }

const healthJson = (h: HealthState) =>
  h._tag === "Healthy"
    ? {
        state: "healthy",
        role: h.info.role,
        offset: h.info.offset,
        link_up: h.info.linkUp,
        master: h.info.master === null ? null : formatAddress(h.info.master),
        replicas: h.info.replicas.length
      }
    : h._tag === "Down" || h._tag === "Suspect" || h._tag === "Misconfigured"
      ? { state: h._tag.toLowerCase(), since: new Date(h.since).toISOString(), detail: h.detail }
      : h._tag === "Loading"
        ? { state: "loading", since: new Date(h.since).toISOString() }
        : { state: "unknown" }

export const statusJson = (s: NodeStatus) => ({
  name: s.name,
  service: s.service,
  role: s.role,
  enabled: s.enabled,
  session: { state: s.session.status, id: s.session.sessionId === null ? null : `0x${s.session.sessionId}` },
  master: masterJson(s.master),
  redis: healthJson(s.health),
  members: s.members.map((m) => ({ name: m.name, healthy: m.healthy, role: m.role, offset: m.offset, priority: m.priority })),
  ...(s.lag === null ? {} : { lag_seconds: s.lag._tag === "Unknown" ? null : s.lag.seconds })
})

/** The local Redis in words: why it is down (the failing check's detail) and since when. */
const redisText = (h: HealthState): string => {
  switch (h._tag) {
    case "Healthy":
      return `healthy, ${h.info.role}, offset ${h.info.offset}`
    case "Down":
    case "Suspect":
    case "Misconfigured":
      return `${h._tag.toLowerCase()} since ${new Date(h.since).toISOString()}: ${h.detail}`
    case "Loading":
      return `loading since ${new Date(h.since).toISOString()}`
    case "Unknown":
      return "unknown (not checked yet)"
  }
}

export const statusText = (s: NodeStatus): string => {
  const j = statusJson(s)
  const master =
    j.master.state === "elected" && "name" in j.master
      ? `${j.master.name} ${j.master.host}:${j.master.port} (epoch ${j.master.epoch})`
      : j.master.state
  const redis = redisText(s.health)
  return [
    `name: ${j.name}`,
    `service: ${j.service}`,
    `role: ${j.role}`,
    `enabled: ${j.enabled}`,
    `zookeeper: ${j.session.state}${j.session.id ? ` (session ${j.session.id})` : ""}`,
    `master: ${master}`,
    `redis: ${redis}`,
    ""
  ].join("\n")
}

const wantsJson = Effect.map(HttpServerRequest.HttpServerRequest, (req) => {
  const url = new URL(req.url, "http://localhost")
  return url.searchParams.get("format") === "json" || (req.headers["accept"] ?? "").includes("application/json")
})

/** The node, once built: until then (ZooKeeper still connecting) the API answers 503 "starting". */
export type NodeReady = Effect.Effect<Option.Option<DictatorNodeService>>

const STARTING = { state: "starting" } as const

const withNode = (
  ready: NodeReady,
  use: (node: DictatorNodeService) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>
) =>
  Effect.flatMap(ready, (node) =>
    Option.isSome(node)
      ? use(node.value)
      : Effect.flatMap(wantsJson, (json) =>
          json
            ? HttpServerResponse.json(STARTING, { status: 503 }).pipe(Effect.orDie)
            : Effect.succeed(HttpServerResponse.text("starting\n", { status: 503 }))
        )
  )

// ---------------------------------------------------------------------------------------------
// Load-balancer and orchestrator checks

/** A check's verdict: `ok` answers 200, otherwise 503; `reason` goes in the X-Dictator-Check header. */
export interface Verdict {
  readonly ok: boolean
  readonly reason: string
}

const pass = (reason: string): Verdict => ({ ok: true, reason })
const failed = (reason: string): Verdict => ({ ok: false, reason })

const ownsMasterZnode = (s: NodeStatus): boolean =>
  s.session.status === "connected" &&
  s.master !== null &&
  s.master._tag === "Present" &&
  s.session.sessionId !== null &&
  s.master.owner === s.session.sessionId

/**
 * Writes go here: this dictator holds the master znode on a live session, and its Redis is a
 * healthy master that is not paused (role `master`, not `fenced` or `handing-over`).
 */
export const checkMaster = (s: NodeStatus): Verdict => {
  if (s.role !== "master") return failed(`role is ${s.role}`)
  if (!ownsMasterZnode(s)) return failed("does not own the master znode on a connected ZooKeeper session")
  if (s.health._tag !== "Healthy") return failed(`local Redis is ${s.health._tag.toLowerCase()}`)
  if (s.health.info.role !== "master") return failed("local Redis is not a master yet")
  return pass("master")
}

/** `?lag=` of /replica: a byte count (`1048576`, `16kB`, `1MB`) or a duration (`5s`, `500ms`). */
export type LagLimit =
  | { readonly _tag: "Bytes"; readonly bytes: number }
  | { readonly _tag: "Seconds"; readonly seconds: number }

const BYTE_UNITS: Record<string, number> = { "": 1, b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }
const SECOND_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, min: 60 }

/** Parses `?lag=`; a message for anything else (the parameter is bounded to 32 characters). */
export const parseLag = (text: string): Option.Option<LagLimit> => {
  const m = /^(\d{1,15}(?:\.\d{1,6})?)\s*([a-z]{0,3})$/i.exec(text.trim())
  if (text.length > 32 || m === null) return Option.none()
  const value = Number(m[1])
  const unit = m[2]!.toLowerCase()
  const byteUnit = BYTE_UNITS[unit]
  if (byteUnit !== undefined) return Option.some({ _tag: "Bytes", bytes: Math.floor(value * byteUnit) })
  const secondUnit = SECOND_UNITS[unit]
  if (secondUnit !== undefined) return Option.some({ _tag: "Seconds", seconds: value * secondUnit })
  return Option.none()
}

/**
 * Reads go here: a healthy replica of the current master, its link up and its initial sync done,
 * and (with `lag`) no further behind than that.
 */
export const checkReplica = (s: NodeStatus, lag: Option.Option<LagLimit>): Verdict => {
  if (!s.enabled) return failed("disabled")
  if (s.role !== "replica") return failed(`role is ${s.role}`)
  if (s.health._tag !== "Healthy") return failed(`local Redis is ${s.health._tag.toLowerCase()}`)
  const info = s.health.info
  if (info.role !== "replica") return failed("local Redis is not a replica")
  if (s.master === null || s.master._tag !== "Present") return failed("no master elected")
  const m = s.master.record
  if (info.master === null || info.master.host !== m.host || info.master.port !== m.port) {
    return failed(`local Redis does not replicate from the master ${m.name} (${formatAddress(m)}) yet`)
  }
  if (!info.linkUp) return failed("replication link is down")
  if (info.syncInProgress) return failed("initial sync in progress")
  if (Option.isNone(lag)) return pass("replica")
  if (lag.value._tag === "Seconds") {
    // An upper bound measured from the master's offsets over time (domain/Lag.ts).
    const est = s.lag
    const limit = lag.value.seconds
    if (est === null || est._tag === "Unknown") return failed(`lag in seconds unknown${est === null ? "" : `: ${est.reason}`}`)
    if (est._tag === "AtLeast") return failed(`more than ${est.seconds.toFixed(3)} s behind the master`)
    return est.seconds <= limit
      ? pass(`replica, at most ${est.seconds.toFixed(3)} s behind`)
      : failed(`up to ${est.seconds.toFixed(3)} s behind the master, more than ${limit} s`)
  }
  const behind = replicaLagBytes(s)
  if (behind === null) return failed(`lag unknown: the master ${m.name} publishes no offset`)
  return behind <= lag.value.bytes
    ? pass(`replica, ${behind} bytes behind`)
    : failed(`${behind} bytes behind the master, more than ${lag.value.bytes}`)
}

/** The local Redis answers its checks: healthy, whatever its role. */
export const checkHealth = (s: NodeStatus): Verdict =>
  s.health._tag === "Healthy" ? pass(`local Redis healthy (${s.health.info.role})`) : failed(`local Redis is ${s.health._tag.toLowerCase()}`)

/** The node is built and has a live ZooKeeper session: it takes part in the service. */
export const checkReadiness = (s: NodeStatus): Verdict =>
  s.session.status === "connected" ? pass("ready") : failed(`ZooKeeper session ${s.session.status}`)

/** Bounds the status read of a check: a node whose fibers are stuck must not hang the probe. */
const STATUS_WITHIN = "1 second"

/** A header value Node accepts whatever the reason quotes (a Redis error, a query parameter). */
export const headerSafe = (s: string): string => s.replace(/[^\x20-\x7e]/g, "?").slice(0, 300)

const answer = (v: Verdict, body: unknown) =>
  HttpServerResponse.json(body, { status: v.ok ? 200 : 503, headers: { "x-dictator-check": headerSafe(v.reason) } }).pipe(
    Effect.orDie
  )

const check = (ready: NodeReady, verdict: (s: NodeStatus) => Verdict, starting: Verdict = failed("starting")) =>
  Effect.gen(function* () {
    const node = yield* ready
    if (Option.isNone(node)) return yield* answer(starting, STARTING)
    const status = yield* node.value.status.pipe(Effect.timeout(STATUS_WITHIN), Effect.option)
    if (Option.isNone(status)) return yield* answer(failed("status did not answer within 1 s"), { state: "unresponsive" })
    return yield* answer(verdict(status.value), statusJson(status.value))
  })

const replicaCheck = (ready: NodeReady) =>
  Effect.gen(function* () {
    const req = yield* HttpServerRequest.HttpServerRequest
    const given = new URL(req.url, "http://localhost").searchParams.get("lag")
    if (given === null) return yield* check(ready, (s) => checkReplica(s, Option.none()))
    const lag = parseLag(given)
    if (Option.isNone(lag)) {
      const reason = `?lag= must be bytes (1048576, 16kB, 1MB) or a duration (5s, 500ms), not ${JSON.stringify(given.slice(0, 32))}`
      return yield* HttpServerResponse.json({ error: reason }, { status: 400, headers: { "x-dictator-check": headerSafe(reason) } }).pipe(
        Effect.orDie
      )
    }
    return yield* check(ready, (s) => checkReplica(s, lag))
  })

/** Load balancers probe with GET, HEAD or OPTIONS (HAProxy's default): all three answer. */
const probe =
  (path: `/${string}`, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>) =>
  (router: HttpRouter.HttpRouter) =>
    router.pipe(HttpRouter.get(path, handler), HttpRouter.head(path, handler), HttpRouter.options(path, handler))

const both =
  (path: `/${string}`, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>) =>
  (router: HttpRouter.HttpRouter) =>
    router.pipe(HttpRouter.get(path, handler), HttpRouter.post(path, handler))

export const router = (ready: NodeReady) =>
  HttpRouter.empty.pipe(
    both("/ping", HttpServerResponse.text("PONG\n")),
    both(
      "/status",
      withNode(ready, (node) =>
        Effect.gen(function* () {
          const status = yield* node.statusNow
          return (yield* wantsJson)
            ? yield* HttpServerResponse.json(statusJson(status)).pipe(Effect.orDie)
            : HttpServerResponse.text(statusText(status))
        })
      )
    ),
    probe("/master", check(ready, checkMaster)),
    probe("/primary", check(ready, checkMaster)),
    probe("/read-write", check(ready, checkMaster)),
    probe("/replica", replicaCheck(ready)),
    probe("/health", check(ready, checkHealth)),
    // The process answers, and the node (once built) answers its status within the bound.
    probe("/liveness", check(ready, () => pass("alive"), pass("alive, starting"))),
    probe("/readiness", check(ready, checkReadiness)),
    // Prometheus text (read-only; README: Metrics). 503 "starting" until the node is built.
    HttpRouter.get(
      "/metrics",
      withNode(ready, (node) =>
        Effect.map(node.metrics, ({ contentType, text }) => HttpServerResponse.text(text, { contentType }))
      )
    ),
    both(
      "/enable",
      withNode(ready, (node) =>
        Effect.map(node.enable, (changed) => HttpServerResponse.text(changed ? "enabled\n" : "already enabled\n"))
      )
    ),
    both(
      "/disable",
      withNode(ready, (node) =>
        node.disable.pipe(
          Effect.map((changed) => HttpServerResponse.text(changed ? "disabled\n" : "already disabled\n")),
          // The node keeps its role: say why, so the operator can retry once it is possible.
          Effect.catchTag("HandoverRefused", (e) => Effect.succeed(HttpServerResponse.text(`${e.message}\n`, { status: 409 })))
        )
      )
    )
  )

/** Counts every request by path and status code in the node's metrics (once it is built). */
export const countRequests = (ready: NodeReady) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function* () {
      const req = yield* HttpServerRequest.HttpServerRequest
      const path = new URL(req.url, "http://localhost").pathname
      const count = (code: number) =>
        Effect.flatMap(ready, (node) => (Option.isSome(node) ? node.value.countHttp(path, code) : Effect.void))
      return yield* app.pipe(
        Effect.tapBoth({
          onSuccess: (res) => count(res.status),
          // Only a missing route fails here (every handler answers): Effect's server makes it a 404.
          onFailure: () => count(404)
        })
      )
    })
  )

/**
 * Serves the API, then builds `node`: a taken port stops the program before it joins the
 * election, and the API answers (503 "starting") while ZooKeeper is still out of reach.
 */
export const layer = <E, R>(options: { readonly host: string; readonly port: number }, node: Layer.Layer<DictatorNode, E, R>) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const built = yield* Deferred.make<DictatorNodeService>()
      const ready: NodeReady = Deferred.poll(built).pipe(Effect.flatMap(Effect.transposeOption))
      const serve = router(ready).pipe(
        HttpServer.serve(countRequests(ready)),
        Layer.provide(NodeHttpServer.layer(() => createServer(), { host: options.host, port: options.port }))
      )
      const publish = Layer.effectDiscard(Effect.flatMap(DictatorNode, (n) => Deferred.succeed(built, n))).pipe(
        Layer.provide(node)
      )
      return Layer.provide(publish, serve)
    })
  )
