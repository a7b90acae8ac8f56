/**
 * Issue 9, the Redis layer on real redis-servers: credentials (requirepass, ACL users) and TLS
 * for every connection, masterauth/masteruser before REPLICAOF, and our own access failures as
 * RedisAuthFailed (never "unavailable"), logged once.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Logger, LogLevel, Option } from "effect"
import * as Redis from "../../src/Redis.js"
import { oneShotRedis, redisServer, type RedisServer, waitUntil } from "../support/servers.js"
import { makeCerts, tlsServerLines } from "../support/tls.js"
import { LEAST_ACL } from "../support/acl.js"

const PASSWORD = "s3cret-pw"
const TIMEOUT = "1 second"

/** Runs `f` with the log lines of the Redis layer collected. */
const withLogs = <A, E, R>(f: (lines: Array<string>) => Effect.Effect<A, E, R>) => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  return f(lines).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Logger.withMinimumLogLevel(LogLevel.Debug))
}

const connect = (server: RedisServer, options: Redis.RedisClientOptions) =>
  Redis.makeWith(options).connect({ host: server.host, port: server.port }, TIMEOUT)

describe("Redis layer with requirepass", () => {
  it.scopedLive("the right password works; a wrong or missing one is RedisAuthFailed, logged once, for as long as it lasts", () =>
    withLogs((lines) =>
      Effect.gen(function* () {
        const server = yield* redisServer({ args: ["--requirepass", PASSWORD], access: { password: PASSWORD } })

        const good = yield* connect(server, { auth: { password: PASSWORD } })
        yield* good.ping
        expect((yield* good.replication).role).toBe("master")

        const wrong = yield* connect(server, { auth: { password: "not-it" } })
        for (let i = 0; i < 20; i++) {
          const e = yield* Effect.flip(wrong.ping)
          expect(e).toMatchObject({ _tag: "RedisAuthFailed", kind: "credentials", address: `127.0.0.1:${server.port}` })
          // The command racing AUTH's answer may get NOAUTH; the connection's failure is WRONGPASS.
          expect(e.message).toMatch(i === 0 ? /WRONGPASS|NOAUTH/ : /WRONGPASS/)
          yield* Effect.sleep("50 millis")
        }
        const errors = lines.filter((l) => l.startsWith("ERROR"))
        expect(errors).toHaveLength(1)
        expect(errors[0]).toContain(`Redis 127.0.0.1:${server.port}: the dictator's credentials are rejected`)
        expect(errors[0]).toContain("fix redis_auth")
        // Retried with backoff: a handful of reconnects in a second, not one per 20 ms.
        const info = yield* server.cli("INFO", "stats")
        const rejected = Number(/total_connections_received:(\d+)/.exec(info)?.[1] ?? "NaN")
        expect(rejected).toBeLessThan(15)

        // The server's password changed to the one this client has: it gets in again by itself.
        yield* server.cli("CONFIG", "SET", "requirepass", "not-it")
        yield* waitUntil("the reconnecting client to authenticate", Effect.map(Effect.either(wrong.ping), Either.getRight), {
          timeout: "15 seconds",
          interval: "100 millis"
        })
        expect(lines.filter((l) => l.startsWith("INFO"))).toEqual([
          `INFO Redis 127.0.0.1:${server.port}: the dictator's access works again (PING)`
        ])

        const none = yield* connect(server, {})
        // (requirepass is "not-it" now: no password at all is NOAUTH)
        const e = yield* Effect.flip(none.replication)
        expect(e).toMatchObject({ _tag: "RedisAuthFailed", kind: "credentials" })
        expect(e.message).toContain("NOAUTH")
      })
    )
  )

  it.scopedLive("replicaOf sets masterauth first, so the replica authenticates to its master", () =>
    Effect.gen(function* () {
      const access = { password: PASSWORD }
      const a = yield* redisServer({ args: ["--requirepass", PASSWORD, "--repl-diskless-sync-delay", "0"], access })
      const b = yield* redisServer({ args: ["--requirepass", PASSWORD], access })
      const conn = yield* connect(b, { auth: access })
      yield* conn.replicaOf({ host: a.host, port: a.port })
      expect(yield* b.cli("CONFIG", "GET", "masterauth")).toBe(`masterauth\n${PASSWORD}`)
      yield* waitUntil(
        "the replica's link to its master is up",
        Effect.map(conn.replication, (i) => (i.role === "replica" && i.linkUp ? Option.some(i) : Option.none())),
        { timeout: "20 seconds", interval: "100 millis" }
      )
      yield* conn.replicaOf(null)
      expect((yield* conn.replication).role).toBe("master")
    })
  )
})

