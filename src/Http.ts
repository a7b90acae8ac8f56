/**
 * The HTTP interface of the original program: /ping, /status (GET or POST), /enable, /disable
 * (POST only, guarded: see `guardMutation`; the original's GET with `http_legacy_get`). /status
 * is plain text by default and JSON with `Accept: application/json` or `?format=json`.
 *
 * Checks for load balancers and orchestrators, as Patroni's: /master (/primary, /read-write),
 * /replica?lag=, /health, /liveness, /readiness. Each answers 200 or 503 with the JSON status as
 * its body (`{"state":"starting"}` before the node is built) and the reason in the
 * `X-Dictator-Check` header.
 */
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Deferred, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { isIP } from "node:net"
import { FAILSAFE_MAX_BODY, FailsafeRequest } from "./domain/Failsafe.js"
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
  maintenance: s.maintenance,
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
    `maintenance: ${j.maintenance ? "on (no automatic failover)" : "off"}`,
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
  // Failsafe mode: ZooKeeper is away, but every other member vouches that nobody can replace it.
  const failsafe = s.plan?._tag === "Failsafe" && s.session.status === "disconnected"
  if (!failsafe && !ownsMasterZnode(s)) return failed("does not own the master znode on a connected ZooKeeper session")
  if (s.health._tag !== "Healthy") return failed(`local Redis is ${s.health._tag.toLowerCase()}`)
  if (s.health.info.role !== "master") return failed("local Redis is not a master yet")
  return pass(failsafe ? "master (failsafe: ZooKeeper unreachable, every other member vouches)" : "master")
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

// ---------------------------------------------------------------------------------------------
// Mutating endpoints: POST only, a bearer token or loopback

/** How the mutating endpoints are guarded (`http_token_file`, `http_legacy_get`). */
export interface MutationGuard {
  /** The bearer token they demand; none: they answer only requests from loopback. */
  readonly token: Option.Option<Redacted.Redacted<string>>
  /** The original's API: GET works too and, without a token, from any address (unsafe). */
  readonly legacyGet: boolean
}

export const DEFAULT_GUARD: MutationGuard = { token: Option.none(), legacyGet: false }

/** What the guard needs to know of a request. */
export interface MutationRequest {
  readonly method: string
  readonly path: string
  /** The peer's address; none when unknown (counts as not loopback). */
  readonly remoteAddress: Option.Option<string>
  readonly authorization: string | undefined
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms (`::ffff:127.0.0.1`). */
export const isLoopback = (address: string): boolean => {
  const a = address.toLowerCase().replace(/^::ffff:/, "")
  if (isIP(a) === 4) return a.startsWith("127.")
  return a === "::1" || a === "0:0:0:0:0:0:0:1"
}

/** Constant-time comparison of the given and the expected token (hashed first: equal lengths). */
const tokenMatches = (given: string, expected: Redacted.Redacted<string>): boolean =>
  timingSafeEqual(createHash("sha256").update(given).digest(), createHash("sha256").update(Redacted.value(expected)).digest())

/** A refusal of the guard: status, a hint for the operator, extra headers. */
export interface Refusal {
  readonly status: 401 | 403 | 405
  readonly hint: string
  readonly headers: Record<string, string>
}

/** `Authorization: Bearer …` for a client of another dictator's API (the token of `http_token_file`). */
export const bearer = (token: Redacted.Redacted<string>): string => `Bearer ${Redacted.value(token)}`

/**
 * The one rule of every mutating endpoint, pure: POST (GET too with `legacyGet`; anything else
 * 405); with a token, `Authorization: Bearer <token>` (401 otherwise); without one, only from
 * loopback (403 otherwise), unless `legacyGet` restores the original's open API.
 */
export const guardMutation = (guard: MutationGuard, req: MutationRequest): Option.Option<Refusal> => {
  const method = req.method.toUpperCase()
  if (method !== "POST" && !(guard.legacyGet && method === "GET")) {
    return Option.some({
      status: 405,
      hint: `use POST ${req.path} (it changes the node; GET never does). curl -X POST http://HOST:PORT${req.path}${Option.isSome(guard.token) ? " -H 'Authorization: Bearer <token of http_token_file>'" : ""}; http_legacy_get: true restores the original's GET (unsafe)`,
      headers: { allow: guard.legacyGet ? "GET, POST" : "POST" }
    })
  }
  if (Option.isSome(guard.token)) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.authorization ?? "")
    if (m === null || !tokenMatches(m[1]!, guard.token.value)) {
      return Option.some({
        status: 401,
        hint: `${req.path} needs the token of http_token_file: send the header 'Authorization: Bearer <token>'${m === null ? "" : " (the token given is not it)"}`,
        headers: { "www-authenticate": 'Bearer realm="dictator"' }
      })
    }
    return Option.none()
  }
  if (guard.legacyGet) return Option.none()
  if (Option.isNone(req.remoteAddress) || !isLoopback(req.remoteAddress.value)) {
    return Option.some({
      status: 403,
      hint: `${req.path} answers only from loopback when no http_token_file is configured (this request came from ${Option.getOrElse(req.remoteAddress, () => "an unknown address")}): call it on the dictator's host, or configure http_token_file and send 'Authorization: Bearer <token>'`,
      headers: {}
    })
  }
  return Option.none()
}

