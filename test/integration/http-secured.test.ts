/**
 * Issue 9, the protected HTTP API on a real node:http / node:https server (Http.layer, the one
 * main.ts serves) in front of a node whose enable/disable only count their calls:
 * - mutating endpoints answer POST only (GET: 405 with a hint), except with http_legacy_get;
 * - with a token: `Authorization: Bearer <token>` or 401 with a hint, from any address;
 * - without a token: loopback only. The server listens on 0.0.0.0; a request to 127.0.0.2 comes
 *   from a loopback address, one to this host's non-loopback address (when it has one) is refused
 *   with 403;
 * - read-only endpoints stay open;
 * - HTTPS with a certificate test/support/tls.ts makes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted, type Scope } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import { writeFileSync } from "node:fs"
import { networkInterfaces } from "node:os"
import { join } from "node:path"
import * as Http from "../../src/Http.js"
import { DictatorNode, type NodeStatus } from "../../src/Node.js"
import * as Operator from "../../src/Operator.js"
import { freePort, HarnessError } from "../support/servers.js"
import { makeCerts } from "../support/tls.js"

const TOKEN = "9f86d081884c7d659a2feaa0c55ad015"

interface Calls {
  enable: number
  disable: number
}

/** Serves the API with `guard` (and `tls`) on 0.0.0.0:port for the scope; counts mutations. */
/** What the status endpoints answer here: a node that has decided nothing yet. */
const statusOf: NodeStatus = {
  name: "redis1",
  service: "ops",
  role: "starting",
  enabled: true,
  session: { status: "connected", sessionId: "1000abc", generation: 1, since: 0 },
  master: null,
  health: { _tag: "Unknown" },
  plan: null,
  members: [],
  maintenance: false,
  lag: null
}

const serve = (
  guard: Http.MutationGuard,
  tls?: { cert: string; key: string },
  status?: NodeStatus
): Effect.Effect<{ port: number; calls: Calls }, never, Scope.Scope> =>
  Effect.gen(function* () {
    const port = yield* freePort
    const calls: Calls = { enable: 0, disable: 0 }
    const node = Layer.succeed(
      DictatorNode,
      DictatorNode.of({
        status: status === undefined ? Effect.die("status is not used here") : Effect.succeed(status),
        statusNow: status === undefined ? Effect.die("status is not used here") : Effect.succeed(status),
        enable: Effect.sync(() => (calls.enable++, true)),
        disable: Effect.sync(() => (calls.disable++, true)),
        failsafe: () => Effect.succeed({ yes: false, reason: "failsafe is not used here" }),
        metrics: Effect.succeed({ contentType: "text/plain", text: "" }),
        countHttp: () => Effect.void,
        countSentinel: () => Effect.void
      })
    )
    yield* Layer.launch(Http.layer({ host: "0.0.0.0", port, guard, ...(tls === undefined ? {} : { tls }) }, node)).pipe(
      Effect.orDie,
      Effect.forkScoped
    )
    // Bounded wait for the listener.
    for (let i = 0; i < 100; i++) {
      const up = yield* request({ port, path: "/ping" }).pipe(Effect.either)
      if (up._tag === "Right") break
      yield* Effect.sleep("50 millis")
    }
    return { port, calls }
  })

const request = (opts: {
  port: number
  path: string
  method?: string
  host?: string
  headers?: Record<string, string>
  tls?: { ca: string }
}): Effect.Effect<{ status: number; body: string; headers: http.IncomingHttpHeaders }, HarnessError> =>
  Effect.async((resume) => {
    const options = {
      host: opts.host ?? "127.0.0.1",
      port: opts.port,
      path: opts.path,
      method: opts.method ?? "GET",
      agent: false as const,
      timeout: 5000,
      headers: { connection: "close", ...opts.headers }
    }
    const onRes = (res: http.IncomingMessage) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (d: string) => (body += d))
      res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body, headers: res.headers })))
    }
    const req = opts.tls === undefined ? http.request(options, onRes) : https.request({ ...options, ca: opts.tls.ca, servername: "localhost" }, onRes)
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")))
    req.on("error", (e) => resume(Effect.fail(new HarnessError({ message: `${options.method} ${opts.path}: ${e.message}` }))))
    req.end()
    return Effect.sync(() => req.destroy())
  })

/** A non-loopback IPv4 address of this host, if it has one (a container may have only lo). */
const outsideAddress = (): string | undefined =>
  Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === "IPv4" && !a.internal)?.address