describe("Redis layer with an ACL user", () => {
  it.scopedLive("a missing permission is RedisAuthFailed 'permission' for that command only", () =>
    withLogs((lines) =>
      Effect.gen(function* () {
        const server = yield* redisServer({
          configLines: [`user noinfo on >${PASSWORD} +ping +client|setname`, "user default off"],
          access: { username: "noinfo", password: PASSWORD }
        })
        const conn = yield* connect(server, { auth: { username: "noinfo", password: PASSWORD } })
        yield* conn.ping
        for (let i = 0; i < 5; i++) {
          expect(yield* Effect.flip(conn.replication)).toMatchObject({ _tag: "RedisAuthFailed", kind: "permission" })
          yield* conn.ping
        }
        const errors = lines.filter((l) => l.startsWith("ERROR"))
        expect(errors).toHaveLength(1)
        expect(errors[0]).toContain("lacks a permission (INFO replication: NOPERM")
        // masteruser is set with the username before REPLICAOF: refused here (no +config|set).
        const e = yield* Effect.flip(conn.replicaOf({ host: "127.0.0.1", port: 1 }))
        expect(e).toMatchObject({ _tag: "RedisAuthFailed", kind: "permission" })
        expect(e.message).toContain("CONFIG SET masteruser")
      })
    )
  )
})

describe("the least ACL", () => {
  it.scopedLive("is enough to close the applications' connections on a role change, never the dictators' own", () =>
    Effect.gen(function* () {
      const lines = [`user dictator on >${PASSWORD} ${LEAST_ACL}`, `user app on >${PASSWORD} +@all ~* &*`, "user default off"]
      const server = yield* redisServer({ configLines: lines, access: { username: "app", password: PASSWORD } })
      const dictatorAuth = { auth: { username: "dictator", password: PASSWORD } }
      const conn = yield* connect(server, dictatorAuth)
      // Another dictator's connection (a peer checking this Redis): unnamed under the least ACL, kept by its user.
      const peer = yield* connect(server, dictatorAuth)
      const app = oneShotRedis({ host: server.host, port: server.port }, { connectTimeoutMs: 2000, access: { username: "app", password: PASSWORD } })
      let appClosed = false
      app.on("error", () => {})
      app.on("close", () => {
        appClosed = true
      })
      yield* Effect.acquireRelease(Effect.promise(() => app.connect()), () => Effect.sync(() => app.disconnect()))
      yield* Effect.promise(() => app.ping())
      expect(yield* conn.killClients).toBe(1)
      yield* waitUntil("the application's connection closed", Effect.sync(() => (appClosed ? Option.some(true) : Option.none())), {
        timeout: "5 seconds",
        interval: "50 millis"
      })
      // The dictators' connections still answer, without reconnecting.
      yield* conn.ping
      yield* peer.ping
      expect(yield* conn.killClients).toBe(0)
    })
  )

  it.scopedLive("needs +psync: without it a replica authenticating as the dictators' user never links", () =>
    Effect.gen(function* () {
      const withoutPsync = LEAST_ACL.split(" ").filter((p) => p !== "+psync").join(" ")
      expect(withoutPsync).not.toBe(LEAST_ACL)
      const lines = [`user dictator on >${PASSWORD} ${withoutPsync}`, `user tester on >${PASSWORD} +@all ~*`, "user default off"]
      const access = { username: "tester", password: PASSWORD }
      const a = yield* redisServer({ configLines: lines, args: ["--repl-diskless-sync-delay", "0"], access })
      const b = yield* redisServer({ configLines: lines, access })
      const conn = yield* connect(b, { auth: { username: "dictator", password: PASSWORD } })
      yield* conn.replicaOf({ host: a.host, port: a.port })
      expect(yield* b.cli("CONFIG", "GET", "masteruser")).toBe("masteruser\ndictator")
      // Redis retries the sync every second: three seconds of attempts, none linked.
      for (let i = 0; i < 12; i++) {
        const info = yield* conn.replication
        expect([info.role, info.linkUp]).toEqual(["replica", false])
        yield* Effect.sleep("250 millis")
      }
    })
  )
})

