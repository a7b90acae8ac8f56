/**
 * Issue 10, end to end: real ZooKeeper, real redis-servers, the built dictator (`npm run build`
 * first) with its Sentinel-compatible endpoint, and unmodified Redis clients pointed ONLY at the
 * dictators' sentinel ports: ioredis (`sentinels: [...]`, failoverDetector off and on) and
 * node-redis `createSentinel`. They connect and write; the master's redis-server is killed -9;
 * each must reach the new master by itself, and every write acknowledged after the kill must be
 * on the new master (nothing acknowledged by a demoted node).
 *
 * Times from the kill to each client's first successful write are printed (not asserted past a
 * generous bound: the machine is shared).
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { Redis as IORedis } from "ioredis"
import { createSentinel } from "redis"
import * as Redis from "../../src/Redis.js"
import {
  type DictatorProcess,
  dictator,
  freePort,
  HarnessError,
  oneShotRedis,
  readMaster,
  type RedisServer,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeper
} from "../support/servers.js"

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e))
const fail = (message: string) => Effect.fail(new HarnessError({ message }))

/** One command to a sentinel endpoint over a fresh connection (≤ 2 s). */
const sentinelCall = (port: number, ...args: ReadonlyArray<string>): Effect.Effect<unknown, HarnessError> =>
  Effect.acquireUseRelease(
    Effect.sync(() => oneShotRedis({ host: "127.0.0.1", port }, { connectTimeoutMs: 1000, commandTimeoutMs: 2000 })),
    (c) =>
      Effect.tryPromise({
        try: async () => {
          c.on("error", () => {})
          await c.connect()
          return (await c.call(args[0]!, ...args.slice(1))) as unknown
        },
        catch: (e) => new HarnessError({ message: `sentinel :${port} ${args.join(" ")}: ${errorText(e)}` })
      }),
    (c) => Effect.sync(() => c.disconnect())
  )

const info = (server: RedisServer) =>
  Effect.map(server.cli("INFO", "replication"), (text) => {
    const out: Record<string, string> = {}
    for (const line of text.split(/\r?\n/)) {
      const i = line.indexOf(":")
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1)
    }
    return out
  })

interface SNode {
  readonly name: string
  readonly redis: RedisServer
  readonly dictator: DictatorProcess
  readonly sentinelPort: number
}

const SVC = "sentinel-it"

const topology = Effect.gen(function* () {
  const zk = yield* zooKeeper()
  const zkHosts = [zk.connectString]
  const names = ["s1", "s2", "s3"] as const
  const redis = yield* Effect.forEach(names, () => redisServer({ args: ["--repl-diskless-sync-delay", "0"] }))
  const ports = yield* Effect.forEach(names, () => freePort)
  const dictators = yield* Effect.forEach(
    names,
    (name, i) => dictator({ name, svc: SVC, zkHosts, redisPort: redis[i]!.port, extra: { sentinel_port: ports[i]! } }),
    // One at a time: on a loaded machine, three Node.js processes starting together can each
    // take longer than the harness's 20 s readiness bound.
    { concurrency: 1 }
  )
  yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
  const nodes: ReadonlyArray<SNode> = names.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]!, sentinelPort: ports[i]! }))
  return { zkHosts, nodes }
})

/** Every endpoint hands out the same master, whose Redis is master with `replicas` linked replicas. */
const converged = (nodes: ReadonlyArray<SNode>, replicas: number) =>
  Effect.gen(function* () {
    const answers = yield* Effect.forEach(nodes, (n) => sentinelCall(n.sentinelPort, "SENTINEL", "get-master-addr-by-name", SVC))
    const first = JSON.stringify(answers[0])
    if (!Array.isArray(answers[0]) || answers.some((a) => JSON.stringify(a) !== first)) {
      return yield* fail(`endpoints disagree or have no master: ${JSON.stringify(answers)}`)
    }
    const port = Number((answers[0] as ReadonlyArray<string>)[1])
    const master = nodes.find((n) => n.redis.port === port)
    if (master === undefined) return yield* fail(`handed-out port ${port} is no node's`)
    const i = yield* info(master.redis)
    if (i["role"] !== "master" || Number(i["connected_slaves"]) < replicas) {
      return yield* fail(`master ${master.name}: role ${i["role"]}, ${i["connected_slaves"]} replicas`)
    }
    return master
  })

