/**
 * The HTTP API's checks and status, on NodeStatus values built here: the pure verdicts, then the
 * router itself through a web handler (no sockets).
 */
import { HttpApp } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import {
  checkHealth,
  checkMaster,
  checkReadiness,
  checkReplica,
  DEFAULT_GUARD,
  guardMutation,
  isLoopback,
  type MutationGuard,
  type MutationRequest,
  type NodeReady,
  parseLag,
  replicaLagBytes,
  router,
  statusText
} from "../src/Http.js"
import type { DictatorNodeService, NodeStatus } from "../src/Node.js"
import type { ReplicationInfo } from "../src/Redis.js"

// Taken from NodeStatus rather than imported from where they are defined: only the status's
// shape matters here, wherever the node's modules keep these types.
type HealthState = NodeStatus["health"]
type MasterView = NonNullable<NodeStatus["master"]>
type MemberRecord = NodeStatus["members"][number]

const MASTER_ADDR = { host: "10.0.0.1", port: 6379 }
const SESSION = "1000abc"

const present = (owner: string): MasterView => ({
  _tag: "Present",
  record: { ...MASTER_ADDR, name: "redis1" },
  version: 0,
  epoch: "4294967300",
  owner,
  epochVersion: 3
})

const masterInfo: ReplicationInfo = {
  role: "master",
  master: null,
  linkUp: true,
  linkDownSinceSeconds: null,
  syncInProgress: false,
  offset: 5000,
  replid: "r",
  replicas: []
}

const replicaInfo = (over: Partial<ReplicationInfo> = {}): ReplicationInfo => ({
  ...masterInfo,
  role: "replica",
  master: MASTER_ADDR,
  offset: 4000,
  ...over
})

const healthy = (info: ReplicationInfo): HealthState => ({ _tag: "Healthy", info, at: 1 })

const member = (name: string, role: string, offset: number): MemberRecord => ({
  name,
  host: "10.0.0.9",
  port: 6379,
  priority: 100,
  healthy: true,
  role,
  offset,
  link_up: true,
  master_down: null,
  version: "0.2.0"
})

const masterStatus: NodeStatus = {
  name: "redis1",
  service: "orders",
  role: "master",
  enabled: true,
  session: { status: "connected", sessionId: SESSION, generation: 1, since: 0 },
  master: present(SESSION),
  health: healthy(masterInfo),
  plan: { _tag: "BeMaster" },
  members: [member("redis1", "master", 5000), member("redis2", "replica", 4000)],
  maintenance: false,
  lag: null
}

const replicaStatus: NodeStatus = {
  ...masterStatus,
  name: "redis2",
  role: "replica",
  session: { status: "connected", sessionId: "2000def", generation: 1, since: 0 },
  health: healthy(replicaInfo()),
  plan: { _tag: "Follow", master: { ...MASTER_ADDR, name: "redis1" } },
  lag: { _tag: "Seconds", seconds: 0.25 }
}

describe("checkMaster", () => {
  it("passes on the master that owns the znode, with a healthy master Redis", () => {
    expect(checkMaster(masterStatus)).toEqual({ ok: true, reason: "master" })
  })

  it("passes in failsafe mode (ZooKeeper away, every member vouching): writes go there", () => {
    const failsafe: NodeStatus = {
      ...masterStatus,
      plan: { _tag: "Failsafe", reason: "vouched" },
      session: { ...masterStatus.session, status: "disconnected" }
    }
    expect(checkMaster(failsafe)).toEqual({ ok: true, reason: "master (failsafe: ZooKeeper unreachable, every other member vouches)" })
    expect(checkMaster({ ...failsafe, plan: { _tag: "Fence", reason: "x" }, role: "fenced" }).ok).toBe(false)
    expect(checkMaster({ ...failsafe, plan: { _tag: "Idle", reason: "waiting for ZooKeeper" } }).ok).toBe(false)
  })

  it.each<[string, NodeStatus, string]>([
    ["fenced", { ...masterStatus, role: "fenced" }, "role is fenced"],
    ["handing over", { ...masterStatus, role: "handing-over" }, "role is handing-over"],
    ["a replica", replicaStatus, "role is replica"],
    ["disconnected", { ...masterStatus, session: { ...masterStatus.session, status: "disconnected" } }, "does not own"],
    ["the znode is another session's", { ...masterStatus, master: present("9999") }, "does not own"],
    ["no master znode", { ...masterStatus, master: { _tag: "Absent" } }, "does not own"],
    ["Redis down", { ...masterStatus, health: { _tag: "Down", since: 0, detail: "connection refused" } }, "local Redis is down"],
    ["Redis still a replica", { ...masterStatus, health: healthy(replicaInfo()) }, "not a master yet"]
  ])("fails when %s", (_, status, reason) => {
    const v = checkMaster(status)
    expect(v.ok).toBe(false)
    expect(v.reason).toContain(reason)
  })
})

