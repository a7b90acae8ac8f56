/**
 * Issue 10, load-balancer checks: HAProxy (Debian's `haproxy`, installed by test/run.sh) in front
 * of three real redis-servers, sending writes to whichever server's dictator answers 200 on
 * GET /master — the README's example config. Writes through HAProxy work; after the master's
 * Redis is killed, they work again within a bound, on the new master.
 */
import { spawn, spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import {
  type DictatorProcess,
  dictator,
  freePort,
  HarnessError,
  httpRequest,
  oneShotRedis,
  readMaster,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeper
} from "../support/servers.js"

// Debian installs it in /usr/sbin, which a non-root PATH may lack.
const HAPROXY = process.env.HAPROXY ?? (existsSync("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : "haproxy")
const SVC = "it-haproxy"
/** From the kill to the first write acknowledged through HAProxy: failover (~0.1-1.5 s) plus HAProxy's check interval (500 ms), with room for a loaded 2-core machine. */
const BOUND_MS = 15_000

/**
 * The README's HAProxy block itself (the fenced block after "### HAProxy in front of the
 * dictators"), with this test's listen port and servers in place of its `bind` and `server` lines:
 * what README shows is what runs here.
 */
const haproxyConfig = (listen: number, servers: ReadonlyArray<{ name: string; redisPort: number; httpPort: number }>) => {
  const readme = readFileSync(path.join(repoRoot(), "README.md"), "utf8")
  const section = readme.indexOf("### HAProxy in front of the dictators")
  const block = /```\n([\s\S]*?)```/.exec(readme.slice(section))
  if (section < 0 || block === null) throw new Error("README.md has no HAProxy block under '### HAProxy in front of the dictators'")
  const lines = block[1]!.split("\n")
  if (!lines.some((l) => /^\s+bind /.test(l)) || !lines.some((l) => /^\s+server /.test(l))) {
    throw new Error(`README's HAProxy block has no bind or server line:\n${block[1]}`)
  }
  const out: Array<string> = []
  for (const line of lines) {
    if (/^\s+bind /.test(line)) out.push(`  bind 127.0.0.1:${listen}`)
    else if (/^\s+server /.test(line)) {
      if (!out.some((l) => l.startsWith("  server "))) {
        out.push(...servers.map((s) => `  server ${s.name} 127.0.0.1:${s.redisPort} check port ${s.httpPort}`))
      }
    } else out.push(line)
  }
  return out.join("\n")
}

/** HAProxy in the foreground (-db), stopped with the scope. */
const haproxy = (config: string) =>
  Effect.gen(function* () {
    const dir = yield* Effect.acquireRelease(
      Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "dictator-haproxy-"))),
      (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true }))
    )
    const file = path.join(dir, "haproxy.cfg")
    yield* Effect.promise(() => fs.writeFile(file, config))
    const check = spawnSync(HAPROXY, ["-c", "-f", file], { encoding: "utf8" })
    if (check.error !== undefined) {
      return yield* Effect.fail(
        new HarnessError({ message: `cannot run ${HAPROXY} (${check.error.message}); install it: bash test/run.sh --setup-only (Debian: apt-get install haproxy)` })
      )
    }
    if (check.status !== 0) return yield* Effect.fail(new HarnessError({ message: `haproxy -c rejects the config:\n${check.stdout}${check.stderr}` }))
    let output = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const c = spawn(HAPROXY, ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] })
        c.stdout.setEncoding("utf8").on("data", (d: string) => (output = (output + d).slice(-20000)))
        c.stderr.setEncoding("utf8").on("data", (d: string) => (output = (output + d).slice(-20000)))
        return c
      }),
      (c) =>
        Effect.async<void>((resume) => {
          if (c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
          const timer = setTimeout(() => c.kill("SIGKILL"), 5000)
          c.once("exit", () => {
            clearTimeout(timer)
            resume(Effect.void)
          })
          c.kill("SIGTERM")
        })
    )
    return { child, output: () => output }
  })

/** One SET through `port` on a fresh connection: "OK" or the error's text. */
const writeThrough = (port: number, key: string, value: string): Effect.Effect<string> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const c = oneShotRedis({ host: "127.0.0.1", port }, { connectTimeoutMs: 1000, commandTimeoutMs: 1000 })
      c.on("error", () => {})
      return c
    }),
    (c) =>
      Effect.promise(async () => {
        try {
          await c.connect()
          return String(await c.set(key, value))
        } catch (e) {
          return e instanceof Error ? e.message : String(e)
        }
      }),
    (c) => Effect.sync(() => c.disconnect())
  )