/** waitUntil for a probe that fails until it holds. */
const until = <A, R>(what: string, probe: Effect.Effect<A, HarnessError, R>, timeout: string, interval = "100 millis") =>
  waitUntil(what, Effect.map(probe, Option.some), { timeout: timeout as `${number} seconds`, interval: interval as `${number} millis` })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A writer: SETs keys `<label>:<n>` one after the other until stopped; records each key whose
 * write was acknowledged after `killedAt`, and the time of the first such acknowledgement.
 */
const writer = (label: string, set: (key: string, value: string) => Promise<unknown>) => {
  let stop = false
  let n = 0
  const acked: Array<string> = []
  const state = { killedAt: 0, firstAfterKill: null as number | null, errors: 0, acked, lastError: "" }
  const done = (async () => {
    while (!stop) {
      const key = `${label}:${n++}`
      const started = Date.now()
      try {
        await Promise.race([set(key, String(started)), sleep(1500).then(() => Promise.reject(new Error("no answer within 1500 ms")))])
        if (state.killedAt > 0 && started >= state.killedAt) {
          acked.push(key)
          if (state.firstAfterKill === null) state.firstAfterKill = Date.now()
        }
        await sleep(20)
      } catch (e) {
        state.errors++
        state.lastError = errorText(e)
        await sleep(20)
      }
    }
  })()
  return {
    state,
    stop: async () => {
      stop = true
      await done
    }
  }
}