describe("checkReplica and ?lag=", () => {
  it("parses bytes with units and durations; refuses the rest", () => {
    expect(parseLag("1048576")).toEqual(Option.some({ _tag: "Bytes", bytes: 1048576 }))
    expect(parseLag("16kB")).toEqual(Option.some({ _tag: "Bytes", bytes: 16384 }))
    expect(parseLag("1MB")).toEqual(Option.some({ _tag: "Bytes", bytes: 1048576 }))
    expect(parseLag("0")).toEqual(Option.some({ _tag: "Bytes", bytes: 0 }))
    expect(parseLag("5s")).toEqual(Option.some({ _tag: "Seconds", seconds: 5 }))
    expect(parseLag("500ms")).toEqual(Option.some({ _tag: "Seconds", seconds: 0.5 }))
    for (const bad of ["", "-1", "1 parsec", "1e9", "x", "1".repeat(40), "1kBB"]) expect(parseLag(bad), bad).toEqual(Option.none())
  })

  it("lag in bytes is the master's published offset minus ours, never below 0", () => {
    expect(replicaLagBytes(replicaStatus)).toBe(1000)
    expect(replicaLagBytes({ ...replicaStatus, health: healthy(replicaInfo({ offset: 6000 })) })).toBe(0)
    expect(replicaLagBytes({ ...replicaStatus, members: [member("redis2", "replica", 4000)] })).toBeNull()
  })

  it("passes on a linked replica of the current master; with ?lag= only when close enough", () => {
    expect(checkReplica(replicaStatus, Option.none())).toEqual({ ok: true, reason: "replica" })
    expect(checkReplica(replicaStatus, parseLag("1000"))).toEqual({ ok: true, reason: "replica, 1000 bytes behind" })
    expect(checkReplica(replicaStatus, parseLag("999"))).toEqual({
      ok: false,
      reason: "1000 bytes behind the master, more than 999"
    })
  })

  it("lag in seconds: the measured upper bound against ?lag=; unknown or beyond every sample fails", () => {
    expect(checkReplica(replicaStatus, parseLag("1s"))).toEqual({ ok: true, reason: "replica, at most 0.250 s behind" })
    expect(checkReplica(replicaStatus, parseLag("250ms")).ok).toBe(true)
    expect(checkReplica(replicaStatus, parseLag("200ms"))).toEqual({ ok: false, reason: "up to 0.250 s behind the master, more than 0.2 s" })
    expect(checkReplica({ ...replicaStatus, lag: { _tag: "AtLeast", seconds: 0.1 } }, parseLag("5s"))).toEqual({
      ok: false,
      reason: "more than 0.100 s behind the master"
    })
    expect(checkReplica({ ...replicaStatus, lag: { _tag: "Unknown", reason: "the master's offset was not read yet" } }, parseLag("5s")).reason).toBe(
      "lag in seconds unknown: the master's offset was not read yet"
    )
    expect(checkReplica({ ...replicaStatus, lag: null }, parseLag("5s")).ok).toBe(false)
  })

  it.each<[string, NodeStatus, string]>([
    ["the master", masterStatus, "role is master"],
    ["disabled", { ...replicaStatus, enabled: false, role: "disabled" }, "disabled"],
    ["the link is down", { ...replicaStatus, health: healthy(replicaInfo({ linkUp: false })) }, "link is down"],
    ["syncing", { ...replicaStatus, health: healthy(replicaInfo({ syncInProgress: true })) }, "sync in progress"],
    [
      "replicating from an old master",
      { ...replicaStatus, health: healthy(replicaInfo({ master: { host: "10.0.0.7", port: 6379 } })) },
      "does not replicate from the master redis1"
    ],
    ["Redis loading", { ...replicaStatus, health: { _tag: "Loading", since: 0 } }, "local Redis is loading"]
  ])("fails on %s", (_, status, reason) => {
    const v = checkReplica(status, Option.none())
    expect(v.ok).toBe(false)
    expect(v.reason).toContain(reason)
  })
})