const masterChecks = (ds: ReadonlyArray<DictatorProcess>) =>
  Effect.forEach(ds, (d) => httpRequest(d.httpPort, "/master").pipe(Effect.map((r) => r.status), Effect.orElseSucceed(() => 0)))

describe("HAProxy routes writes by GET /master", () => {
  it("README's block is a complete config: timeouts, the /master check, one server line per dictator", () => {
    const cfg = haproxyConfig(6380, [{ name: "x", redisPort: 1, httpPort: 2 }])
    for (const line of ["option httpchk GET /master", "http-check expect status 200", "timeout check", "bind 127.0.0.1:6380"]) {
      expect(cfg).toContain(line)
    }
    expect(cfg.match(/^\s+server /gm)).toHaveLength(1)
    expect(cfg).toContain("server x 127.0.0.1:1 check port 2")
  })

  it.scopedLive("writes through HAProxy reach the master, and again after the master's Redis is killed", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const hosts = [zk.connectString]
      const names = ["redis1", "redis2", "redis3"]
      const redises = yield* Effect.forEach(names, () => redisServer())
      const dictators = yield* Effect.forEach(redises, (r, i) => dictator({ name: names[i]!, svc: SVC, zkHosts: hosts, redisPort: r.port }))
      const first = yield* waitUntil("a master", readMaster(hosts, SVC), { timeout: "60 seconds" })
      const masterIndex = names.indexOf(first.name)

      // Exactly the master's dictator answers 200 on /master, once its replicas are linked.
      const statuses = yield* waitUntil(
        "one 200 on /master, from the master's dictator",
        Effect.map(masterChecks(dictators), (s) => (s.filter((x) => x === 200).length === 1 && s[masterIndex] === 200 ? Option.some(s) : Option.none())),
        { timeout: "30 seconds" }
      )
      expect(statuses.filter((s) => s === 503)).toHaveLength(2)

      const listen = yield* freePort
      const proxy = yield* haproxy(
        haproxyConfig(listen, dictators.map((d, i) => ({ name: d.name, redisPort: redises[i]!.port, httpPort: d.httpPort })))
      )
      yield* waitUntil(
        "a write through HAProxy",
        Effect.map(writeThrough(listen, "lb:before", "1"), (r) => (r === "OK" ? Option.some(r) : Option.none())),
        { timeout: "20 seconds", interval: "100 millis" }
      ).pipe(Effect.mapError((e) => new HarnessError({ message: `${e.message}\nhaproxy output:\n${proxy.output()}` })))
      expect(yield* redises[masterIndex]!.cli("GET", "lb:before")).toBe("1")

      // Fault: the master's Redis dies.
      const killedAt = Date.now()
      yield* redises[masterIndex]!.kill9
      let attempts = 0
      let lastError = ""
      const ackedAt = yield* waitUntil(
        "a write through HAProxy after the master's Redis was killed",
        Effect.map(writeThrough(listen, "lb:after", String(killedAt)), (r) => {
          attempts++
          if (r === "OK") return Option.some(Date.now())
          lastError = r
          return Option.none()
        }),
        { timeout: `${BOUND_MS} millis`, interval: "20 millis" }
      ).pipe(Effect.mapError((e) => new HarnessError({ message: `${e.message} (last error: ${lastError})\nhaproxy output:\n${proxy.output()}` })))
      const tookMs = ackedAt - killedAt

      const second = yield* waitUntil(
        "the new master znode",
        Effect.map(readMaster(hosts, SVC), Option.filter((m) => m.name !== first.name))
      )
      const newIndex = names.indexOf(second.name)
      // The acknowledged write is on the new master: HAProxy sent it there, not to a replica.
      expect(yield* redises[newIndex]!.cli("GET", "lb:after")).toBe(String(killedAt))
      console.log(
        `[haproxy] master ${first.name} killed; first write acknowledged through HAProxy after ${tookMs} ms (${attempts} attempts), new master ${second.name}`
      )
      expect(tookMs).toBeLessThan(BOUND_MS)
    })
  )
})
