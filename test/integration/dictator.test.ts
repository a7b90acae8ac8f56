/**
 * Issue 2, end to end: real ZooKeeper, real redis-servers and the built `dictator` binary (run
 * `npm run build` first), through the harness of test/support/servers.ts.
 *
 * One 3-node topology (standalone ZooKeeper, tickTime 2000, 3 redis-servers, 3 dictators with
 * the default timings) is shared by the tests that only disturb the dictators; every such test
 * starts by restoring it (restart what was stopped, re-enable what was disabled, wait for one
 * master and two linked replicas). The ZooKeeper-ensemble and unreachable-ZooKeeper cases build
 * their own servers. Every server is a scoped resource: it stops even when a test fails.
 *
 * Nothing here asserts wall-clock speed: waits are generous and timings are only printed.
 */
import * as http from "node:http"
import * as net from "node:net"
import { expect, layer, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, type Scope } from "effect"
import zookeeper from "node-zookeeper-client"
import {
  accepts,
  type DictatorProcess,
  HarnessError,
  type RedisServer,
  type ZkServer,
  dictator,
  httpRequest,
  readMaster,
  redisCommand,
  redisServer,
  waitUntil,
  zkSession,
  zooKeeper,
  zooKeeperEnsemble
} from "../support/servers.js"

// ---------------------------------------------------------------------------------------------
// Small helpers (local: the harness stays as it is)
// ---------------------------------------------------------------------------------------------

const fail = (message: string) => Effect.fail(new HarnessError({ message }))

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** `INFO <section>` as a key → value map. */
const redisInfo = (port: number, section = "replication"): Effect.Effect<Record<string, string>, HarnessError> =>
  redisCommand(port, ["INFO", section]).pipe(
    Effect.map((text) => {
      const out: Record<string, string> = {}
      for (const line of text.split(/\r?\n/)) {
        const i = line.indexOf(":")
        if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1)
      }
      return out
    })
  )

/** Calls of REPLICAOF (and its old name SLAVEOF) a Redis has executed since it started. */
const replicaofCalls = (port: number) =>
  redisInfo(port, "commandstats").pipe(
    Effect.map((stats) => {
      const calls = (key: string) => Number(/calls=(\d+)/.exec(stats[key] ?? "")?.[1] ?? 0)
      return calls("cmdstat_replicaof") + calls("cmdstat_slaveof")
    })
  )

/** One SET that must answer OK within 1 s (a paused or read-only Redis does not). */
const setNow = (port: number, key: string, value: string) =>
  redisCommand(port, ["SET", key, value]).pipe(
    Effect.timeoutFail({ duration: "1 second", onTimeout: () => new HarnessError({ message: `SET on :${port} blocked` }) }),
    Effect.filterOrElse(
      (r) => r === "OK",
      (r) => fail(`SET on :${port} answered ${r}`)
    )
  )

/** A four-letter word to 127.0.0.1:port; whatever the server sends until it closes (≤ 3 s). */
const fourLetters = (port: number, word: string): Effect.Effect<string, HarnessError> =>
  Effect.async<string, HarnessError>((resume) => {
    let data = ""
    let settled = false
    const socket = net.createConnection({ host: "127.0.0.1", port })
    const done = (result: Effect.Effect<string, HarnessError>) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resume(result)
    }
    const timer = setTimeout(() => done(fail(`${word} on :${port}: no answer`)), 3000)
    socket.setEncoding("utf8")
    socket.on("connect", () => socket.write(word))
    socket.on("data", (d: string) => (data += d))
    socket.on("close", () => done(Effect.succeed(data)))
    socket.on("error", (e) => done(fail(`${word} on :${port}: ${e.message}`)))
    return Effect.sync(() => {
      settled = true
      clearTimeout(timer)
      socket.destroy()
    })
  })


/** A GET with request headers (the harness's `httpRequest` sends none). */
const httpGetWithHeaders = (port: number, urlPath: string, headers: Record<string, string>) =>
  Effect.async<{ status: number; body: string; contentType: string }, HarnessError>((resume) => {
    let settled = false
    const done = (result: Effect.Effect<{ status: number; body: string; contentType: string }, HarnessError>) => {
      if (settled) return
      settled = true
      resume(result)
    }
    const req = http.request(
      { host: "127.0.0.1", port, path: urlPath, method: "GET", agent: false, timeout: 5000, headers: { connection: "close", ...headers } },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => (body += d))
        res.on("end", () =>
          done(Effect.succeed({ status: res.statusCode ?? 0, body, contentType: String(res.headers["content-type"] ?? "") }))
        )
      }
    )
    req.on("timeout", () => req.destroy(new Error("no answer within 5000 ms")))
    req.on("error", (e) => done(fail(`GET ${urlPath} on :${port}: ${e.message}`)))
    req.end()
    return Effect.sync(() => {
      settled = true
      req.destroy()
    })
  })

