/**
 * Issue 9 end to end: three redis-servers that demand credentials or TLS, three built dictators
 * configured with `redis_auth` / `redis_tls`, one real ZooKeeper. Each trio: a master is elected,
 * the replicas replicate (link up, authenticated with the masterauth / masteruser the dictators
 * set), and kill -9 of the master's Redis fails over. The ACL trio runs with exactly the least
 * ACL README.md documents. A password rotated on the master's Redis under the dictators' feet
 * makes them log one clear line each and fail nothing over.
 *
 * Run `npm run build` first.
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, type Scope } from "effect"
import {
  type DictatorProcess,
  dictator,
  HarnessError,
  type RedisAccess,
  readMaster,
  redisCommand,
  redisServer,
  type RedisServer,
  repoRoot,
  tempDir,
  waitUntil,
  writeFile,
  zooKeeper
} from "../support/servers.js"
import { LEAST_ACL } from "../support/acl.js"
import { makeCerts, tlsServerLines } from "../support/tls.js"

const PASSWORD = "trio-s3cret"
const NAMES = ["redis1", "redis2", "redis3"] as const
/** A replica that (re)connects gets its full sync at once instead of after Redis's 5 s default. */
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]


interface Security {
  /** redis.conf lines of every server. */
  readonly configLines: ReadonlyArray<string>
  readonly tlsOnly?: boolean
  /** How the test itself reaches the servers. */
  readonly access: RedisAccess
  /** `redis_auth` / `redis_tls` keys of every dictator. */
  readonly dictatorConfig: Record<string, unknown>
  readonly env?: Record<string, string>
}

interface Node {
  readonly name: string
  readonly redis: RedisServer
  readonly dictator: DictatorProcess
}

interface Trio {
  readonly svc: string
  readonly zkHosts: ReadonlyArray<string>
  readonly nodes: ReadonlyArray<Node>
  readonly sec: Security
}

const fail = (message: string) => Effect.fail(new HarnessError({ message }))

const info = (t: Trio, port: number) =>
  redisCommand(port, ["INFO", "replication"], "127.0.0.1", t.sec.access).pipe(
    Effect.map((text) => {
      const out: Record<string, string> = {}
      for (const line of text.split(/\r?\n/)) {
        const i = line.indexOf(":")
        if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1)
      }
      return out
    })
  )

const startTrio = (svc: string, sec: Security): Effect.Effect<Trio, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const zk = yield* zooKeeper({ tickTime: 2000 })
    const zkHosts = [zk.connectString]
    const redis = yield* Effect.forEach(NAMES, () =>
      redisServer({ configLines: sec.configLines, args: REDIS_ARGS, access: sec.access, ...(sec.tlsOnly === true ? { tlsOnly: true } : {}) })
    )
    for (const [k, v] of Object.entries(sec.env ?? {})) process.env[k] = v
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) => dictator({ name, svc, zkHosts, redisPort: redis[i]!.port, extra: sec.dictatorConfig, readyTimeout: "60 seconds" }),
      // One at a time, with a longer readiness bound: three Node processes loading at once on a
      // busy 2-core machine can each take more than the harness's default 20 s.
      { concurrency: 1 }
    )
    // Registered last, so it runs first at teardown: no chain of graceful handovers.
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    return { svc, zkHosts, sec, nodes: NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! })) }
  })