describe("checkHealth, checkReadiness", () => {
  it("health follows the local Redis only", () => {
    expect(checkHealth(masterStatus).ok).toBe(true)
    expect(checkHealth(replicaStatus).ok).toBe(true)
    expect(checkHealth({ ...replicaStatus, health: { _tag: "Suspect", since: 0, detail: "timeout", info: null } }).ok).toBe(false)
  })

  it("readiness needs a connected ZooKeeper session", () => {
    expect(checkReadiness(replicaStatus).ok).toBe(true)
    expect(checkReadiness({ ...replicaStatus, session: { ...replicaStatus.session, status: "connecting" } }).ok).toBe(false)
  })
})

describe("statusText", () => {
  it("says why the local Redis is down", () => {
    const text = statusText({
      ...masterStatus,
      role: "waiting",
      health: { _tag: "Down", since: Date.UTC(2026, 11, 1, 12, 0, 0), detail: "connect ECONNREFUSED 10.0.0.1:6379" }
    })
    expect(text).toContain("redis: down since 2026-12-01T12:00:00.000Z: connect ECONNREFUSED 10.0.0.1:6379\n")
  })

  it("says when the service is in maintenance mode", () => {
    expect(statusText(masterStatus)).toContain("maintenance: off\n")
    expect(statusText({ ...masterStatus, maintenance: true })).toContain("maintenance: on (no automatic failover)\n")
  })
})

// ---------------------------------------------------------------------------------------------
// The router, through a web handler

/** Failsafe requests the stub nodes received: it answers yes only for master "redis9". */
const failsafeAsked: Array<unknown> = []
const nodeWith = (status: NodeStatus): DictatorNodeService => ({
  status: Effect.succeed(status),
  statusNow: Effect.succeed(status),
  enable: Effect.succeed(false),
  disable: Effect.succeed(false),
  failsafe: (request) =>
    Effect.sync(() => {
      failsafeAsked.push(request)
      return request.master === "redis9" ? { yes: true, reason: "vouched" } : { yes: false, reason: "this node reaches ZooKeeper" }
    }),
  metrics: Effect.succeed({ contentType: "text/plain", text: "" }),
  countHttp: () => Effect.void,
  countSentinel: () => Effect.void
})

const handler = (ready: NodeReady) => HttpApp.toWebHandler(router(ready))
const starting = handler(Effect.succeed(Option.none()))
const asMaster = handler(Effect.succeed(Option.some(nodeWith(masterStatus))))
const asReplica = handler(Effect.succeed(Option.some(nodeWith(replicaStatus))))

const get = async (h: (r: Request) => Promise<Response>, path: string, init?: RequestInit) => {
  const res = await h(new Request(`http://localhost${path}`, init))
  return { status: res.status, body: await res.text(), check: res.headers.get("x-dictator-check"), type: res.headers.get("content-type") }
}