// --- ZooKeeper from the outside ---------------------------------------------------------------

interface Znode {
  readonly data: Buffer
  /** Hex session id of the owner ("0" for a persistent znode), as /status shows it without "0x". */
  readonly owner: string
  readonly czxid: string
  readonly version: number
}

const zkCode = (e: unknown): number | undefined =>
  typeof e === "object" && e !== null && "getCode" in e && typeof e.getCode === "function" ? (e.getCode() as number) : undefined

const zkGet = (client: zookeeper.Client, path: string): Effect.Effect<Option.Option<Znode>, HarnessError> =>
  Effect.async<Option.Option<Znode>, HarnessError>((resume) => {
    client.getData(path, (error, data, stat) => {
      if (error) {
        if (zkCode(error) === zookeeper.Exception.NO_NODE) resume(Effect.succeed(Option.none()))
        else resume(fail(`getData ${path}: ${errorText(error)}`))
        return
      }
      resume(
        Effect.succeed(
          Option.some({
            data: data ?? Buffer.alloc(0),
            owner: stat.ephemeralOwner.readBigUInt64BE(0).toString(16),
            czxid: stat.czxid.readBigUInt64BE(0).toString(),
            version: stat.version
          })
        )
      )
    })
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new HarnessError({ message: `getData ${path}: no answer` }) }))

const zkCommit = (what: string, tx: zookeeper.Transaction): Effect.Effect<void, HarnessError> =>
  Effect.async<void, HarnessError>((resume) => {
    tx.commit((error) => resume(error ? fail(`${what}: ${errorText(error)}`) : Effect.void))
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new HarnessError({ message: `${what}: no answer` }) }))

const zkSetData = (client: zookeeper.Client, path: string, data: Buffer): Effect.Effect<void, HarnessError> =>
  Effect.async<void, HarnessError>((resume) => {
    client.setData(path, data, -1, (error) => resume(error ? fail(`setData ${path}: ${errorText(error)}`) : Effect.void))
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new HarnessError({ message: `setData ${path}: no answer` }) }))

/** One read with a short-lived session of its own (fine for polls: nothing is left behind). */
const zkRead = (hosts: ReadonlyArray<string>, path: string) =>
  Effect.scoped(Effect.flatMap(zkSession(hosts), (c) => zkGet(c, path)))

const masterPath = (svc: string) => `/services/redis/${svc}/master`
const memberPath = (svc: string, name: string) => `/services/redis/${svc}/members/${name}`

// --- the topology -----------------------------------------------------------------------------

interface TNode {
  readonly name: string
  readonly redis: RedisServer
  readonly dictator: DictatorProcess
}

interface Topology {
  readonly svc: string
  readonly zkHosts: ReadonlyArray<string>
  readonly zk: ReadonlyArray<ZkServer>
  readonly nodes: ReadonlyArray<TNode>
}

/** /status?format=json as Http.ts writes it. */
interface StatusJson {
  readonly name: string
  readonly service: string
  readonly role: string
  readonly enabled: boolean
  readonly session: { readonly state: string; readonly id: string | null }
  readonly master: {
    readonly state: string
    readonly name?: string
    readonly host?: string
    readonly port?: number
    readonly epoch?: string
    readonly owner?: string
    readonly reason?: string
    readonly raw?: string
  }
  readonly redis: {
    readonly state: string
    readonly role?: string
    readonly offset?: number
    readonly link_up?: boolean
    readonly master?: string | null
  }
  readonly members: ReadonlyArray<{ readonly name: string; readonly role: string; readonly healthy: boolean }>
}

const statusOf = (d: DictatorProcess) => Effect.map(d.status, (s) => s as StatusJson)

const NAMES = ["redis1", "redis2", "redis3"] as const
/** A replica that (re)connects gets its full sync at once instead of after Redis's 5 s default. */
const REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]

const makeTopology = (
  svc: string,
  zk: ReadonlyArray<ZkServer>,
  zkHosts: ReadonlyArray<string>
): Effect.Effect<Topology, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const redis = yield* Effect.forEach(NAMES, () => redisServer({ args: REDIS_ARGS }))
    const dictators = yield* Effect.forEach(
      NAMES,
      (name, i) => dictator({ name, svc, zkHosts, redisPort: redis[i]!.port }),
      { concurrency: "unbounded" }
    )
    // Registered last, so it runs first at teardown: no chain of graceful handovers.
    yield* Effect.addFinalizer(() => Effect.forEach(dictators, (d) => d.kill9, { concurrency: "unbounded", discard: true }))
    return { svc, zk, zkHosts, nodes: NAMES.map((name, i) => ({ name, redis: redis[i]!, dictator: dictators[i]! })) }
  })