describe("Sentinel-compatible endpoint with real clients", () => {
  it.scopedLive("killClients closes a real redis-server's normal and pub/sub clients, not its own connection", () =>
    Effect.gen(function* () {
      const server = yield* redisServer()
      const clients = [0, 1, 2].map(() => oneShotRedis({ host: "127.0.0.1", port: server.port }, { connectTimeoutMs: 2000 }))
      yield* Effect.addFinalizer(() => Effect.sync(() => clients.forEach((c) => c.disconnect())))
      const closed = clients.map((c) => {
        c.on("error", () => {})
        return new Promise<void>((resolve) => c.once("close", () => resolve()))
      })
      yield* Effect.promise(async () => {
        await Promise.all(clients.map((c) => c.connect()))
        await clients[2]!.subscribe("+switch-master")
      })
      const conn = yield* Effect.flatMap(Redis.Redis, (r) => r.connect({ host: "127.0.0.1", port: server.port }, "2 seconds")).pipe(
        Effect.provide(Redis.layer)
      )
      expect(yield* conn.killClients).toBe(3)
      yield* Effect.promise(() => Promise.all(closed)).pipe(Effect.timeout("5 seconds"))
      // Its own connection survived.
      yield* conn.ping
      expect(yield* conn.killClients).toBe(0)
    }))

  it.scopedLive("sentinel_password_file: AUTH with the file's password; an unreadable file is exit 2 with one message", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "dictator-sentinel-"))),
        (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true }))
      )
      const missing = path.join(dir, "nope")
      const configPath = path.join(dir, "bad.conf")
      yield* Effect.promise(() => fs.writeFile(configPath, JSON.stringify({ sentinel_port: 1, sentinel_password_file: missing })))
      const env = { ...process.env }
      delete env.NODE_OPTIONS
      const run = yield* Effect.async<{ code: number | null; stderr: string }>((resume) => {
        const child = spawn(process.execPath, [path.join(repoRoot(), "dist", "src", "main.js"), `--config=${configPath}`], {
          env,
          stdio: ["ignore", "ignore", "pipe"]
        })
        let stderr = ""
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
        child.on("close", (code) => {
          clearTimeout(timer)
          resume(Effect.succeed({ code, stderr }))
        })
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      expect(run.code).toBe(2)
      expect(run.stderr.trim()).toBe(`dictator: cannot read sentinel_password_file ${missing}: ENOENT; point it at a readable file holding the password`)

      const zk = yield* zooKeeper()
      const redis = yield* redisServer()
      const passwordFile = path.join(dir, "password")
      yield* Effect.promise(() => fs.writeFile(passwordFile, "pa ss\n"))
      const port = yield* freePort
      yield* dictator({
        name: "p1",
        svc: "sentinel-auth",
        zkHosts: [zk.connectString],
        redisPort: redis.port,
        extra: { sentinel_port: port, sentinel_password_file: passwordFile }
      })
      const noAuth = yield* Effect.flip(sentinelCall(port, "SENTINEL", "masters"))
      expect(noAuth.message).toContain("NOAUTH Authentication required.")
      const client = new IORedis({ host: "127.0.0.1", port, password: "pa ss", lazyConnect: true, retryStrategy: () => null })
      client.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => client.disconnect()))
      const addr = yield* until(
        "the authenticated endpoint hands out the master",
        Effect.tryPromise({
          try: async () => {
            if (client.status === "wait") await client.connect()
            const a = (await client.call("SENTINEL", "get-master-addr-by-name", "sentinel-auth")) as unknown
            if (!Array.isArray(a)) throw new Error(`no master yet: ${JSON.stringify(a)}`)
            return a as ReadonlyArray<string>
          },
          catch: (e) => new HarnessError({ message: errorText(e) })
        }),
        "20 seconds"
      )
      expect(addr).toEqual(["127.0.0.1", String(redis.port)])
    }))

  it.scopedLive(
    "ioredis and node-redis createSentinel reach the new master by themselves: kill -9 of the master's Redis, then a handover",
    () =>
      Effect.gen(function* () {
        const { zkHosts, nodes } = yield* topology
        const first = yield* until("one master with two linked replicas, handed out by every endpoint", converged(nodes, 2), "40 seconds", "200 millis")
        const sentinels = nodes.map((n) => ({ host: "127.0.0.1", port: n.sentinelPort }))

        // SENTINEL sentinels lists the other two endpoints, as published in the member records.
        // (Member records arrive through a ZooKeeper watch: allow a moment.)
        yield* until(
          "SENTINEL sentinels listing the other two endpoints",
          Effect.flatMap(sentinelCall(nodes[0]!.sentinelPort, "SENTINEL", "sentinels", SVC), (listed) => {
            const ports = (listed as ReadonlyArray<ReadonlyArray<string>>).map((r) => Number(r[r.indexOf("port") + 1])).sort()
            const want = [nodes[1]!.sentinelPort, nodes[2]!.sentinelPort].sort()
            return JSON.stringify(ports) === JSON.stringify(want) ? Effect.void : fail(`listed ${JSON.stringify(ports)}, want ${JSON.stringify(want)}`)
          }),
          "10 seconds"
        )

        const ioredisClient = (failoverDetector: boolean) => {
          const c = new IORedis({
            sentinels,
            name: SVC,
            failoverDetector,
            lazyConnect: true,
            maxRetriesPerRequest: 1,
            retryStrategy: (times: number) => Math.min(times * 50, 500),
            sentinelRetryStrategy: (times: number) => Math.min(times * 50, 500)
          })
          c.on("error", () => {})
          return c
        }
        const plain = ioredisClient(false)
        // Connected only for the handover (see phase 1's note).
        const detecting = ioredisClient(true)
        const nodeRedis = createSentinel({ name: SVC, sentinelRootNodes: sentinels, maxCommandRediscovers: 16 })
        nodeRedis.on("error", () => {})
        yield* Effect.addFinalizer(() =>
          Effect.promise(async () => {
            plain.disconnect()
            detecting.disconnect()
            await nodeRedis.close().catch(() => nodeRedis.destroy())
          }).pipe(Effect.timeout("5 seconds"), Effect.ignore)
        )
        yield* Effect.tryPromise({
          try: async () => {
            await Promise.all([plain.connect(), nodeRedis.connect()])
            await plain.set("hello", "ioredis")
            await nodeRedis.set("hello", "node-redis")
          },
          catch: (e) => new HarnessError({ message: `clients could not connect through the dictators: ${errorText(e)}` })
        }).pipe(Effect.timeout("20 seconds"))
        expect(yield* first.redis.cli("GET", "hello")).toBe("node-redis")

        // Raw subscribers on every endpoint: each must publish the switch with five fields.
        const subscribers = nodes.map((n) => {
          const s = oneShotRedis({ host: "127.0.0.1", port: n.sentinelPort }, { connectTimeoutMs: 2000 })
          s.on("error", () => {})
          const messages: Array<string> = []
          s.on("message", (_ch: string, payload: string) => messages.push(payload))
          return { s, messages }
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => subscribers.forEach(({ s }) => s.disconnect())))
        yield* Effect.promise(() => Promise.all(subscribers.map(async ({ s }) => {
          await s.connect()
          await s.subscribe("+switch-master")
        })))

        const report: Array<string> = []
        /** Runs `fault` on the master under writers; checks every writer reached the new master. */
        const failover = (what: string, master: SNode, fault: Effect.Effect<void, HarnessError>, measureAfterFault: boolean, clients: ReadonlyArray<{ readonly name: string; readonly label: string; readonly set: (k: string, v: string) => Promise<unknown> }>) =>
          Effect.gen(function* () {
            for (const sub of subscribers) sub.messages.length = 0
            const writers = clients.map((c) => ({ name: c.name, w: writer(c.label, c.set) }))
            yield* Effect.sleep("300 millis")
            let faultAt = Date.now()
            for (const { w } of writers) w.state.killedAt = faultAt
            yield* fault
            if (measureAfterFault) {
              // From the moment the old master is demoted: a write started since can only succeed on the new one.
              faultAt = Date.now()
              for (const { w } of writers) {
                w.state.killedAt = faultAt
                w.state.firstAfterKill = null
                w.state.acked.length = 0
              }
            }
            const others = nodes.filter((n) => n !== master)
            const next = yield* until(
              "a new master handed out by every endpoint",
              Effect.flatMap(converged(others, 0), (m) =>
                m === master ? fail("still the old master") : Effect.flatMap(sentinelCall(master.sentinelPort, "SENTINEL", "get-master-addr-by-name", SVC), (a) =>
                  Array.isArray(a) && Number(a[1]) === m.redis.port ? Effect.succeed(m) : fail(`${master.name}'s endpoint hands out ${JSON.stringify(a)}`)
                )
              ),
              "30 seconds"
            )
            const handedOutAt = Date.now()
            yield* until(
              "every client wrote to the new master",
              Effect.suspend(() => {
                const late = writers.filter(({ w }) => w.state.firstAfterKill === null)
                return late.length === 0 ? Effect.void : fail(late.map(({ name, w }) => `${name}: ${w.state.errors} errors, last ${w.state.lastError}`).join("; "))
              }),
              "30 seconds",
              "50 millis"
            ).pipe(Effect.ensuring(Effect.promise(() => Promise.all(writers.map(({ w }) => w.stop())))))
            expect(Option.map(yield* readMaster(zkHosts, SVC), (m) => m.port)).toEqual(Option.some(next.redis.port))
            report.push(`${what} of ${master.name} (:${master.redis.port}); new master ${next.name} (:${next.redis.port}) handed out by every endpoint after ${handedOutAt - faultAt} ms`)
            for (const { name, w } of writers) {
              const ms = w.state.firstAfterKill! - faultAt
              report.push(`  ${name}: first successful write ${ms} ms after the fault (${w.state.errors} failed attempts, ${w.state.acked.length} writes acknowledged after it)`)
              expect(ms).toBeLessThan(30_000)
              // Every write acknowledged after the fault is on the new master: none was taken by a demoted node.
              const values = yield* Effect.tryPromise({
                try: async () => {
                  const c = oneShotRedis({ host: "127.0.0.1", port: next.redis.port }, { connectTimeoutMs: 2000 })
                  c.on("error", () => {})
                  try {
                    await c.connect()
                    return w.state.acked.length === 0 ? [] : await c.mget(...w.state.acked)
                  } finally {
                    c.disconnect()
                  }
                },
                catch: (e) => new HarnessError({ message: errorText(e) })
              })
              expect(values.filter((v) => v === null)).toEqual([])
            }
            // Every endpoint published the switch, with five fields naming the old and new masters.
            yield* until(
              "+switch-master on every endpoint",
              Effect.suspend(() =>
                subscribers.every(({ messages }) => messages.length > 0) ? Effect.void : fail(JSON.stringify(subscribers.map((s) => s.messages)))
              ),
              "5 seconds",
              "50 millis"
            )
            for (const { messages } of subscribers) {
              expect(messages[0]).toBe(`${SVC} 127.0.0.1 ${master.redis.port} 127.0.0.1 ${next.redis.port}`)
            }
            return next
          })

        // 1. kill -9 of the master's redis-server: clients see their connection drop.
        //    (ioredis with failoverDetector is not connected during this phase: its detector
        //    outlives a dropped connection and, when +switch-master arrives while ioredis is
        //    looking the master up again, makes it give up for good — status "end" — an ioredis
        //    5.x bug whatever the sentinel: SentinelConnector cleans the old detector up only in
        //    disconnect() and once a new stream connects.)
        const second = yield* failover("kill -9 of the Redis", first, first.redis.kill9, false, [
          { name: "ioredis (failoverDetector off)", label: "plain", set: (k, v) => plain.set(k, v) },
          { name: "node-redis createSentinel", label: "noderedis1", set: (k, v) => nodeRedis.set(k, v) }
        ])

        // redis-py (Debian's python3-redis, installed by test/run.sh): SENTINEL MASTERS, flags,
        // num-other-sentinels, then a write through master_for.
        const py = yield* Effect.async<{ code: number | null; out: string }>((resume) => {
          const script = [
            "import sys",
            "from redis.sentinel import Sentinel",
            "s = Sentinel([('127.0.0.1', int(p)) for p in sys.argv[2:]], socket_timeout=2)",
            "host, port = s.discover_master(sys.argv[1])",
            "s.master_for(sys.argv[1], socket_timeout=2).set('redis-py', 'ok')",
            "print(host, port, len(s.discover_slaves(sys.argv[1])))"
          ].join("\n")
          const child = spawn(process.env.REDIS_PY_PYTHON ?? "/usr/bin/python3", ["-c", script, SVC, ...nodes.map((n) => String(n.sentinelPort))], {
            stdio: ["ignore", "pipe", "pipe"]
          })
          let out = ""
          child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
          child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d))
          const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
          child.on("error", (e) => {
            clearTimeout(timer)
            resume(Effect.succeed({ code: -1, out: `${e.message} (install python3-redis: bash test/run.sh --setup-only)` }))
          })
          child.on("close", (code) => {
            clearTimeout(timer)
            resume(Effect.succeed({ code, out }))
          })
          return Effect.sync(() => child.kill("SIGKILL"))
        })
        expect(py.out.trim()).toBe(`127.0.0.1 ${second.redis.port} 1`)
        expect(py.code).toBe(0)
        expect(yield* second.redis.cli("GET", "redis-py")).toBe("ok")

        // The killed Redis comes back; its dictator makes it a replica of the new master.
        yield* first.redis.start
        yield* until("the restarted Redis replicating again", converged(nodes, 2), "40 seconds", "200 millis")

        yield* Effect.tryPromise({
          try: async () => {
            await detecting.connect()
            await detecting.set("hello", "ioredis-detector")
          },
          catch: (e) => new HarnessError({ message: `ioredis (failoverDetector on) could not connect through the dictators: ${errorText(e)}` })
        }).pipe(Effect.timeout("20 seconds"))

        // 2. A graceful handover (POST /disable): the demoted Redis keeps its client connections,
        //    so ioredis's failoverDetector (+switch-master) and node-redis (READONLY) are what move them.
        const disable = Effect.flatMap(second.dictator.http("/disable", "POST"), (r) =>
          r.status === 200 ? Effect.void : fail(`/disable answered ${r.status}: ${r.body}`)
        )
        yield* failover("handover (/disable, times from its end)", second, disable, true, [
          { name: "ioredis (failoverDetector on)", label: "detect", set: (k, v) => detecting.set(k, v) },
          { name: "node-redis createSentinel", label: "noderedis2", set: (k, v) => nodeRedis.set(k, v) }
        ])
        console.log(report.join("\n"))
      }),
    { timeout: 150_000 }
  )
})