describe("router", () => {
  it("/status while starting: 503, JSON {state: starting} when JSON is asked for", async () => {
    expect(await get(starting, "/status?format=json")).toMatchObject({ status: 503, body: `{"state":"starting"}` })
    expect(await get(starting, "/status", { headers: { accept: "application/json" } })).toMatchObject({
      status: 503,
      body: `{"state":"starting"}`
    })
    expect(await get(starting, "/status")).toMatchObject({ status: 503, body: "starting\n" })
  })

  it("checks while starting: only liveness passes", async () => {
    for (const path of ["/master", "/primary", "/read-write", "/replica", "/health", "/readiness"]) {
      expect(await get(starting, path), path).toMatchObject({ status: 503, body: `{"state":"starting"}`, check: "starting" })
    }
    expect(await get(starting, "/liveness")).toMatchObject({ status: 200 })
  })

  it("/master, /primary, /read-write: 200 on the master, 503 on a replica; the JSON status as body", async () => {
    for (const path of ["/master", "/primary", "/read-write"]) {
      const m = await get(asMaster, path)
      expect(m.status, path).toBe(200)
      expect(JSON.parse(m.body)).toMatchObject({ name: "redis1", role: "master" })
      expect(m.type).toContain("application/json")
      expect(await get(asReplica, path), path).toMatchObject({ status: 503, check: "role is replica" })
    }
  })

  it("HAProxy's OPTIONS and HEAD probes answer like GET", async () => {
    expect((await get(asMaster, "/master", { method: "OPTIONS" })).status).toBe(200)
    expect((await get(asMaster, "/master", { method: "HEAD" })).status).toBe(200)
    expect((await get(asReplica, "/master", { method: "HEAD" })).status).toBe(503)
  })

  it("/replica?lag=: 200 within the bound, 503 beyond, 400 for a bad value", async () => {
    expect((await get(asReplica, "/replica")).status).toBe(200)
    expect((await get(asReplica, "/replica?lag=1kB")).status).toBe(200)
    expect(await get(asReplica, "/replica?lag=100")).toMatchObject({ status: 503, check: "1000 bytes behind the master, more than 100" })
    expect((await get(asReplica, "/replica?lag=lots")).status).toBe(400)
    expect((await get(asMaster, "/replica")).status).toBe(503)
  })

  it("POST /failsafe: guarded as a mutation; the node's answer as JSON; GET refused; a bad or oversized body is 400/413 and never reaches the node", async () => {
    // The peers' calls carry the token of http_token_file (another host is not loopback).
    const token = Redacted.make("failsafe-test-token-0123456789")
    const guard = { token: Option.some(token), legacyGet: false }
    const guardedReplica = HttpApp.toWebHandler(router(Effect.succeed(Option.some(nodeWith(replicaStatus))), guard))
    const guardedStarting = HttpApp.toWebHandler(router(Effect.succeed(Option.none()), guard))
    const headers = { "content-type": "application/json", authorization: `Bearer ${Redacted.value(token)}` }
    const post = (body: string) => get(guardedReplica, "/failsafe", { method: "POST", headers, body })
    failsafeAsked.length = 0
    const ask = JSON.stringify({ service: "orders", master: "redis9", epoch: "4294967300" })
    expect((await get(guardedReplica, "/failsafe", { method: "POST", headers: { "content-type": "application/json" }, body: ask })).status).toBe(401)
    expect((await get(asReplica, "/failsafe", { method: "POST", headers: { "content-type": "application/json" }, body: ask })).status).toBe(403)
    expect(failsafeAsked).toHaveLength(0)
    const yes = await post(ask)
    expect(yes.status).toBe(200)
    expect(JSON.parse(yes.body)).toEqual({ answer: "yes", reason: "vouched" })
    const no = await post(JSON.stringify({ service: "orders", master: "redis1", epoch: "4294967300" }))
    expect(JSON.parse(no.body)).toEqual({ answer: "no", reason: "this node reaches ZooKeeper" })
    expect(failsafeAsked).toHaveLength(2)
    expect((await get(guardedReplica, "/failsafe", { headers })).status).toBe(405)
    for (const bad of ["", "{", JSON.stringify({ service: "orders", master: "redis9" }), JSON.stringify({ service: "orders", master: "redis9", epoch: "x" })]) {
      const r = await post(bad)
      expect(r.status, bad).toBe(400)
      expect(JSON.parse(r.body).error).toContain("body must be JSON")
    }
    const big = await post(JSON.stringify({ service: "orders", master: "redis9", epoch: "1", pad: "x".repeat(10_000) }))
    expect(big.status).toBe(413)
    expect(failsafeAsked).toHaveLength(2)
    expect((await get(guardedStarting, "/failsafe", { method: "POST", headers, body: "{}" })).status).toBe(503)
  })

  it("/health, /liveness, /readiness on a built node", async () => {
    for (const path of ["/health", "/liveness", "/readiness"]) expect((await get(asReplica, path)).status, path).toBe(200)
  })
})

describe("?lag= fuzz", () => {
  // A fixed-seed generator: the same inputs on every run, failures reproducible.
  let seed = 0x2545f491
  const rand = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) / 0x100000000
  }
  const ALPHABET = "0123456789.kKmMgGbBsSin -+eE%\u0000\u00e9\u4e2d\n/?&="
  const randomText = (max: number) =>
    Array.from({ length: Math.floor(rand() * max) }, () => ALPHABET[Math.floor(rand() * ALPHABET.length)]).join("")

  it("parseLag never throws and gives finite, non-negative limits", () => {
    for (let i = 0; i < 20000; i++) {
      const text = randomText(40)
      const r = parseLag(text)
      if (Option.isSome(r)) {
        const n = r.value._tag === "Bytes" ? r.value.bytes : r.value.seconds
        expect(Number.isFinite(n) && n >= 0, text).toBe(true)
        expect(text.length).toBeLessThanOrEqual(32)
      }
    }
  })

  it("the router answers 200, 400 or 503 to any ?lag=, never 500", async () => {
    for (let i = 0; i < 300; i++) {
      const lag = encodeURIComponent(randomText(60))
      const r = await get(asReplica, `/replica?lag=${lag}`)
      expect([200, 400, 503], lag).toContain(r.status)
      if (r.status === 400) expect(JSON.parse(r.body).error).toContain("?lag= must be")
      expect(r.check ?? "", lag).toMatch(/^[\x20-\x7e]*$/)
    }
  })
})