type Handler = Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>

/** Runs `handler` if the guard lets the request through, else answers the refusal (text, its hint). */
export const guarded = (guard: MutationGuard, handler: Handler): Handler =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (req) => {
    const refusal = guardMutation(guard, {
      method: req.method,
      path: new URL(req.url, "http://localhost").pathname,
      remoteAddress: req.remoteAddress,
      authorization: req.headers["authorization"]
    })
    return Option.isNone(refusal)
      ? handler
      : Effect.succeed(HttpServerResponse.text(`${refusal.value.hint}\n`, { status: refusal.value.status, headers: refusal.value.headers }))
  })

/**
 * Declares a mutating endpoint: POST through the guard, GET through it too (it answers 405 with
 * a hint, or runs with `legacyGet`). Every endpoint that changes anything is declared with this.
 */
export const mutating =
  (guard: MutationGuard) =>
  (path: `/${string}`, handler: Handler) =>
  (router: HttpRouter.HttpRouter) =>
    router.pipe(HttpRouter.post(path, guarded(guard, handler)), HttpRouter.get(path, guarded(guard, handler)))

/** Bound of a failsafe answer: the asking master waits a fraction of fence_after_ms anyway. */
const FAILSAFE_WITHIN = "1 second"

const decodeFailsafe = Schema.decodeUnknownOption(Schema.parseJson(FailsafeRequest))

const badFailsafe = (status: number, error: string) => HttpServerResponse.json({ error }, { status }).pipe(Effect.orDie)

/**
 * `POST /failsafe` (failsafe mode): a master that lost ZooKeeper asks whether it may keep taking
 * writes. Mutating (a yes holds this node out of elections), so POST only; the body is bounded
 * (FAILSAFE_MAX_BODY bytes) and so is the answer (FAILSAFE_WITHIN: past it, no).
 */
const failsafeRoute = (ready: NodeReady) =>
  withNode(ready, (node) =>
    Effect.gen(function* () {
      const req = yield* HttpServerRequest.HttpServerRequest
      const length = Number(req.headers["content-length"] ?? "0")
      if (!(length <= FAILSAFE_MAX_BODY)) return yield* badFailsafe(413, `request body larger than ${FAILSAFE_MAX_BODY} bytes`)
      const text = yield* req.text.pipe(
        HttpServerRequest.withMaxBodySize(Option.some(FAILSAFE_MAX_BODY)),
        Effect.timeout(FAILSAFE_WITHIN),
        Effect.option
      )
      if (Option.isSome(text) && text.value.length > FAILSAFE_MAX_BODY) {
        return yield* badFailsafe(413, `request body larger than ${FAILSAFE_MAX_BODY} bytes`)
      }
      const request = Option.flatMap(text, decodeFailsafe)
      if (Option.isNone(request)) {
        return yield* badFailsafe(400, 'body must be JSON {"service": "...", "master": "<node name>", "epoch": "<czxid>"}')
      }
      const verdict = yield* node.failsafe(request.value).pipe(
        Effect.timeoutTo({
          duration: FAILSAFE_WITHIN,
          onTimeout: () => ({ yes: false, reason: "no answer within 1 s" }),
          onSuccess: (v) => v
        })
      )
      return yield* HttpServerResponse.json({ answer: verdict.yes ? "yes" : "no", reason: verdict.reason }).pipe(Effect.orDie)
    })
  )

