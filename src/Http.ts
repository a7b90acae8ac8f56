/**
 * The HTTP interface of the original program, kept: /ping, /status, /enable, /disable (GET or
 * POST). /status is plain text by default and JSON with `Accept: application/json` or
 * `?format=json`.
 */
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Deferred, Effect, Layer, Option } from "effect"
import { createServer } from "node:http"
import type { HealthState, MasterView } from "./Decision.js"
import { DictatorNode, type DictatorNodeService, type NodeStatus } from "./Node.js"
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
  members: s.members.map((m) => ({ name: m.name, healthy: m.healthy, role: m.role, offset: m.offset, priority: m.priority }))
})

export const statusText = (s: NodeStatus): string => {
  const j = statusJson(s)
  const master =
    j.master.state === "elected" && "name" in j.master
      ? `${j.master.name} ${j.master.host}:${j.master.port} (epoch ${j.master.epoch})`
      : j.master.state
  const redis =
    j.redis.state === "healthy" && "role" in j.redis ? `healthy, ${j.redis.role}, offset ${j.redis.offset}` : j.redis.state
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

const withNode = (
  ready: NodeReady,
  use: (node: DictatorNodeService) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>
) =>
  Effect.flatMap(ready, (node) =>
    Option.isSome(node) ? use(node.value) : Effect.succeed(HttpServerResponse.text("starting\n", { status: 503 }))
  )

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
          const status = yield* node.status
          return (yield* wantsJson)
            ? yield* HttpServerResponse.json(statusJson(status)).pipe(Effect.orDie)
            : HttpServerResponse.text(statusText(status))
        })
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
        Effect.map(node.disable, (changed) => HttpServerResponse.text(changed ? "disabled\n" : "already disabled\n"))
      )
    )
  )

/**
 * Serves the API, then builds `node`: a taken port stops the program before it joins the
 * election, and the API answers (503 "starting") while ZooKeeper is still out of reach.
 */
export const layer = <E, R>(options: { readonly host: string; readonly port: number }, node: Layer.Layer<DictatorNode, E, R>) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const built = yield* Deferred.make<DictatorNodeService>()
      const serve = router(Deferred.poll(built).pipe(Effect.flatMap(Effect.transposeOption))).pipe(
        HttpServer.serve(),
        Layer.provide(NodeHttpServer.layer(() => createServer(), { host: options.host, port: options.port }))
      )
      const publish = Layer.effectDiscard(Effect.flatMap(DictatorNode, (n) => Deferred.succeed(built, n))).pipe(
        Layer.provide(node)
      )
      return Layer.provide(publish, serve)
    })
  )