describe("guardMutation (mutating endpoints)", () => {
  const token = Option.some(Redacted.make("0123456789abcdef-token"))
  const req = (over: Partial<MutationRequest> = {}): MutationRequest => ({
    method: "POST",
    path: "/disable",
    remoteAddress: Option.some("127.0.0.1"),
    authorization: undefined,
    ...over
  })
  const status = (guard: MutationGuard, r: MutationRequest) => Option.map(guardMutation(guard, r), (x) => x.status)

  it("loopback is 127.0.0.0/8 and ::1, IPv4-mapped too", () => {
    for (const a of ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"]) expect(isLoopback(a), a).toBe(true)
    for (const a of ["10.0.0.1", "192.0.2.2", "::ffff:10.0.0.1", "fd00::2", "128.0.0.1", "1.127.0.0", "localhost", ""]) expect(isLoopback(a), a).toBe(false)
  })

  it("without a token: POST from loopback only; a remote or unknown address is 403 with a hint", () => {
    expect(status(DEFAULT_GUARD, req())).toEqual(Option.none())
    expect(status(DEFAULT_GUARD, req({ remoteAddress: Option.some("::1") }))).toEqual(Option.none())
    expect(status(DEFAULT_GUARD, req({ remoteAddress: Option.some("10.1.2.3") }))).toEqual(Option.some(403))
    expect(status(DEFAULT_GUARD, req({ remoteAddress: Option.none() }))).toEqual(Option.some(403))
    const hint = Option.getOrThrow(guardMutation(DEFAULT_GUARD, req({ remoteAddress: Option.some("10.1.2.3") }))).hint
    expect(hint).toContain("10.1.2.3")
    expect(hint).toContain("http_token_file")
  })

  it("GET, PUT, DELETE: 405 with Allow: POST and a hint; with legacyGet GET passes", () => {
    for (const method of ["GET", "PUT", "DELETE", "HEAD"]) {
      const r = Option.getOrThrow(guardMutation(DEFAULT_GUARD, req({ method })))
      expect(r.status, method).toBe(405)
      expect(r.headers).toEqual({ allow: "POST" })
      expect(r.hint).toContain("use POST /disable")
    }
    expect(status({ token: Option.none(), legacyGet: true }, req({ method: "GET", remoteAddress: Option.some("10.1.2.3") }))).toEqual(Option.none())
    expect(status({ token: Option.none(), legacyGet: true }, req({ method: "PUT" }))).toEqual(Option.some(405))
  })

  it("with a token: the right Bearer from anywhere, 401 otherwise (loopback included); legacyGet still needs it", () => {
    const guard = { token, legacyGet: false }
    const good = "Bearer 0123456789abcdef-token"
    expect(status(guard, req({ authorization: good, remoteAddress: Option.some("10.1.2.3") }))).toEqual(Option.none())
    expect(status(guard, req({ authorization: "bearer   0123456789abcdef-token " }))).toEqual(Option.none())
    for (const authorization of [undefined, "", "Bearer", "Basic 0123456789abcdef-token", "Bearer 0123456789abcdef-toke", "Bearer 0123456789abcdef-token2"]) {
      expect(status(guard, req({ authorization })), String(authorization)).toEqual(Option.some(401))
    }
    expect(Option.getOrThrow(guardMutation(guard, req())).hint).toContain("Authorization: Bearer <token>")
    const legacy = { token, legacyGet: true }
    expect(status(legacy, req({ method: "GET", remoteAddress: Option.some("10.1.2.3") }))).toEqual(Option.some(401))
    expect(status(legacy, req({ method: "GET", authorization: good }))).toEqual(Option.none())
  })

  it("through the router: the web handler knows no remote address, so POST is refused and nothing changes; GET is 405", async () => {
    let disabled = 0
    const node: DictatorNodeService = { ...nodeWith(masterStatus), disable: Effect.sync(() => (disabled++, true)) }
    const h = HttpApp.toWebHandler(router(Effect.succeed(Option.some(node))))
    expect(await get(h, "/disable", { method: "POST" })).toMatchObject({ status: 403 })
    expect(await get(h, "/disable")).toMatchObject({ status: 405 })
    const withToken = HttpApp.toWebHandler(router(Effect.succeed(Option.some(node)), { token, legacyGet: false }))
    expect(await get(withToken, "/disable", { method: "POST", headers: { authorization: "Bearer 0123456789abcdef-token" } })).toMatchObject({
      status: 200,
      body: "disabled\n"
    })
    expect(disabled).toBe(1)
    // Read-only endpoints are not guarded.
    expect((await get(h, "/ping", { method: "POST" })).status).toBe(200)
  })
})