export const router = (ready: NodeReady, guard: MutationGuard = DEFAULT_GUARD) =>
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
    mutating(guard)("/failsafe", failsafeRoute(ready)),
    // Prometheus text (read-only; README: Metrics). 503 "starting" until the node is built.
    HttpRouter.get(
      "/metrics",
      withNode(ready, (node) =>
        Effect.map(node.metrics, ({ contentType, text }) => HttpServerResponse.text(text, { contentType }))
      )
    ),
    mutating(guard)(
      "/enable",
      withNode(ready, (node) =>
        Effect.map(node.enable, (changed) => HttpServerResponse.text(changed ? "enabled\n" : "already enabled\n"))
      )
    ),
    mutating(guard)(
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

// ---------------------------------------------------------------------------------------------
// Several local nodes in one process (`nodes: [...]`)

/** One local node of a multi-node process, as the API addresses it. */
export interface NodeRoute {
  readonly service: string
  readonly name: string
  readonly ready: NodeReady
}

/** The path prefix of one node's API in a multi-node process: `/nodes/<service>/<name>`. */
export const nodePrefix = (service: string, name: string): `/${string}` => `/nodes/${service}/${name}`

/** Where and how the API listens, for one node or many. */
export interface ListenerOptions {
  readonly host: string
  readonly port: number
  readonly guard?: MutationGuard
  /** PEM certificate (chain) and key: HTTPS instead of HTTP. */
  readonly tls?: { readonly cert: string; readonly key: string }
}

// node:https's server is node:http's with TLS in front: the same request and response types.
const serverFactory = (tls: ListenerOptions["tls"]) => () =>
  tls === undefined ? createServer() : (createHttpsServer({ cert: tls.cert, key: tls.key }) as unknown as ReturnType<typeof createServer>)

/**
 * The API of a multi-node process: `/ping`; `/nodes` lists every node's JSON status (a node not
 * built yet as `{"service","name","state":"starting"}`); every route of the single form under
 * `/nodes/<service>/<name>` (`/nodes/orders/redis1/status`, `/nodes/orders/redis1/master`, …).
 */
export const routerMany = (nodes: ReadonlyArray<NodeRoute>, guard: MutationGuard = DEFAULT_GUARD) =>
  nodes.reduce(
    (r, n) => HttpRouter.mount(r, nodePrefix(n.service, n.name), router(n.ready, guard)),
    HttpRouter.empty.pipe(
      both("/ping", HttpServerResponse.text("PONG\n")),
      both(
        "/nodes",
        Effect.gen(function* () {
          const list = yield* Effect.forEach(
            nodes,
            (n) =>
              Effect.flatMap(n.ready, (node) =>
                Option.isNone(node)
                  ? Effect.succeed<unknown>({ service: n.service, name: n.name, ...STARTING })
                  : node.value.status.pipe(
                      Effect.timeout(STATUS_WITHIN),
                      Effect.map((s): unknown => statusJson(s)),
                      Effect.orElseSucceed(() => ({ service: n.service, name: n.name, state: "unresponsive" }))
                    )
              ),
            { concurrency: "unbounded" }
          )
          return yield* HttpServerResponse.json(list).pipe(Effect.orDie)
        })
      )
    )
  )

/**
 * Serves the API of several local nodes on one listener, then builds every node (each as soon
 * as it can: one node waiting for its Redis or failing to start does not hold the others' API).
 */
export const layerMany = <E, R, E2, S>(
  options: ListenerOptions,
  nodes: ReadonlyArray<{ readonly service: string; readonly name: string; readonly layer: Layer.Layer<DictatorNode, E, R> }>,
  /** What the nodes share (the ZooKeeper client, Redis): built once, after the listener is up. */
  shared: Layer.Layer<R, E2, S>
) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const built = yield* Effect.forEach(nodes, () => Deferred.make<DictatorNodeService>())
      const routes = nodes.map((n, i) => ({
        service: n.service,
        name: n.name,
        ready: Deferred.poll(built[i]!).pipe(Effect.flatMap(Effect.transposeOption))
      }))
      const serve = routerMany(routes, options.guard).pipe(
        HttpServer.serve(),
        Layer.provide(NodeHttpServer.layer(serverFactory(options.tls), { host: options.host, port: options.port }))
      )
      // Merged layers are built concurrently.
      const publish = nodes.reduce<Layer.Layer<never, E, R>>(
        (all, n, i) =>
          Layer.merge(
            all,
            Layer.effectDiscard(Effect.flatMap(DictatorNode, (node) => Deferred.succeed(built[i]!, node))).pipe(Layer.provide(n.layer))
          ),
        Layer.empty
      )
      return Layer.provide(Layer.provide(publish, shared), serve)
    })
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
export const layer = <E, R>(options: ListenerOptions, node: Layer.Layer<DictatorNode, E, R>) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const built = yield* Deferred.make<DictatorNodeService>()
      const ready: NodeReady = Deferred.poll(built).pipe(Effect.flatMap(Effect.transposeOption))
      const serve = router(ready, options.guard).pipe(
        HttpServer.serve(countRequests(ready)),
        Layer.provide(NodeHttpServer.layer(serverFactory(options.tls), { host: options.host, port: options.port }))
      )
      const publish = Layer.effectDiscard(Effect.flatMap(DictatorNode, (n) => Deferred.succeed(built, n))).pipe(
        Layer.provide(node)
      )
      return Layer.provide(publish, serve)
    })
  )