interface Converged {
  readonly master: TNode
  readonly replicas: ReadonlyArray<TNode>
  /** The master znode: its data (parsed) and its stat. */
  readonly record: Record<string, unknown>
  readonly znode: Znode
  readonly statuses: ReadonlyMap<string, StatusJson>
}

/**
 * One probe of "one master and two linked replicas": the master znode names a node; its Redis is
 * master; the two others replicate from it with the link up; every dictator is enabled,
 * connected and says the same. Fails with what is not there yet.
 */
const probeConverged = (t: Topology): Effect.Effect<Option.Option<Converged>, HarnessError> =>
  Effect.gen(function* () {
    const found = yield* zkRead(t.zkHosts, masterPath(t.svc))
    if (Option.isNone(found)) return yield* fail("no master znode")
    const znode = found.value
    const raw = znode.data.toString("utf8")
    const record = yield* Effect.try({
      try: () => JSON.parse(raw) as Record<string, unknown>,
      catch: () => new HarnessError({ message: `master znode is not JSON: ${raw}` })
    })
    const master = t.nodes.find((n) => n.name === record.name)
    if (master === undefined) return yield* fail(`master znode names no node of the topology: ${raw}`)
    if (record.host !== "127.0.0.1" || record.port !== String(master.redis.port)) {
      return yield* fail(`master znode has the wrong address for ${master.name}: ${raw}`)
    }
    const replicas = t.nodes.filter((n) => n !== master)
    const infos = yield* Effect.forEach(t.nodes, (n) => redisInfo(n.redis.port), { concurrency: "unbounded" })
    const infoOf = (n: TNode) => infos[t.nodes.indexOf(n)]!
    if (infoOf(master).role !== "master") return yield* fail(`${master.name}'s Redis is ${infoOf(master).role}`)
    for (const r of replicas) {
      const i = infoOf(r)
      if (i.role !== "slave" || i.master_host !== "127.0.0.1" || i.master_port !== String(master.redis.port)) {
        return yield* fail(`${r.name}'s Redis is ${i.role} of ${i.master_host}:${i.master_port}, not of ${master.name}`)
      }
      if (i.master_link_status !== "up") return yield* fail(`${r.name}'s link to ${master.name} is ${i.master_link_status}`)
    }
    const list = yield* Effect.forEach(t.nodes, (n) => statusOf(n.dictator), { concurrency: "unbounded" })
    const statuses = new Map(list.map((s) => [s.name, s] as const))
    for (const n of t.nodes) {
      const s = statuses.get(n.name)
      const want = n === master ? "master" : "replica"
      if (s === undefined) return yield* fail(`no /status from ${n.name}`)
      if (!s.enabled || s.session.state !== "connected" || s.role !== want || s.master.name !== master.name) {
        return yield* fail(
          `${n.name} /status: role ${s.role} (want ${want}), enabled ${s.enabled}, session ${s.session.state}, master ${s.master.name ?? s.master.state}`
        )
      }
      if (s.members.length !== t.nodes.length) return yield* fail(`${n.name} sees ${s.members.length} members`)
    }
    return Option.some({ master, replicas, record, znode, statuses })
  })

const awaitConverged = (t: Topology, timeout: Duration.DurationInput = "60 seconds") =>
  waitUntil("one master and two linked replicas, every /status agreeing", probeConverged(t), {
    timeout,
    interval: "250 millis"
  })

/**
 * Back to the shared starting point: every process running, every dictator enabled, one master
 * and two linked replicas.
 */
const restore = (t: Topology): Effect.Effect<Converged, HarnessError> =>
  Effect.gen(function* () {
    for (const n of t.nodes) {
      if (!(yield* n.redis.running)) yield* n.redis.start
      if (!(yield* n.dictator.running)) yield* n.dictator.start
    }
    yield* Effect.forEach(
      t.nodes,
      (n) =>
        waitUntil(
          `${n.name} to answer /status and be enabled`,
          Effect.gen(function* () {
            const s = yield* statusOf(n.dictator)
            if (s.enabled) return Option.some(s)
            yield* n.dictator.http("/enable", "POST")
            return Option.none()
          })
        ),
      { concurrency: "unbounded", discard: true }
    )
    return yield* awaitConverged(t)
  })

/** On failure, prints the end of every dictator's output (the harness keeps it for this). */
const showLogsOnFailure = (t: Topology) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    self.pipe(
      Effect.tapErrorCause(() =>
        Effect.sync(() => {
          for (const n of t.nodes) {
            const out = n.dictator.output()
            console.log(`----- ${n.name} (last 6000 chars) -----\n${out.slice(-6000)}`)
          }
        })
      )
    )

/** How many times `re` matches in `text`. */
const count = (text: string, re: RegExp): number =>
  (text.match(new RegExp(re.source, re.flags.includes("g") ? re.flags : `${re.flags}g`)) ?? []).length

