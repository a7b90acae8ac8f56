/** Issue 9: `zk_auth`, `zk_chroot`, `http_token_file`, `http_legacy_get`, `http_tls` and the secrets they name. */
import { describe, expect, it } from "@effect/vitest"
import { Either, Option, Redacted } from "effect"
import {
  resolveHttpSecrets,
  resolveZkAuth,
  type SecretSources
} from "../src/Config.js"

import { err, FILE, ok, sources } from "./support/configCases.js"

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

describe("zk_auth", () => {
  it("absent by default: open ACLs, nothing read", () => {
    expect(ok({}).zk_auth).toBeUndefined()
    expect(resolveZkAuth(FILE, ok({}), sources({}))).toEqual(Either.right(Option.none()))
  })

  it("credentials_file holds user:password; the trailing newline is no part of it", () => {
    const c = ok({ zk_auth: { scheme: "digest", credentials_file: "/etc/dictator/zk.auth" } })
    const r = Either.getOrThrow(resolveZkAuth(FILE, c, sources({ "/etc/dictator/zk.auth": "dictator:s3cret:with:colons\n" })))
    expect(Option.isSome(r)).toBe(true)
    const creds = Option.getOrThrow(r)
    expect(creds.user).toBe("dictator")
    expect(Redacted.value(creds.auth)).toBe("dictator:s3cret:with:colons")
    // Redacted: a log line or a JSON dump never shows the password.
    expect(String(creds.auth)).not.toContain("s3cret")
  })

  it("username + password_env", () => {
    const c = ok({ zk_auth: { username: "dictator", password_env: "ZK_PW" } })
    const creds = Option.getOrThrow(Either.getOrThrow(resolveZkAuth(FILE, c, sources({}, { ZK_PW: "pw" }))))
    expect(Redacted.value(creds.auth)).toBe("dictator:pw")
  })

  it("an inline password, another scheme, no source or two sources: one clear message", () => {
    expect(err({ zk_auth: { credentials_file: "/f", password: "x" } })).toContain('key "zk_auth.password" = "x": is not accepted inside the config')
    expect(err({ zk_auth: { scheme: "sasl", credentials_file: "/f" } })).toContain('must be "digest"')
    expect(err({ zk_auth: {} })).toContain('needs "credentials_file"')
    expect(err({ zk_auth: { username: "u" } })).toContain('needs "credentials_file"')
    expect(err({ zk_auth: { credentials_file: "/f", username: "u", password_env: "P" } })).toContain("not both")
    expect(err({ zk_auth: { username: "a:b", password_env: "P" } })).toContain("without spaces or ':'")
  })

  it("a missing file, an empty one, one without ':' or an unset variable stops the start with the key named", () => {
    const c = ok({ zk_auth: { credentials_file: "/z" } })
    const left = (src: SecretSources) => {
      const r = resolveZkAuth(FILE, c, src)
      if (Either.isRight(r)) throw new Error("expected a ConfigError")
      return r.left.message
    }
    expect(left(sources({}))).toContain('key "zk_auth.credentials_file" = "/z": cannot read the file (ENOENT)')
    expect(left(sources({ "/z": "\n" }))).toContain("the file is empty")
    expect(left(sources({ "/z": "justapassword" }))).toContain('must hold "user:password"')
    expect(left(sources({ "/z": ":pw" }))).toContain('must hold "user:password"')
    const e = resolveZkAuth(FILE, ok({ zk_auth: { username: "u", password_env: "NOPE" } }), sources({}))
    expect(Either.isLeft(e) && e.left.message).toContain('key "zk_auth.password_env" = "NOPE": the environment variable is unset or empty')
  })
})

describe("zk_chroot", () => {
  it("a path that starts with / and has no trailing /", () => {
    expect(ok({ zk_chroot: "/teams/payments" }).zk_chroot).toBe("/teams/payments")
    expect(ok({ zk_chroot: "/a" }).zk_chroot).toBe("/a")
    for (const bad of ["teams/payments", "/teams/", "/", "//a", "/a b", "/a/../b/"]) {
      expect(err({ zk_chroot: bad }), bad).toContain('key "zk_chroot"')
    }
    expect(err({ zk_chroot: "/teams/" })).toContain('starting with "/", no trailing "/"')
  })
})

describe("http_token_file / http_legacy_get / http_tls", () => {
  it("defaults: no token, no legacy GET, plain HTTP", () => {
    const c = ok({})
    expect(c.http_legacy_get).toBe(false)
    expect(resolveHttpSecrets(FILE, c, sources({}))).toEqual(Either.right({ token: Option.none(), tls: Option.none() }))
  })

  it("the token is the first line of the file, Redacted; a short one is refused", () => {
    const c = ok({ http_token_file: "/t" })
    const r = Either.getOrThrow(resolveHttpSecrets(FILE, c, sources({ "/t": "0123456789abcdef0123\nsecond line\n" })))
    expect(Redacted.value(Option.getOrThrow(r.token))).toBe("0123456789abcdef0123")
    const short = resolveHttpSecrets(FILE, c, sources({ "/t": "short\n" }))
    expect(Either.isLeft(short) && short.left.message).toContain("shorter than 16 characters")
    const missing = resolveHttpSecrets(FILE, c, sources({}))
    expect(Either.isLeft(missing) && missing.left.message).toContain('key "http_token_file" = "/t": cannot read the file (ENOENT)')
  })

  it("http_tls needs both PEM files", () => {
    expect(err({ http_tls: { cert_file: "/c" } })).toContain('key "http_tls.key_file" = missing')
    const c = ok({ http_tls: { cert_file: "/c", key_file: "/k" } })
    const r = Either.getOrThrow(resolveHttpSecrets(FILE, c, sources({ "/c": PEM, "/k": PEM })))
    expect(Option.getOrThrow(r.tls)).toEqual({ cert: PEM, key: PEM })
    const notPem = resolveHttpSecrets(FILE, c, sources({ "/c": "hello", "/k": PEM }))
    expect(Either.isLeft(notPem) && notPem.left.message).toContain('key "http_tls.cert_file" = "/c": not a PEM file')
  })

  it("http_legacy_get must be a boolean", () => {
    expect(ok({ http_legacy_get: true }).http_legacy_get).toBe(true)
    expect(err({ http_legacy_get: "yes" })).toContain('key "http_legacy_get" = "yes": must be true or false')
  })
})
