/** Issue 9: the `redis_auth` and `redis_tls` keys, and reading the secrets they name at start. */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { ConfigError, resolveRedisSecrets, type SecretSources } from "../src/Config.js"

import { decode, err, FILE, ok, sources } from "./support/configCases.js"

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

const resolve = (extra: Record<string, unknown>, src: SecretSources) => resolveRedisSecrets(FILE, ok(extra), src)
const resolveErr = (extra: Record<string, unknown>, src: SecretSources): ConfigError => {
  const r = resolve(extra, src)
  if (Either.isRight(r)) throw new Error(`expected a ConfigError, got ${JSON.stringify(r.right)}`)
  return r.left
}

describe("redis_auth / redis_tls decoding", () => {
  it("both are absent by default and nothing is read", () => {
    const c = ok({})
    expect(c.redis_auth).toBeUndefined()
    expect(c.redis_tls).toBeUndefined()
    expect(resolveRedisSecrets(FILE, c, sources({}))).toEqual(Either.right({}))
  })

  it("decodes a username with a password file, or a password variable", () => {
    expect(ok({ redis_auth: { username: "dictator", password_file: "/run/secrets/redis" } }).redis_auth).toEqual({
      username: "dictator",
      password_file: "/run/secrets/redis"
    })
    expect(ok({ redis_auth: { password_env: "REDIS_PASSWORD" } }).redis_auth).toEqual({ password_env: "REDIS_PASSWORD" })
  })

  it("rejects an inline password, saying where to put it", () => {
    const m = err({ redis_auth: { password: "hunter2", password_file: "/x" } })
    expect(m).toContain('key "redis_auth.password"')
    expect(m).toContain("password_file")
    expect(m).toContain("password_env")
  })

  it("needs exactly one password source", () => {
    expect(err({ redis_auth: { username: "u" } })).toContain('needs exactly one of "password_file" or "password_env"')
    expect(err({ redis_auth: { password_file: "/a", password_env: "B" } })).toContain("needs exactly one")
  })

  it("rejects bad values, naming the key", () => {
    expect(err({ redis_auth: { password_env: "1BAD-NAME" } })).toContain('key "redis_auth.password_env" = "1BAD-NAME": must be the name of an environment variable')
    expect(err({ redis_auth: { username: "two words", password_env: "P" } })).toContain('key "redis_auth.username"')
    expect(err({ redis_auth: "secret" })).toContain('key "redis_auth"')
    expect(err({ redis_tls: { reject_unauthorized: "no" } })).toContain('key "redis_tls.reject_unauthorized" = "no": must be true or false')
    expect(err({ redis_tls: { cert_file: "/c.pem" } })).toContain('"cert_file" and "key_file" go together')
  })

  it("decodes redis_tls with reject_unauthorized true by default", () => {
    expect(ok({ redis_tls: { ca_file: "/ca.pem", server_name: "redis.internal" } }).redis_tls).toEqual({
      ca_file: "/ca.pem",
      server_name: "redis.internal",
      reject_unauthorized: true
    })
    expect(ok({ redis_tls: {} }).redis_tls).toEqual({ reject_unauthorized: true })
  })

  it("does not warn about the new keys as unknown", () => {
    const r = decode({ redis_auth: { password_env: "P" }, redis_tls: {} })
    expect(Either.isRight(r) && r.right.warnings).toEqual([])
  })
})

describe("resolveRedisSecrets", () => {
  it("reads the password file, without its trailing newline", () => {
    const r = resolve({ redis_auth: { username: "dictator", password_file: "/pw" } }, sources({ "/pw": "s3cret pass\n" }))
    expect(r).toEqual(Either.right({ auth: { username: "dictator", password: "s3cret pass" } }))
    expect(resolve({ redis_auth: { password_file: "/pw" } }, sources({ "/pw": "a\r\n" }))).toEqual(Either.right({ auth: { password: "a" } }))
  })

  it("reads the password from the environment", () => {
    expect(resolve({ redis_auth: { password_env: "RP" } }, sources({}, { RP: "from-env" }))).toEqual(
      Either.right({ auth: { password: "from-env" } })
    )
  })

  it("a missing file, an empty file or an unset variable is a config error naming it and the fix", () => {
    const missing = resolveErr({ redis_auth: { password_file: "/nope" } }, sources({}))
    expect(missing.file).toBe(FILE)
    expect(missing.detail).toBe('key "redis_auth.password_file" = "/nope": cannot read the file (ENOENT); give a readable file')
    expect(resolveErr({ redis_auth: { password_file: "/pw" } }, sources({ "/pw": "\n" })).detail).toContain("the file is empty")
    expect(resolveErr({ redis_auth: { password_env: "RP" } }, sources({})).detail).toBe(
      'key "redis_auth.password_env" = "RP": the environment variable is unset or empty; export it before starting the dictator'
    )
    expect(resolveErr({ redis_auth: { password_env: "RP" } }, sources({}, { RP: "" })).detail).toContain("unset or empty")
  })

  it("reads the TLS files as PEM text and maps the keys to node:tls options", () => {
    const r = resolve(
      { redis_tls: { ca_file: "/ca", cert_file: "/c", key_file: "/k", server_name: "redis.internal", reject_unauthorized: false } },
      sources({ "/ca": PEM, "/c": PEM, "/k": PEM.replace(/CERTIFICATE/g, "PRIVATE KEY") })
    )
    expect(r).toEqual(
      Either.right({
        tls: {
          ca: PEM,
          cert: PEM,
          key: PEM.replace(/CERTIFICATE/g, "PRIVATE KEY"),
          servername: "redis.internal",
          rejectUnauthorized: false
        }
      })
    )
  })

  it("a missing or non-PEM TLS file is a config error naming the key", () => {
    expect(resolveErr({ redis_tls: { ca_file: "/ca" } }, sources({})).detail).toContain('key "redis_tls.ca_file" = "/ca": cannot read the file (ENOENT)')
    expect(resolveErr({ redis_tls: { ca_file: "/ca" } }, sources({ "/ca": "hello" })).detail).toContain("not a PEM file")
    expect(resolveErr({ redis_tls: { ca_file: "/ca" } }, sources({ "/ca": "x".repeat(2 * 1024 * 1024) })).detail).toContain("larger than 1 MiB")
  })
})