/** A writable master other than `old`, found through the znode (read with `client`). */
const probeWritableMaster = (t: Topology, client: zookeeper.Client, old: string, key: string) =>
  Effect.gen(function* () {
    const z = yield* zkGet(client, masterPath(t.svc))
    if (Option.isNone(z)) return yield* fail("no master znode yet")
    const name = (JSON.parse(z.value.data.toString("utf8")) as { name?: unknown }).name
    const node = t.nodes.find((n) => n.name === name)
    if (node === undefined || node.name === old) return yield* fail(`the master znode still names ${String(name)}`)
    yield* setNow(node.redis.port, key, node.name)
    return Option.some(node)
  })

const awaitReplicaOf = (n: TNode, master: TNode, timeout: Duration.DurationInput = "30 seconds") =>
  waitUntil(
    `${n.name}'s Redis to replicate from ${master.name} with the link up`,
    Effect.map(redisInfo(n.redis.port), (i) =>
      i.role === "slave" && i.master_port === String(master.redis.port) && i.master_link_status === "up"
        ? Option.some(i)
        : Option.none()
    ),
    { timeout }
  )

const awaitMemberGone = (t: Topology, name: string) =>
  waitUntil(
    `the member znode of ${name} to be gone`,
    Effect.map(zkRead(t.zkHosts, memberPath(t.svc, name)), (z) => (Option.isNone(z) ? Option.some(true) : Option.none())),
    { timeout: "30 seconds" }
  )

class Topo extends Context.Tag("test/DictatorTopology")<Topo, Topology>() {}

/** A test on the shared topology: prints the dictators' logs when it fails. */
const logsOnFailure = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | Topo> =>
  Effect.flatMap(Topo, (t) => showLogsOnFailure(t)(self))

// ---------------------------------------------------------------------------------------------
// 1-4, 7: one standalone ZooKeeper, three dictators
// ---------------------------------------------------------------------------------------------

const standalone = Layer.scoped(
  Topo,
  Effect.gen(function* () {
    const zk = yield* zooKeeper({ tickTime: 2000 })
    const t = yield* makeTopology("it-dictator", [zk], [zk.connectString])
    yield* awaitConverged(t).pipe(showLogsOnFailure(t))
    return t
  })
)