/** One master (znode and Redis agree) and every other live Redis replicating from it with the link up. */
const converged = (t: Trio, live: ReadonlyArray<Node> = t.nodes) =>
  waitUntil(
    `one master and ${live.length - 1} linked replicas (${t.svc})`,
    Effect.gen(function* () {
      const m = yield* readMaster(t.zkHosts, t.svc)
      if (Option.isNone(m)) return yield* fail("no master znode")
      const master = live.find((n) => n.name === m.value.name)
      if (master === undefined) return yield* fail(`master znode names ${m.value.name}, not a live node`)
      if (m.value.port !== master.redis.port) return yield* fail(`master znode has port ${m.value.port}`)
      const mi = yield* info(t, master.redis.port)
      if (mi.role !== "master") return yield* fail(`${master.name}'s Redis is ${mi.role}`)
      for (const r of live.filter((n) => n !== master)) {
        const ri = yield* info(t, r.redis.port)
        if (ri.role !== "slave" || ri.master_port !== String(master.redis.port)) {
          return yield* fail(`${r.name}'s Redis is ${ri.role} of ${ri.master_port}`)
        }
        if (ri.master_link_status !== "up") return yield* fail(`${r.name}'s link is ${ri.master_link_status}`)
      }
      return Option.some({ master, czxid: m.value.czxid })
    }),
    { timeout: "90 seconds", interval: "250 millis" }
  )

/** Elects, replicates, then fails over when the master's Redis is killed with -9. */
const electAndFailOver = (t: Trio) =>
  Effect.gen(function* () {
    const first = yield* converged(t)
    // The data written to the master reaches the replicas through the authenticated link.
    yield* redisCommand(first.master.redis.port, ["SET", "secured", t.svc], "127.0.0.1", t.sec.access)
    for (const r of t.nodes.filter((n) => n !== first.master)) {
      yield* waitUntil(
        `${r.name} to have the key`,
        Effect.map(redisCommand(r.redis.port, ["GET", "secured"], "127.0.0.1", t.sec.access), (v) =>
          v === t.svc ? Option.some(v) : Option.none()
        ),
        { timeout: "20 seconds" }
      )
    }
    const live = t.nodes.filter((n) => n !== first.master)
    const marks = live.map((n) => n.dictator.output().length)
    yield* first.master.redis.kill9
    const second = yield* converged(t, live)
    expect(second.master.name).not.toBe(first.master.name)
    expect(second.czxid).not.toBe(first.czxid)
    // After its role change each live dictator closes its Redis's application connections
    // (kill_clients_on_role_change, a check interval later): the test's own commands that follow
    // must not be among them.
    for (const [i, n] of live.entries()) {
      yield* waitUntil(
        `${n.name}'s dictator to be done with its clients after the failover`,
        Effect.sync(() =>
          /after its change to (master|replica)|not closing client connections|cannot close the local Redis's client connections/.test(
            n.dictator.output().slice(marks[i])
          )
            ? Option.some(true)
            : Option.none()
        ),
        { timeout: "20 seconds" }
      )
    }
    return { first, second }
  })

const passwordFile = Effect.gen(function* () {
  const dir = yield* tempDir("secret")
  const file = path.join(dir, "redis-password")
  yield* writeFile(file, `${PASSWORD}\n`)
  return file
})