describe("Redis layer over TLS", () => {
  it.scopedLive("a client with the CA (and a client certificate) works; an unknown CA or an expired server certificate is RedisAuthFailed 'tls'", () =>
    Effect.gen(function* () {
      const certs = yield* makeCerts
      const tls = {
        ca: certs.pem(certs.caCert),
        cert: certs.pem(certs.clientCert),
        key: certs.pem(certs.clientKey),
        rejectUnauthorized: true
      }
      const server = yield* redisServer({ configLines: tlsServerLines(certs), tlsOnly: true, access: { tls } })
      const good = yield* connect(server, { tls })
      yield* good.ping
      expect((yield* good.replication).role).toBe("master")

      const wrongCa = yield* connect(server, { tls: { ...tls, ca: certs.pem(certs.otherCaCert) } })
      const e1 = yield* Effect.flip(wrongCa.ping)
      expect(e1).toMatchObject({ _tag: "RedisAuthFailed", kind: "tls" })

      const expiredServer = yield* redisServer({
        configLines: tlsServerLines(certs, { expired: true }),
        tlsOnly: true,
        access: { tls: { ...tls, rejectUnauthorized: false } }
      })
      const toExpired = yield* connect(expiredServer, { tls })
      const e2 = yield* Effect.flip(toExpired.ping)
      expect(e2).toMatchObject({ _tag: "RedisAuthFailed", kind: "tls" })
      expect(e2.message).toContain("CERT_HAS_EXPIRED")

      // A server that demands client certificates: none, or an expired one, is refused by the
      // server; that is our access too, not the server down.
      const strict = yield* redisServer({
        configLines: tlsServerLines(certs, { authClients: "yes" }),
        tlsOnly: true,
        access: { tls }
      })
      yield* (yield* connect(strict, { tls })).ping
      const noCert = yield* connect(strict, { tls: { ca: tls.ca, rejectUnauthorized: true } })
      const e3 = yield* Effect.flip(noCert.ping)
      expect(e3).toMatchObject({ _tag: "RedisAuthFailed", kind: "tls" })
      // ... for as long as it lasts: the reconnects are reset the same way.
      for (let i = 0; i < 5; i++) {
        yield* Effect.sleep("300 millis")
        expect(yield* Effect.flip(noCert.ping)).toMatchObject({ _tag: "RedisAuthFailed", kind: "tls" })
      }
      const expiredCert = yield* connect(strict, {
        tls: { ...tls, cert: certs.pem(certs.expiredServerCert), key: certs.pem(certs.expiredServerKey) }
      })
      expect(yield* Effect.flip(expiredCert.ping)).toMatchObject({ _tag: "RedisAuthFailed", kind: "tls" })

      const stillThere = yield* Effect.either(good.ping)
      expect(Either.isRight(stillThere)).toBe(true)

      // A TLS server that really dies is unavailable (refused), not a TLS failure: a failover follows.
      yield* server.kill9
      const seen: Array<string> = []
      for (let i = 0; i < 100 && !seen.includes("RedisUnavailable:refused"); i++) {
        const e = yield* Effect.flip(good.ping)
        seen.push(e._tag === "RedisUnavailable" ? `${e._tag}:${e.reason}` : e._tag)
        yield* Effect.sleep("50 millis")
      }
      expect(seen).toContain("RedisUnavailable:refused")
      expect(seen).not.toContain("RedisAuthFailed")
    })
  )
})