layer(standalone, { timeout: "150 seconds", excludeTestServices: true })("three dictators, standalone ZooKeeper", (it) => {
  it.scoped("1. elect one master and two replicas; znode, Redis and /status agree; a write reaches both replicas", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)

      // The master znode, read with the harness's own COMPAT reader and raw.
      const seen = yield* readMaster(t.zkHosts, t.svc)
      expect(Option.isSome(seen)).toBe(true)
      const m = Option.getOrThrow(seen)
      expect(m).toMatchObject({ name: c.master.name, host: "127.0.0.1", port: c.master.redis.port })
      const json = JSON.parse(m.raw) as Record<string, unknown>
      expect(typeof json.port).toBe("string") // COMPAT: the original wrote the port as a string
      expect(json).toMatchObject({ host: "127.0.0.1", port: String(c.master.redis.port), name: c.master.name })
      expect(c.znode.owner).not.toBe("0") // ephemeral

      // Redis roles.
      const masterInfo = yield* redisInfo(c.master.redis.port)
      expect(masterInfo.role).toBe("master")
      expect(Number(masterInfo.connected_slaves)).toBe(2)
      expect(c.replicas).toHaveLength(2)
      for (const r of c.replicas) {
        const i = yield* redisInfo(r.redis.port)
        expect(i).toMatchObject({
          role: "slave",
          master_host: "127.0.0.1",
          master_port: String(c.master.redis.port),
          master_link_status: "up"
        })
      }

      // /status, JSON (?format=json and Accept: application/json) and text, on every node.
      for (const n of t.nodes) {
        const isMaster = n === c.master
        const s = yield* statusOf(n.dictator)
        expect(s).toMatchObject({
          name: n.name,
          service: t.svc,
          role: isMaster ? "master" : "replica",
          enabled: true,
          session: { state: "connected" },
          master: {
            state: "elected",
            name: c.master.name,
            host: "127.0.0.1",
            port: c.master.redis.port,
            epoch: m.czxid
          },
          redis: { state: "healthy", role: isMaster ? "master" : "replica" }
        })
        expect(s.session.id).toMatch(/^0x[0-9a-f]+$/)
        if (isMaster) expect(s.session.id).toBe(`0x${c.znode.owner}`) // the master owns the znode
        else {
          expect(s.session.id).not.toBe(`0x${c.znode.owner}`)
          expect(s.redis.link_up).toBe(true)
          expect(s.redis.master).toBe(`127.0.0.1:${c.master.redis.port}`)
        }
        expect(s.members.map((x) => x.name).sort()).toEqual([...NAMES])

        const viaAccept = yield* httpGetWithHeaders(n.dictator.httpPort, "/status", { accept: "application/json" })
        expect(viaAccept.status).toBe(200)
        expect(viaAccept.contentType).toContain("application/json")
        expect(JSON.parse(viaAccept.body)).toMatchObject({ name: n.name, role: s.role, master: { name: c.master.name } })

        const text = yield* n.dictator.http("/status")
        expect(text.status).toBe(200)
        expect(text.body).toContain(`name: ${n.name}\n`)
        expect(text.body).toContain(`service: ${t.svc}\n`)
        expect(text.body).toContain(`role: ${isMaster ? "master" : "replica"}\n`)
        expect(text.body).toContain("enabled: true\n")
        expect(text.body).toContain(`zookeeper: connected (session ${s.session.id})\n`)
        expect(text.body).toContain(`master: ${c.master.name} 127.0.0.1:${c.master.redis.port} (epoch ${m.czxid})\n`)
        expect(text.body).toMatch(new RegExp(`redis: healthy, ${isMaster ? "master" : "replica"}, offset \\d+\\n`))
      }

      // A write on the master is readable on both replicas; replicas refuse writes.
      const key = `it:write:${Date.now()}`
      expect(yield* redisCommand(c.master.redis.port, ["SET", key, "hello"])).toBe("OK")
      for (const r of c.replicas) {
        yield* waitUntil(
          `${key} on ${r.name}`,
          Effect.map(redisCommand(r.redis.port, ["GET", key]), (v) => (v === "hello" ? Option.some(v) : Option.none()))
        )
        const refused = yield* Effect.flip(redisCommand(r.redis.port, ["SET", key, "nope"]))
        expect(refused.message).toMatch(/READONLY/)
      }
    }).pipe(logsOnFailure)
  )

  it.scoped("2. SIGTERM of the master's dictator: graceful handover to a writable new master; its znodes are gone", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const old = c.master
      const oldSession = c.znode.owner
      const client = yield* zkSession(t.zkHosts)

      // Acknowledged just before the stop: a graceful handover must not lose it.
      const key = `it:before-sigterm:${Date.now()}`
      expect(yield* redisCommand(old.redis.port, ["SET", key, "kept"])).toBe("OK")

      const t0 = Date.now()
      yield* old.dictator.signal("SIGTERM")
      const next = yield* waitUntil(
        "a writable new master named by the znode",
        probeWritableMaster(t, client, old.name, `it:after-sigterm:${t0}`),
        { timeout: "30 seconds", interval: "20 millis" }
      )
      const took = Date.now() - t0
      console.log(`SIGTERM → writable new master (${old.name} → ${next.name}): ${took} ms`)
      expect(next.name).not.toBe(old.name)

      // The dictator exits cleanly; the Redis next to it keeps running.
      const code = yield* old.dictator.exitCode.pipe(Effect.timeout("30 seconds"))
      expect(code).toBe(0)
      expect(yield* old.redis.running).toBe(true)

      // Its znodes are gone: member record, master znode of its session, any ephemeral of it.
      expect(Option.isNone(yield* zkGet(client, memberPath(t.svc, old.name)))).toBe(true)
      const z = Option.getOrThrow(yield* zkGet(client, masterPath(t.svc)))
      expect(z.owner).not.toBe(oldSession)
      const dump = yield* fourLetters(t.zk[0]!.clientPort, "dump")
      expect(dump).toContain("Sessions with Ephemerals")
      expect(dump).not.toContain(`0x${oldSession}`)

      // Graceful handover: the old Redis replicates from the new master, nothing acknowledged lost.
      yield* awaitReplicaOf(old, next)
      expect(yield* redisCommand(next.redis.port, ["GET", key])).toBe("kept")
      yield* waitUntil(
        `the new master's write on ${old.name}`,
        Effect.map(redisCommand(old.redis.port, ["GET", `it:after-sigterm:${t0}`]), (v) =>
          v === next.name ? Option.some(v) : Option.none()
        )
      )

      // Restarted, it rejoins as a replica.
      yield* old.dictator.start
      const after = yield* awaitConverged(t)
      expect(after.master.name).toBe(next.name)
      expect(after.replicas.map((r) => r.name)).toContain(old.name)
    }).pipe(logsOnFailure)
  )

  it.scoped("3. kill -9 of the master's dictator: a new master once its session is gone; restarted, it rejoins as a replica", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const old = c.master
      const oldSession = c.znode.owner
      const client = yield* zkSession(t.zkHosts)

      const t0 = Date.now()
      yield* old.dictator.kill9
      expect(yield* old.dictator.running).toBe(false)
      const next = yield* waitUntil(
        "a writable new master after the old session expired",
        probeWritableMaster(t, client, old.name, `it:after-kill9:${t0}`),
        { timeout: "60 seconds", interval: "50 millis" }
      )
      console.log(`kill -9 → writable new master (${old.name} → ${next.name}): ${Date.now() - t0} ms`)
      const z = Option.getOrThrow(yield* zkGet(client, masterPath(t.svc)))
      expect(z.owner).not.toBe(oldSession)
      expect(Option.isNone(yield* zkGet(client, memberPath(t.svc, old.name)))).toBe(true)

      yield* old.dictator.start
      const after = yield* awaitConverged(t)
      expect(after.master.name).toBe(next.name)
      expect(after.replicas.map((r) => r.name)).toContain(old.name)
      yield* awaitReplicaOf(old, next)
      expect(after.statuses.get(old.name)).toMatchObject({ role: "replica", enabled: true, master: { name: next.name } })
      yield* waitUntil(
        `the new master's write on ${old.name}`,
        Effect.map(redisCommand(old.redis.port, ["GET", `it:after-kill9:${t0}`]), (v) =>
          v === next.name ? Option.some(v) : Option.none()
        )
      )
    }).pipe(logsOnFailure)
  )

  // Mutating endpoints take POST only (issue 9); GET answers 405 and changes nothing.
  for (const method of ["POST"] as const) {
    it.scoped(`4. /disable (${method}) on the master hands over; /enable (${method}) rejoins as a replica; GET is 405`, () =>
      Effect.gen(function* () {
        const t = yield* Topo
        const c = yield* restore(t)
        const old = c.master
        const client = yield* zkSession(t.zkHosts)

        const refused = yield* httpRequest(old.dictator.httpPort, "/disable", "GET", 15_000)
        expect(refused.status).toBe(405)
        expect(refused.body).toContain("use POST /disable")
        expect(yield* statusOf(old.dictator)).toMatchObject({ enabled: true, role: "master" })

        // /disable answers once the handover is over (bounded by 2 × handover_timeout_ms + 2 s).
        const disabled = yield* httpRequest(old.dictator.httpPort, "/disable", method, 15_000)
        expect(disabled).toEqual({ status: 200, body: "disabled\n" })
        const next = yield* waitUntil(
          "a writable new master after /disable",
          probeWritableMaster(t, client, old.name, `it:after-disable:${method}`),
          { timeout: "30 seconds", interval: "50 millis" }
        )
        expect(next.name).not.toBe(old.name)
        yield* awaitMemberGone(t, old.name)
        const s = yield* waitUntil(
          `${old.name} to report itself disabled`,
          Effect.map(statusOf(old.dictator), (x) => (x.role === "disabled" ? Option.some(x) : Option.none()))
        )
        expect(s).toMatchObject({ enabled: false, role: "disabled", session: { state: "connected" } })
        expect((yield* old.dictator.http("/status")).body).toContain("enabled: false\n")
        // The handover left the old Redis following the new master.
        yield* awaitReplicaOf(old, next)
        expect(yield* old.dictator.http("/disable", method)).toEqual({ status: 200, body: "already disabled\n" })
        expect(yield* old.dictator.running).toBe(true)

        const enabled = yield* httpRequest(old.dictator.httpPort, "/enable", method, 15_000)
        expect(enabled).toEqual({ status: 200, body: "enabled\n" })
        const after = yield* awaitConverged(t)
        expect(after.master.name).toBe(next.name)
        expect(after.replicas.map((r) => r.name)).toContain(old.name)
        expect(after.statuses.get(old.name)).toMatchObject({ enabled: true, role: "replica" })
        expect(Option.isSome(yield* zkGet(client, memberPath(t.svc, old.name)))).toBe(true)
        expect(yield* old.dictator.http("/enable", method)).toEqual({ status: 200, body: "already enabled\n" })
      }).pipe(logsOnFailure)
    )
  }

  it.scoped("7. a malformed master znode is logged and never followed; once it is gone a master is elected", () =>
    Effect.gen(function* () {
      const t = yield* Topo
      const c = yield* restore(t)
      const before = yield* Effect.forEach(t.nodes, (n) => redisInfo(n.redis.port))
      const calls = yield* Effect.forEach(t.nodes, (n) => replicaofCalls(n.redis.port))
      const logged = t.nodes.map((n) => count(n.dictator.output(), /is malformed/))
      const path = masterPath(t.svc)

      /** While the garbage is there: nobody replicates from anything new, nobody is master. */
      const holdsStill = (reason: RegExp) =>
        Effect.gen(function* () {
          yield* Effect.forEach(
            t.nodes,
            (n) =>
              waitUntil(
                `${n.name} to see the malformed master znode`,
                Effect.map(statusOf(n.dictator), (s) =>
                  s.master.state === "malformed" && reason.test(s.master.reason ?? "") && s.role === "fenced"
                    ? Option.some(s)
                    : Option.none()
                )
              ),
            { concurrency: "unbounded", discard: true }
          )
          // A few seconds of sampling: roles and replication sources unchanged, nobody exits.
          for (let i = 0; i < 10; i++) {
            for (const [k, n] of t.nodes.entries()) {
              const now = yield* redisInfo(n.redis.port)
              expect(now.role, `${n.name}'s role`).toBe(before[k]!.role)
              expect(now.master_port, `${n.name}'s master`).toBe(before[k]!.master_port)
              expect(yield* n.dictator.running, `${n.name} still running`).toBe(true)
              const s = yield* statusOf(n.dictator)
              expect(s.role, `${n.name}'s /status role`).not.toBe("master")
            }
            yield* Effect.sleep("300 millis")
          }
        })

      yield* Effect.scoped(
        Effect.gen(function* () {
          const intruder = yield* zkSession(t.zkHosts)
          // Swap the master znode for garbage in one transaction (no election can slip in between).
          yield* zkCommit(
            "replace the master znode with garbage",
            intruder
              .transaction()
              .remove(path, -1)
              .create(path, Buffer.from([0x00, 0xff, 0x7b, 0x6e, 0x6f, 0x74, 0x20, 0x6a, 0x73, 0x6f, 0x6e]), zookeeper.CreateMode.EPHEMERAL)
          )
          yield* holdsStill(/not JSON/)
          // JSON now, but with an impossible port: still not followed.
          yield* zkSetData(intruder, path, Buffer.from(JSON.stringify({ host: "203.0.113.9", port: "99999", name: "ghost" })))
          yield* holdsStill(/port/)
          const z = Option.getOrThrow(yield* zkGet(intruder, path))
          expect(z.data.toString("utf8")).toContain("ghost") // still the intruder's znode
        })
      ) // the intruder's session closes: its ephemeral garbage goes with it

      for (const [k, n] of t.nodes.entries()) {
        expect(yield* replicaofCalls(n.redis.port), `REPLICAOF calls on ${n.name}'s Redis while the znode was garbage`).toBe(
          calls[k]
        )
        const out = n.dictator.output()
        expect(count(out, /is malformed/), `${n.name} logs the malformed znode`).toBeGreaterThanOrEqual(logged[k]! + 2)
        expect(out).toContain("not following it")
        expect(yield* n.dictator.running).toBe(true)
      }
      for (const n of t.nodes) {
        const info = yield* redisInfo(n.redis.port)
        expect(info.master_host ?? "", `${n.name} never pointed at the garbage address`).not.toBe("203.0.113.9")
      }

      const after = yield* awaitConverged(t)
      expect(NAMES).toContain(after.master.name)
      yield* setNow(after.master.redis.port, "it:after-garbage", "ok")
      console.log(`malformed master znode: before ${c.master.name}, after ${after.master.name}`)
    }).pipe(logsOnFailure)
  )
})