describe("secured Redis trios", () => {
  it.scopedLive("requirepass (password from a file): elects, replicates with masterauth set by the dictators, fails over on kill -9", () =>
    Effect.gen(function* () {
      const file = yield* passwordFile
      const t = yield* startTrio("sec-pass", {
        configLines: [`requirepass ${PASSWORD}`],
        access: { password: PASSWORD },
        dictatorConfig: { redis_auth: { password_file: file } }
      })
      const { second } = yield* electAndFailOver(t)
      for (const n of t.nodes.filter((x) => x !== second.master && x.redis !== undefined)) {
        if (!(yield* n.redis.running)) continue
        expect(yield* redisCommand(n.redis.port, ["CONFIG", "GET", "masterauth"], "127.0.0.1", t.sec.access)).toBe(`masterauth\n${PASSWORD}`)
      }
    })
  )

  it.scopedLive("an ACL user with exactly the least ACL (password from the environment): elects, replicates, fails over", () =>
    Effect.gen(function* () {
      const t = yield* startTrio("sec-acl", {
        // The dictators' user has exactly the least ACL; the test's own checks (INFO, SET, GET)
        // go through a user of their own.
        configLines: [`user dictator on >${PASSWORD} ${LEAST_ACL}`, `user tester on >${PASSWORD} +@all ~*`, "user default off"],
        access: { username: "tester", password: PASSWORD },
        dictatorConfig: { redis_auth: { username: "dictator", password_env: "DICTATOR_TEST_REDIS_PASSWORD" } },
        env: { DICTATOR_TEST_REDIS_PASSWORD: PASSWORD }
      })
      yield* electAndFailOver(t)
      for (const n of t.nodes) {
        // Every command the dictators sent was allowed, and they did send them as that user.
        expect(n.dictator.output()).not.toContain("lacks a permission")
        if (yield* n.redis.running) {
          const acl = yield* redisCommand(n.redis.port, ["ACL", "GETUSER", "dictator"], "127.0.0.1", t.sec.access)
          expect(acl).toContain(LEAST_ACL.split(" ")[0]!.slice(1))
        }
      }
      // The replicas authenticate to their master as the dictators' user.
      for (const n of t.nodes) {
        if (!(yield* n.redis.running)) continue
        const role = yield* info(t, n.redis.port)
        if (role.role === "slave") {
          expect(yield* redisCommand(n.redis.port, ["CONFIG", "GET", "masteruser"], "127.0.0.1", t.sec.access)).toBe("masteruser\ndictator")
        }
      }
    })
  )

  it.scopedLive("TLS only (openssl-made CA, server and client certificates, tls-replication): elects, replicates, fails over", () =>
    Effect.gen(function* () {
      const certs = yield* makeCerts
      const t = yield* startTrio("sec-tls", {
        configLines: tlsServerLines(certs),
        tlsOnly: true,
        access: { tls: { ca: certs.pem(certs.caCert), cert: certs.pem(certs.clientCert), key: certs.pem(certs.clientKey) } },
        dictatorConfig: {
          redis_tls: { ca_file: certs.caCert, cert_file: certs.clientCert, key_file: certs.clientKey, server_name: "localhost" }
        }
      })
      yield* electAndFailOver(t)
    })
  )

  it.scopedLive("a password rotated on the master's Redis: each dictator logs one clear line, nothing fails over, the master stays", () =>
    Effect.gen(function* () {
      const file = yield* passwordFile
      const t = yield* startTrio("sec-wrong", {
        configLines: [`requirepass ${PASSWORD}`],
        access: { password: PASSWORD },
        dictatorConfig: { redis_auth: { password_file: file } }
      })
      const first = yield* converged(t)
      const port = first.master.redis.port
      // The dictators' connections are authenticated already: change the password, then drop them
      // (normal clients only: the replicas' links stay, as they would in production).
      const before = new Map(t.nodes.map((n) => [n.name, n.dictator.output().length] as const))
      yield* redisCommand(port, ["CONFIG", "SET", "requirepass", "rotated-elsewhere"], "127.0.0.1", t.sec.access)
      const rotated = { password: "rotated-elsewhere" }
      yield* redisCommand(port, ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"], "127.0.0.1", rotated)
      const address = `127.0.0.1:${port}`
      yield* waitUntil(
        "every dictator to log the rejected credentials",
        Effect.sync(() =>
          t.nodes.every((n) => n.dictator.output().includes(`Redis ${address}: the dictator's credentials are rejected`))
            ? Option.some(true)
            : Option.none()
        ),
        { timeout: "30 seconds", interval: "200 millis" }
      )
      // Well past down_after_ms (1 s) and an election or two.
      yield* Effect.sleep("6 seconds")
      const m = yield* readMaster(t.zkHosts, t.svc)
      expect(Option.map(m, (x) => [x.name, x.czxid])).toEqual(Option.some([first.master.name, first.czxid]))
      for (const n of t.nodes) {
        const out = n.dictator.output().slice(before.get(n.name) ?? 0)
        // The Redis layer's line (the controller may also quote the error of an action it retries).
        const lines = out.split("\n").filter((l) => l.includes("level=ERROR") && l.includes(`Redis ${address}: the dictator's credentials are rejected`))
        expect(lines, `${n.name}:\n${out}`).toHaveLength(1)
        expect(lines[0]).toContain("fix redis_auth")
        expect(out).not.toContain("voting it down")
        expect(out).not.toContain("promoting")
      }
      for (const r of t.nodes.filter((n) => n !== first.master)) {
        const ri = yield* info(t, r.redis.port)
        expect([ri.role, ri.master_port, ri.master_link_status]).toEqual(["slave", String(port), "up"])
      }
      // The password back: the dictators get in again by themselves and nothing changed.
      yield* redisCommand(port, ["CONFIG", "SET", "requirepass", PASSWORD], "127.0.0.1", rotated)
      yield* waitUntil(
        "every dictator to get in again",
        Effect.sync(() =>
          t.nodes.every((n) => n.dictator.output().includes(`Redis ${address}: the dictator's access works again`))
            ? Option.some(true)
            : Option.none()
        ),
        { timeout: "30 seconds", interval: "200 millis" }
      )
      const again = yield* converged(t)
      expect([again.master.name, again.czxid]).toEqual([first.master.name, first.czxid])
    })
  )
})

/** Runs the built binary to completion (≤ 30 s, then SIGKILL). */
const runBin = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.async<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resume) => {
    const childEnv: Record<string, string | undefined> = { ...process.env, ...env }
    delete childEnv.NODE_OPTIONS
    delete childEnv.DICTATOR_TEST_UNSET
    const main = process.env.DICTATOR_MAIN ?? path.join(repoRoot(), "dist", "src", "main.js")
    const child = spawn(process.execPath, [main, ...args], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

describe("the binary with redis_auth / redis_tls it cannot use", () => {
  const cases: ReadonlyArray<{ readonly what: string; readonly config: (dir: string) => Record<string, unknown>; readonly says: ReadonlyArray<string> }> = [
    {
      what: "an inline password",
      config: () => ({ redis_auth: { password: "hunter2" } }),
      says: ['"redis_auth.password"', "password_file", "password_env"]
    },
    {
      what: "a missing password file",
      config: (dir) => ({ redis_auth: { password_file: path.join(dir, "nope") } }),
      says: ['"redis_auth.password_file"', "cannot read the file (ENOENT)"]
    },
    {
      what: "an unset password variable",
      config: () => ({ redis_auth: { username: "dictator", password_env: "DICTATOR_TEST_UNSET" } }),
      says: ['"redis_auth.password_env" = "DICTATOR_TEST_UNSET"', "unset or empty"]
    },
    {
      what: "a CA file that is not PEM",
      config: (dir) => ({ redis_tls: { ca_file: path.join(dir, "dictator.conf") } }),
      says: ['"redis_tls.ca_file"', "not a PEM file"]
    }
  ]
  for (const c of cases) {
    it.scopedLive(`${c.what}: one line naming the key, exit 2`, () =>
      Effect.gen(function* () {
        const dir = yield* tempDir("bin")
        const file = path.join(dir, "dictator.conf")
        yield* writeFile(file, JSON.stringify({ svc_name: "s", zk_hosts: ["127.0.0.1"], ...c.config(dir) }))
        const r = yield* runBin([`--config=${file}`])
        expect(r.code, r.stderr).toBe(2)
        expect(r.stdout).toBe("")
        const lines = r.stderr.split("\n").filter((l) => l.trim() !== "")
        expect(lines, r.stderr).toHaveLength(1)
        expect(lines[0]).toContain(file)
        for (const s of c.says) expect(lines[0]).toContain(s)
        expect(r.stderr).not.toMatch(/^\s*at /m)
      })
    )
  }
})
