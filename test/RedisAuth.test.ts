/**
 * Issue 9: failures of the dictator's own access to a Redis (credentials, ACL, TLS) are their own
 * error, and health treats them as neither healthy nor down.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { Either } from "effect"
import { type HealthState, nextHealth } from "../src/domain/Health.js"
import {
  authFailureKind,
  authRetryDelayMs,
  RedisAuthFailed,
  RedisCommandError,
  type RedisFailure,
  type ReplicationInfo,
  RedisUnavailable
} from "../src/Redis.js"
import { LEAST_ACL } from "./support/acl.js"

describe("authFailureKind", () => {
  // Replies as redis-server 7.0 sends them (and 6.x / 7.2 wordings of NOPERM).
  it.each([
    ["WRONGPASS invalid username-password pair or user is disabled.", "credentials"],
    ["NOAUTH Authentication required.", "credentials"],
    ["NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time", "credentials"],
    ["ERR invalid password", "credentials"],
    ["NOPERM this user has no permissions to run the 'info' command", "permission"],
    ["NOPERM User dictator has no permissions to run the 'config|set' command", "permission"]
  ] as const)("%s -> %s", (message, kind) => {
    expect(authFailureKind(message)).toBe(kind)
  })

  it.each([
    "ERR unknown command 'REPLICAOF'",
    "LOADING Redis is loading the dataset in memory",
    "READONLY You can't write against a read only replica.",
    "Connection is closed.",
    "ERR Client sent AUTH, but no password is set",
    // The prefix matters, not a word somewhere in the text.
    "ERR value of NOPERM key",
    "ERR WRONGPASSWORD is not a command"
  ])("%s is not our access", (message) => {
    expect(authFailureKind(message)).toBeNull()
  })

  it.each([
    "CERT_HAS_EXPIRED",
    "CERT_NOT_YET_VALID",
    "DEPTH_ZERO_SELF_SIGNED_CERT",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "ERR_TLS_CERT_ALTNAME_INVALID",
    "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "ERR_SSL_WRONG_VERSION_NUMBER"
  ])("socket error code %s is a TLS failure", (code) => {
    expect(authFailureKind("some text", code)).toBe("tls")
  })

  it.each(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ERR_TLS_HANDSHAKE_TIMEOUT", "EPIPE"])(
    "socket error code %s is not our access",
    (code) => {
      expect(authFailureKind("socket trouble", code)).toBeNull()
    }
  )
})

describe("RedisAuthFailed", () => {
  it("names the server, what failed and what to fix", () => {
    const e = new RedisAuthFailed({ address: "10.0.0.5:6379", kind: "credentials", detail: "WRONGPASS invalid username-password pair" })
    expect(e.message).toBe(
      "Redis 10.0.0.5:6379: the dictator's credentials are rejected (WRONGPASS invalid username-password pair); fix redis_auth (username, password_file / password_env) to match this server's requirepass or ACL user"
    )
    expect(new RedisAuthFailed({ address: "a:1", kind: "permission", detail: "NOPERM" }).message).toContain("least ACL")
    expect(new RedisAuthFailed({ address: "a:1", kind: "tls", detail: "CERT_HAS_EXPIRED" }).message).toContain("redis_tls")
  })
})

describe("authRetryDelayMs", () => {
  it("doubles from 250 ms up to 5 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50].map(authRetryDelayMs)).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000, 5000])
    expect(authRetryDelayMs(0)).toBe(250)
  })
})

describe("nextHealth with RedisAuthFailed", () => {
  const info: ReplicationInfo = {
    role: "master",
    master: null,
    linkUp: true,
    linkDownSinceSeconds: null,
    syncInProgress: false,
    offset: 10,
    replid: "x",
    replicas: []
  }
  const authFailed = Either.left<RedisFailure>(
    new RedisAuthFailed({ address: "127.0.0.1:6379", kind: "credentials", detail: "WRONGPASS" })
  )
  const opts = { downAfterMs: 1000 }

  it.each<[string, HealthState]>([
    ["Unknown", { _tag: "Unknown" }],
    ["Healthy", { _tag: "Healthy", info, at: 0 }],
    ["Suspect", { _tag: "Suspect", since: 0, detail: "timeout", info }],
    ["Down", { _tag: "Down", since: 0, detail: "refused" }],
    ["Loading", { _tag: "Loading", since: 0 }]
  ])("from %s it is Misconfigured, never Down, however long it lasts", (_, prev) => {
    let h = nextHealth(prev, authFailed, 100, opts)
    expect(h).toMatchObject({ _tag: "Misconfigured", since: 100 })
    for (let t = 200; t <= 60_000; t += 100) h = nextHealth(h, authFailed, t, opts)
    // `since` is when it started: the operator sees how long the access has been broken.
    expect(h).toMatchObject({ _tag: "Misconfigured", since: 100 })
    expect(h._tag === "Misconfigured" && h.detail).toContain("fix redis_auth")
  })

  it("a command error (not our access) is still Down; a good check after Misconfigured is Healthy", () => {
    const cmd = Either.left<RedisFailure>(new RedisCommandError({ address: "a:1", command: "INFO replication", detail: "ERR boom" }))
    expect(nextHealth({ _tag: "Unknown" }, cmd, 0, opts)._tag).toBe("Down")
    const mis = nextHealth({ _tag: "Unknown" }, authFailed, 0, opts)
    expect(nextHealth(mis, Either.right(info), 5, opts)).toEqual({ _tag: "Healthy", info, at: 5 })
  })

  it("a refused connection after Misconfigured is Down at once (the process is gone)", () => {
    const mis = nextHealth({ _tag: "Unknown" }, authFailed, 0, opts)
    const refused = Either.left<RedisFailure>(new RedisUnavailable({ address: "a:1", reason: "refused", detail: "ECONNREFUSED" }))
    expect(nextHealth(mis, refused, 7, opts)).toMatchObject({ _tag: "Down", since: 7 })
  })
})

describe("the least ACL in README.md", () => {
  it("is exactly the one the integration tests run with", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
    expect(readme).toContain(`user dictator on >PASSWORD ${LEAST_ACL}\n`)
  })
})