// ---------------------------------------------------------------------------------------------
// 5: a ZooKeeper ensemble
// ---------------------------------------------------------------------------------------------

describe("three dictators, 3-node ZooKeeper ensemble", () => {
  it.scopedLive("5. kill -9 the ZooKeeper server the master's dictator is connected to: still exactly one master", () =>
    Effect.gen(function* () {
      const ensemble = yield* zooKeeperEnsemble(3, { tickTime: 2000 })
      const t = yield* makeTopology("it-ensemble", ensemble.servers, ensemble.hosts)
      yield* Effect.gen(function* () {
        const c = yield* awaitConverged(t)
        const session = `0x${c.znode.owner}`
        // `cons` lists every connection of a server with its session id.
        const cons = yield* Effect.forEach(ensemble.servers, (s) => fourLetters(s.clientPort, "cons"))
        const i = cons.findIndex((text) => text.includes(`sid=${session},`) || text.includes(`sid=${session})`))
        expect(i, `no server lists session ${session}`).toBeGreaterThanOrEqual(0)
        const victim = ensemble.servers[i]!
        const victimMode = yield* victim.mode
        console.log(`ensemble: master ${c.master.name} (session ${session}) is connected to ZooKeeper #${victim.id} (${victimMode}); killing it`)

        const mark = c.master.dictator.output().length
        const survivors = ensemble.servers.filter((s) => s !== victim)
        yield* victim.kill9
        // Until the service is whole again, never two dictators acting as master at once.
        const twoMasters: Array<string> = []
        const sampleRoles = Effect.gen(function* () {
          const roles = yield* Effect.forEach(
            t.nodes,
            (n) => statusOf(n.dictator).pipe(Effect.map((s) => `${n.name}=${s.role}`), Effect.orElseSucceed(() => `${n.name}=?`)),
            { concurrency: "unbounded" }
          )
          if (roles.filter((r) => r.endsWith("=master")).length > 1) twoMasters.push(roles.join(", "))
        })
        // Every dictator's session (the old one or a new one) is now served by a surviving server.
        yield* waitUntil(
          "every dictator's session to be on a surviving ZooKeeper server",
          Effect.gen(function* () {
            yield* sampleRoles
            const listed = (yield* Effect.forEach(survivors, (s) => fourLetters(s.clientPort, "cons"))).join("\n")
            const ids = yield* Effect.forEach(t.nodes, (n) => Effect.map(statusOf(n.dictator), (s) => s.session.id))
            const missing = ids.filter((id) => id === null || !(listed.includes(`sid=${id},`) || listed.includes(`sid=${id})`)))
            return missing.length === 0 ? Option.some(ids) : yield* fail(`sessions not on a surviving server: ${missing.join(", ")}`)
          }),
          { timeout: "90 seconds", interval: "250 millis" }
        )
        const converged = yield* waitUntil(
          "one master and two replicas after the ZooKeeper server died",
          Effect.zipRight(sampleRoles, probeConverged(t)),
          { timeout: "90 seconds", interval: "250 millis" }
        )
        expect(twoMasters, "samples with two dictators acting as master").toEqual([])
        const since = c.master.dictator.output().slice(mark).split("\n").filter((l) => l.length > 0)
        console.log(`ensemble: ${c.master.name}'s log after the kill:\n${since.slice(0, 20).join("\n")}`)
        const masters = yield* Effect.forEach(t.nodes, (n) => Effect.map(redisInfo(n.redis.port), (x) => x.role))
        expect(masters.filter((r) => r === "master")).toHaveLength(1)
        const named = yield* readMaster(ensemble.hosts.filter((h) => h !== victim.connectString), t.svc)
        expect(Option.getOrThrow(named).name).toBe(converged.master.name)
        yield* waitUntil("the master to take writes", Effect.map(setNow(converged.master.redis.port, "it:ensemble", "ok"), Option.some))
        for (const s of converged.statuses.values()) expect(s.session.state).toBe("connected")
        console.log(`ensemble: after ZooKeeper #${victim.id} died the master is ${converged.master.name} (before: ${c.master.name})`)
      }).pipe(showLogsOnFailure(t))
    })
  )
})