describe("protected HTTP API on a real server", () => {
  it.scopedLive("without a token: POST from loopback (127.0.0.1, 127.0.0.2) works, GET is 405 with a hint, other addresses 403", () =>
    Effect.gen(function* () {
      const { port, calls } = yield* serve({ token: Option.none(), legacyGet: false })
      expect(yield* request({ port, path: "/disable", method: "POST" })).toMatchObject({ status: 200, body: "disabled\n" })
      expect(yield* request({ port, path: "/enable", method: "POST", host: "127.0.0.2" })).toMatchObject({ status: 200, body: "enabled\n" })
      const get = yield* request({ port, path: "/disable" })
      expect(get.status).toBe(405)
      expect(get.headers["allow"]).toBe("POST")
      expect(get.body).toContain("use POST /disable")
      expect(get.body).toContain("http_legacy_get")
      expect(calls).toEqual({ enable: 1, disable: 1 })
      // Read-only endpoints stay open.
      expect(yield* request({ port, path: "/ping" })).toMatchObject({ status: 200, body: "PONG\n" })
      const outside = outsideAddress()
      if (outside !== undefined) {
        const refused = yield* request({ port, path: "/disable", method: "POST", host: outside })
        expect(refused.status).toBe(403)
        expect(refused.body).toContain("only from loopback")
        expect(refused.body).toContain("http_token_file")
        expect(calls.disable).toBe(1)
        expect((yield* request({ port, path: "/ping", host: outside })).status).toBe(200)
      }
    }))

  it.scopedLive("with a token: Bearer needed (401 with a hint otherwise), even from loopback", () =>
    Effect.gen(function* () {
      const { port, calls } = yield* serve({ token: Option.some(Redacted.make(TOKEN)), legacyGet: false })
      const none = yield* request({ port, path: "/disable", method: "POST" })
      expect(none.status).toBe(401)
      expect(none.body).toContain("Authorization: Bearer <token>")
      expect(none.headers["www-authenticate"]).toContain("Bearer")
      const wrong = yield* request({ port, path: "/disable", method: "POST", headers: { authorization: `Bearer ${TOKEN.slice(1)}x` } })
      expect(wrong.status).toBe(401)
      expect(wrong.body).toContain("the token given is not it")
      expect(calls.disable).toBe(0)
      const right = yield* request({ port, path: "/disable", method: "POST", headers: { authorization: Http.bearer(Redacted.make(TOKEN)) } })
      expect(right).toMatchObject({ status: 200, body: "disabled\n" })
      // GET stays 405 even with the token.
      expect((yield* request({ port, path: "/enable", headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(405)
      const outside = outsideAddress()
      if (outside !== undefined) {
        const remote = yield* request({ port, path: "/enable", method: "POST", host: outside, headers: { authorization: `Bearer ${TOKEN}` } })
        expect(remote).toMatchObject({ status: 200, body: "enabled\n" })
      }
      expect(calls.disable).toBe(1)
    }))

  it.scopedLive("http_legacy_get: the original's GET /disable works again", () =>
    Effect.gen(function* () {
      const { port, calls } = yield* serve({ token: Option.none(), legacyGet: true })
      expect(yield* request({ port, path: "/disable" })).toMatchObject({ status: 200, body: "disabled\n" })
      expect(yield* request({ port, path: "/enable", method: "POST" })).toMatchObject({ status: 200, body: "enabled\n" })
      expect(calls).toEqual({ enable: 1, disable: 1 })
    }))

  it.scopedLive("http_tls: HTTPS with the certificate, the guard unchanged; plain HTTP is not served", () =>
    Effect.gen(function* () {
      const certs = yield* makeCerts
      const ca = certs.pem(certs.caCert)
      const { port, calls } = yield* serve(
        { token: Option.some(Redacted.make(TOKEN)), legacyGet: false },
        { cert: certs.pem(certs.serverCert), key: certs.pem(certs.serverKey) }
      )
      expect(yield* request({ port, path: "/ping", tls: { ca } })).toMatchObject({ status: 200, body: "PONG\n" })
      expect((yield* request({ port, path: "/disable", method: "POST", tls: { ca } })).status).toBe(401)
      expect(
        yield* request({ port, path: "/disable", method: "POST", tls: { ca }, headers: { authorization: `Bearer ${TOKEN}` } })
      ).toMatchObject({ status: 200, body: "disabled\n" })
      expect(calls.disable).toBe(1)
      // A plain-HTTP client gets no HTTP answer from the TLS listener.
      const plain = yield* request({ port, path: "/ping" }).pipe(Effect.either)
      expect(plain._tag === "Left" || plain.right.status !== 200).toBe(true)
    }))

  it.scopedLive("dictator status speaks HTTPS to a daemon with http_tls", () =>
    Effect.gen(function* () {
      const certs = yield* makeCerts
      const { port } = yield* serve(Http.DEFAULT_GUARD, { cert: certs.pem(certs.serverCert), key: certs.pem(certs.serverKey) }, statusOf)
      const file = join(certs.dir, "dictator.conf")
      writeFileSync(
        file,
        JSON.stringify({ svc_name: "ops", zk_hosts: ["127.0.0.1:2181"], http_host: "0.0.0.0", http_port: port, http_tls: { cert_file: certs.serverCert, key_file: certs.serverKey } })
      )
      const out: Array<string> = []
      const write = process.stdout.write
      process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write
      const code = yield* Effect.scoped(Operator.run(["status", `--config=${file}`, "--json"])).pipe(
        Effect.ensuring(Effect.sync(() => void (process.stdout.write = write)))
      )
      expect(code).toBe(0)
      expect(JSON.parse(out.join(""))).toMatchObject({ name: "redis1", service: "ops" })
    }))
})
