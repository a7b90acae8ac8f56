/**
 * Issue 9, ZooKeeper: dictators with `zk_auth` (digest) on a real ZooKeeper (digest is built in:
 * no server setting needed).
 * - Every znode they create carries `creator all` + `world read` (read back with getACL), so a
 *   session without the credentials can read the master but cannot delete it, rewrite it, plant a
 *   member, or plant a master once the real one is gone: ZooKeeper itself answers NoAuth.
 * - A dictator with the wrong password logs the NoAuth line naming zk_auth and never becomes
 *   master, even when it is the only one left.
 * - `zk_chroot`: the service lives under the prefix, which the dictator creates with the ACLs.
 *
 * Run `npm run build` first.
 */
import { describe, expect, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import * as path from "node:path"
import { Effect, Fiber, Layer, Logger, Option, Redacted } from "effect"
import zookeeper from "node-zookeeper-client"
import {
  dictator,
  HarnessError,
  readMaster,
  redisServer,
  tempDir,
  waitUntil,
  writeFile,
  zkSession,
  zooKeeper
} from "../support/servers.js"
import * as ZooKeeperClient from "../../src/ZooKeeperClient.js"
import { ZooKeeper } from "../../src/ZooKeeper.js"

const USER = "dictator"
const PASSWORD = "zk-s3cret"

const codeOf = (e: unknown): number | undefined =>
  typeof e === "object" && e !== null && "getCode" in e && typeof e.getCode === "function" ? (e.getCode() as number) : undefined

/** Runs one request of a raw client: 0 on success, the ZooKeeper error code otherwise. */
const attempt = (run: (cb: (e: unknown) => void) => void): Effect.Effect<number> =>
  Effect.async<number>((resume) => run((e) => resume(Effect.succeed(e ? (codeOf(e) ?? -1) : 0)))).pipe(
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new HarnessError({ message: "ZooKeeper request took more than 10 s" }) }),
    Effect.orDie
  )

const aclOf = (client: zookeeper.Client, p: string) =>
  Effect.async<ReadonlyArray<string>, HarnessError>((resume) =>
    client.getACL(p, (e, acls) =>
      e
        ? resume(Effect.fail(new HarnessError({ message: `getACL ${p}: ${String(e)}` })))
        : resume(Effect.succeed(acls.map((a) => `${a.id.scheme}:${a.id.id}:${(a as unknown as { permission: number }).permission}`).sort()))
    )
  )

const exists = (client: zookeeper.Client, p: string) =>
  Effect.async<boolean>((resume) => client.exists(p, (e, stat) => resume(Effect.succeed(!e && !!stat))))

/** The digest id ZooKeeper gives `user:password`: user:base64(sha1(user:password)). */
const digestId = (user: string, password: string) => `${user}:${createHash("sha1").update(`${user}:${password}`).digest("base64")}`

const P = zookeeper.Permission
/**
 * As a session without ADMIN on the znode sees it: ZooKeeper ≥ 3.6 shows digest ids to others as
 * `user:x` (the hash is a secret too); older servers show the hash.
 */
const redacted = (acl: ReadonlyArray<string>) => acl.map((a) => a.replace(`digest:${digestId(USER, PASSWORD)}:`, `digest:${USER}:x:`))
const CREATOR_ALL_WORLD_READ = [`digest:${USER}:x:${P.ALL}`, `world:anyone:${P.READ}`].sort()

const credentials = (password: string) =>
  Effect.gen(function* () {
    const dir = yield* tempDir("zkauth")
    const file = path.join(dir, "zk.auth")
    yield* writeFile(file, `${USER}:${password}\n`)
    return file
  })

const E = zookeeper.Exception