// ---------------------------------------------------------------------------------------------
// 6: ZooKeeper unreachable at start
// ---------------------------------------------------------------------------------------------

describe("ZooKeeper unreachable at start", () => {
  it.scopedLive("6. the dictator keeps running and retrying; once ZooKeeper is there it takes part", () =>
    Effect.gen(function* () {
      // A ZooKeeper whose port we know, stopped: nothing listens there until we start it again.
      const zk = yield* zooKeeper({ tickTime: 2000 })
      yield* zk.stop
      expect(yield* accepts(zk.clientPort)).toBe(false)
      const redis = yield* redisServer()
      const d = yield* dictator({
        name: "lonely",
        svc: "it-unreachable",
        zkHosts: [zk.connectString],
        redisPort: redis.port,
        // 1 s per connection attempt (default 3 s) so that several attempts fit in a few seconds;
        // a lone master has nobody to hand over to on stop.
        extra: { zk_connect_timeout_ms: 1000, handover_timeout_ms: 0 }
      })
      const retries = () => count(d.output(), /unreachable.*retry|retry.*unreachable/i)
      const lines = yield* waitUntil(
        "two retry lines in the dictator's log",
        Effect.sync(() => (retries() >= 2 ? Option.some(retries()) : Option.none())),
        { timeout: "30 seconds" }
      )
      expect(lines).toBeGreaterThanOrEqual(2)
      expect(d.output()).toMatch(new RegExp(`ZooKeeper ${zk.connectString.replace(/\./g, "\\.")} unreachable \\(attempt 2\\)`))
      expect(yield* d.running).toBe(true)
      expect((yield* d.http("/ping")).status).toBe(200)
      expect(yield* d.http("/status")).toEqual({ status: 503, body: "starting\n" })

      yield* zk.start
      const m = yield* waitUntil("the dictator to become master once ZooKeeper is up", readMaster([zk.connectString], "it-unreachable"), {
        timeout: "60 seconds"
      })
      expect(m).toMatchObject({ name: "lonely", port: redis.port })
      const s = yield* waitUntil(
        "/status to say master",
        Effect.map(statusOf(d), (x) => (x.role === "master" ? Option.some(x) : Option.none()))
      )
      expect(s.session.state).toBe("connected")
      expect(yield* d.running).toBe(true)
      expect(d.output()).not.toMatch(/exited \(/)
    })
  )
})