describe("ZooKeeper digest auth and ACLs (real ZooKeeper)", () => {
  it.scopedLive(
    "a planted record is refused by ZooKeeper itself; a wrong password never becomes master",
    () =>
      Effect.gen(function* () {
        const svc = "it-zkauth"
        const zk = yield* zooKeeper({ tickTime: 2000 })
        const hosts = [zk.connectString]
        const good = yield* credentials(PASSWORD)
        const bad = yield* credentials("not-the-password")
        const base = `/services/redis/${svc}`
        const extra = (file: string) => ({ zk_auth: { scheme: "digest", credentials_file: file }, handover_timeout_ms: 1000 })
        const [ra, rb, rc] = [yield* redisServer(), yield* redisServer(), yield* redisServer()]
        const a = yield* dictator({ name: "a", svc, zkHosts: hosts, redisPort: ra.port, extra: extra(good), node: { priority: 1 }, readyTimeout: "60 seconds" })
        const b = yield* dictator({ name: "b", svc, zkHosts: hosts, redisPort: rb.port, extra: extra(good), node: { priority: 50 }, readyTimeout: "60 seconds" })
        const master = yield* waitUntil(
          "a master elected with zk_auth",
          Effect.map(readMaster(hosts, svc), Option.filter((m) => m.name === "a")),
          { timeout: "60 seconds" }
        ).pipe(Effect.tapError(() => Effect.logError(`a:\n${a.output()}\nb:\n${b.output()}`)))
        yield* waitUntil("both member records", Effect.map(Effect.scoped(Effect.flatMap(zkSession(hosts), (c) => Effect.all([exists(c, `${base}/members/a`), exists(c, `${base}/members/b`)]))), (x) => (x.every(Boolean) ? Option.some(x) : Option.none())), { timeout: "30 seconds" })

        // Every znode the dictators created carries creator-all + world-read.
        const outsider = yield* zkSession(hosts)
        for (const p of ["/services", "/services/redis", base, `${base}/master`, `${base}/epoch`, `${base}/members`, `${base}/members/a`, `${base}/members/b`]) {
          expect(redacted(yield* aclOf(outsider, p)), p).toEqual(CREATOR_ALL_WORLD_READ)
        }

        // A session without credentials reads the master, but cannot remove, rewrite or plant.
        expect(yield* attempt((cb) => outsider.remove(`${base}/master`, -1, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.setData(`${base}/master`, Buffer.from('{"name":"evil","host":"6.6.6.6","port":6379}'), -1, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.setData(`${base}/epoch`, Buffer.from("999"), -1, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.create(`${base}/members/evil`, Buffer.from("{}"), zookeeper.CreateMode.EPHEMERAL, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.remove(`${base}/members/b`, -1, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.transaction().remove(`${base}/master`, -1).commit((e) => cb(e)))).toBe(E.NO_AUTH)
        const still = yield* readMaster(hosts, svc)
        expect(Option.map(still, (m) => [m.name, m.czxid])).toEqual(Option.some(["a", master.czxid]))

        // A dictator with the wrong password: its writes are refused, it says why.
        const c = yield* dictator({ name: "c", svc, zkHosts: hosts, redisPort: rc.port, extra: extra(bad), node: { priority: 1 }, readyTimeout: "60 seconds" })
        yield* waitUntil(
          "c's NoAuth log line",
          Effect.sync(() => (/NoAuth[^\n]*zk_auth/.test(c.output()) ? Option.some(true) : Option.none())),
          { timeout: "30 seconds" }
        ).pipe(Effect.tapError(() => Effect.logError(`c:\n${c.output()}`)))
        expect(yield* exists(outsider, `${base}/members/c`)).toBe(false)

        // The good ones leave (SIGTERM: a hands over to b, b releases): c is the only dictator left.
        yield* a.stop
        yield* b.stop
        yield* waitUntil("the master znode gone", Effect.map(readMaster(hosts, svc), (m) => (Option.isNone(m) ? Option.some(true) : Option.none())), {
          timeout: "30 seconds"
        })
        // Nobody without the credentials can plant a master now either.
        const fake = Buffer.from(JSON.stringify({ name: "evil", host: "127.0.0.1", port: rc.port }))
        expect(yield* attempt((cb) => outsider.create(`${base}/master`, fake, zookeeper.CreateMode.EPHEMERAL, cb))).toBe(E.NO_AUTH)
        // c, healthy and alone, tries for a while (several election rounds) and never wins.
        for (let i = 0; i < 20; i++) {
          expect(Option.isNone(yield* readMaster(hosts, svc)), `round ${i}`).toBe(true)
          yield* Effect.sleep("250 millis")
        }
        expect(yield* c.running).toBe(true)
        // One line per reason, not per tick: the member record's failure is logged once.
        const lines = c.output().split("\n").filter((l) => l.includes("cannot publish member record"))
        expect(lines.length).toBeLessThanOrEqual(2)
        // Nor per election attempt: c tries every few ms, refused with the same NoAuth each time.
        const attempts = c.output().split("\n").filter((l) => l.includes("election attempt failed"))
        expect(attempts.length).toBeLessThanOrEqual(2)
        expect(c.output()).not.toContain("member record published again")
      }),
    240_000
  )

  it.scopedLive(
    "zk_chroot: the service lives under the prefix, created with the ACLs; nothing at the root",
    () =>
      Effect.gen(function* () {
        const svc = "it-chroot"
        const zk = yield* zooKeeper({ tickTime: 2000 })
        const hosts = [zk.connectString]
        const good = yield* credentials(PASSWORD)
        const tokenFile = path.join(yield* tempDir("token"), "http.token")
        yield* writeFile(tokenFile, "a-token-of-32-characters-or-so-1\n")
        const r = yield* redisServer()
        const a = yield* dictator({
          name: "a",
          svc,
          zkHosts: hosts,
          redisPort: r.port,
          // The built daemon's HTTP guard, wired from the config: the token is demanded even on loopback.
          extra: { zk_auth: { credentials_file: good }, zk_chroot: "/teams/payments", http_token_file: tokenFile },
          readyTimeout: "60 seconds"
        })
        const outsider = yield* zkSession(hosts)
        const base = `/teams/payments/services/redis/${svc}`
        yield* waitUntil(
          "a master under the chroot",
          Effect.map(exists(outsider, `${base}/master`), (x) => (x ? Option.some(x) : Option.none())),
          { timeout: "60 seconds" }
        ).pipe(Effect.tapError(() => Effect.logError(`a:\n${a.output()}`)))
        // The dictator sees its own master through the chroot (its watches work there).
        yield* waitUntil(
          "a's /status to name itself master",
          Effect.map(a.status, (s) => {
            const st = s as { role: string; master: { state: string; name?: string } }
            return st.role === "master" && st.master.state === "elected" && st.master.name === "a" ? Option.some(st) : Option.none()
          }),
          { timeout: "30 seconds" }
        ).pipe(Effect.tapError(() => Effect.logError(`a:\n${a.output()}`)))
        expect(yield* exists(outsider, "/services")).toBe(false)
        expect(Option.isNone(yield* readMaster(hosts, svc))).toBe(true)
        for (const p of ["/teams/payments", "/teams/payments/services", base, `${base}/master`, `${base}/members/a`]) {
          expect(redacted(yield* aclOf(outsider, p)), p).toEqual(CREATOR_ALL_WORLD_READ)
        }
        const refused = yield* a.http("/disable", "POST")
        expect(refused.status).toBe(401)
        expect(refused.body).toContain("Authorization: Bearer <token>")
        expect((yield* a.http("/disable")).status).toBe(405)
        expect(yield* a.status).toMatchObject({ enabled: true, role: "master" })
        // Above the chroot, other teams may create their own prefix, but not touch ours.
        expect(redacted(yield* aclOf(outsider, "/teams"))).toEqual([`digest:${USER}:x:${P.ALL}`, `world:anyone:${P.READ | P.CREATE}`].sort())
        expect(yield* attempt((cb) => outsider.create("/teams/other", Buffer.alloc(0), zookeeper.CreateMode.PERSISTENT, cb))).toBe(0)
        expect(yield* attempt((cb) => outsider.remove(`${base}/master`, -1, cb))).toBe(E.NO_AUTH)
        expect(yield* attempt((cb) => outsider.create("/teams/payments/x", Buffer.alloc(0), zookeeper.CreateMode.PERSISTENT, cb))).toBe(E.NO_AUTH)
      }),
    180_000
  )

  it.scopedLive(
    "a server that refuses the credentials (AUTH_FAILED): one clear line per attempt, retried with backoff, no crash",
    () =>
      Effect.gen(function* () {
        const zk = yield* zooKeeper({ tickTime: 2000 })
        const lines: Array<string> = []
        const logger = Logger.make(({ message }) => void lines.push(String(Array.isArray(message) ? message.join(" ") : message)))
        // The server knows no scheme "nosuch": it answers the auth packet with AUTH_FAILED.
        const layer = ZooKeeperClient.layer({
          hosts: [zk.connectString],
          sessionTimeout: "4 seconds",
          connectTimeout: "2 seconds",
          requestTimeout: "4 seconds",
          auth: { scheme: "nosuch", user: "u", auth: Redacted.make("u:p") }
        })
        const building = yield* Effect.fork(
          Effect.scoped(Layer.build(layer).pipe(Effect.flatMap((ctx) => Effect.succeed(ctx.unsafeMap.has(ZooKeeper.key)))))
        ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
        yield* waitUntil(
          "two AUTH_FAILED lines",
          Effect.sync(() => {
            const refused = lines.filter((l) => l.includes("AUTH_FAILED"))
            return refused.length >= 2 ? Option.some(refused) : Option.none()
          }),
          { timeout: "30 seconds", interval: "100 millis" }
        ).pipe(Effect.tapError(() => Effect.logError(lines.join("\n"))))
        const refused = lines.filter((l) => l.includes("AUTH_FAILED"))
        expect(refused[0]).toContain(`ZooKeeper ${zk.connectString} refused the credentials of zk_auth (scheme nosuch, user "u")`)
        expect(refused[0]).toContain("fix zk_auth")
        expect(refused[0]).toContain("retrying with backoff")
        expect(refused.join("\n")).not.toContain("u:p")
        // Still trying, never built, never crashed.
        expect(building.unsafePoll()).toBeNull()
        yield* Fiber.interrupt(building)
      }),
    60_000
  )
})
