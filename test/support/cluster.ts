/**
 * Whole dictator nodes on one in-memory ZooKeeper ensemble and one simulated Redis world, for
 * deterministic tests driven by TestClock.
 *
 * Each node is `Node.make` built in a scope of its own, with its own ZooKeeper session
 * (`layerSession(ensemble)`), the world's Redis layer and a config from `DictatorConfig.fromObject`.
 * A test can then:
 * - `stop` a node: close its scope (graceful: the handover runs), driving the clock meanwhile;
 * - `crash` a node: its process is gone without running any finalizer: its Redis client hangs
 *   forever (it sends nothing any more), its ZooKeeper client is cut off and its session expired
 *   on the server (ephemerals deleted; or left to linger with `expire: false`). Its scope is
 *   never closed;
 * - read the master znode and the members through the ensemble, never through a node.
 *
 * Every log line of every node is kept in `logs` (with the node's name); set DICTATOR_TEST_LOGS=1
 * to print them as they come.
 */
import { Context, Effect, Exit, Fiber, HashMap, Layer, Logger, LogLevel, Option, Random, Scheduler, Scope, TestClock } from "effect"
import { DictatorConfig } from "../../src/Config.js"
import * as Node from "../../src/Node.js"
import { FailsafeAskError, FailsafeTransport, type FailsafeTransportService } from "../../src/node/Failsafe.js"
import { servicePaths, type ServicePaths } from "../../src/Paths.js"
import { formatAddress, Redis, type RedisAddress, type RedisConnection, type RedisService, RedisUnavailable } from "../../src/Redis.js"
import type { DuplicateNode } from "../../src/node/Store.js"
import { ZooKeeper, type ZooKeeperService } from "../../src/ZooKeeper.js"
import { layer as redisLayer, RedisWorld, type ServerOptions } from "./InMemoryRedis.js"
import { layerSession, ZkEnsemble } from "./InMemoryZooKeeper.js"

export interface NodeSpec {
  readonly name: string
  readonly host: string
  readonly port?: number
  readonly priority?: number
  /** Seconds (node.loading_timeout). */
  readonly loadingTimeout?: number
  /** Top-level config keys for this node only (timings …), over the cluster's. */
  readonly config?: Readonly<Record<string, unknown>>
}

export interface ClusterNode {
  readonly name: string
  readonly address: RedisAddress
  /** The node's ZooKeeper client, as the ensemble knows it (for disconnect/reconnect/expire). */
  readonly zk: ZooKeeperService
  /** Closing it stops the node gracefully (prefer `cluster.stop`, which drives the clock). */
  readonly scope: Scope.CloseableScope
  readonly api: Node.DictatorNodeService
  /** Server-side id of the node's current session. */
  readonly sessionId: () => string
  readonly state: () => "running" | "stopped" | "crashed"
  /** This node's requests to the Redis at `to` are refused (or reach it again with `false`). */
  readonly cutRedis: (to: RedisAddress, cut?: boolean) => Effect.Effect<void>
}

export interface LogLine {
  readonly node: string
  readonly level: string
  readonly message: string
}

export interface MasterZnode {
  readonly raw: string
  /** The parsed JSON, or null when it is not JSON. */
  readonly json: Record<string, unknown> | null
  readonly owner: string
  readonly czxid: string
  readonly version: number
}

export interface Cluster {
  readonly ensemble: ZkEnsemble
  readonly world: RedisWorld
  readonly svc: string
  readonly paths: ServicePaths
  readonly logs: ReadonlyArray<LogLine>
  readonly nodes: ReadonlyArray<ClusterNode>
  /** Adds the node's Redis server to the world (a master, unless `redis.replicaOf`) and starts the node. */
  readonly add: (spec: NodeSpec, redis?: ServerOptions) => Effect.Effect<ClusterNode, DuplicateNode>
  /** Starts a node on a Redis server already in the world (or never added: refused). */
  readonly start: (spec: NodeSpec) => Effect.Effect<ClusterNode, DuplicateNode>
  readonly stop: (node: ClusterNode) => Effect.Effect<void>
  /**
   * The node's process dies: no finalizer runs, its Redis client hangs forever, its ZooKeeper
   * client is cut off. Its session is expired at once on the server (ephemerals deleted) unless
   * `expire: false`: then they linger as after a real crash, until `ensemble.expire(sessionId)`.
   */
  readonly crash: (node: ClusterNode, options?: { readonly expire?: boolean }) => Effect.Effect<void>
  readonly node: (name: string) => ClusterNode
  readonly master: () => MasterZnode | null
  /** `name` of the master record, if it is a JSON record with one. */
  readonly masterName: () => string | null
  readonly members: () => ReadonlyArray<string>
  /** Runs `effect` in a fiber while moving the clock by `step` until it is done (at most `max` ms). */
  readonly driven: <A, E>(effect: Effect.Effect<A, E>, options?: { readonly step?: number; readonly max?: number }) => Effect.Effect<A, E>
  /** Moves the clock by `step` until `cond` holds; dies naming `label` after `within` ms. Returns the ms waited. */
  readonly waitUntil: (label: string, cond: () => boolean | Effect.Effect<boolean>, options?: { readonly within?: number; readonly step?: number }) => Effect.Effect<number>
  /** Everything the ensemble and the nodes know, for failure messages. */
  readonly describe: () => Effect.Effect<string>
  /** Runs `effect` (e.g. a node built by the test itself) with its logs kept in `logs` under `name`. */
  readonly withLogs: (name: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** Fibers always run on microtasks (never deferred to a timer): see withTestSettings. */
const microtaskScheduler = new Scheduler.MixedScheduler(Number.MAX_SAFE_INTEGER)

/**
 * The settings every test of whole nodes runs with: fixed jitter, and a TestClock that yields
 * to other fibers with `setImmediate` instead of `setTimeout(0)`.
 *
 * Why the last one: `TestClock.adjust` lets every fiber settle before each wake-up by waiting for
 * a few timer turns (`setTimeout(0)`, at least 1 ms each in Node). Dictator nodes sleep a lot
 * (health, publishing, observing, command timeouts), so that is seconds of real time per second
 * of test time. The in-memory ZooKeeper and Redis never wait on real I/O or timers, and with a
 * scheduler that always runs fibers on microtasks, one `setImmediate` turn comes only once every
 * runnable fiber has run: the same guarantee, without the 1 ms clamp. If a later Effect renames
 * the TestClock's private `yieldTimer`, this does nothing and the tests are merely slower.
 */
export const withTestSettings = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.gen(function* () {
    const clock = yield* TestClock.testClock()
    if ("yieldTimer" in clock) {
      ;(clock as { yieldTimer: Effect.Effect<void> }).yieldTimer = Effect.async<void>((resume) => {
        const t = setImmediate(() => resume(Effect.void))
        return Effect.sync(() => clearImmediate(t))
      })
    }
    return yield* effect
  }).pipe(Effect.withScheduler(microtaskScheduler), Effect.withRandom(Random.fixed([0.5])))

export const defaultConfig: Readonly<Record<string, unknown>> = {
  check_interval_ms: 100,
  check_timeout_ms: 250,
  down_after_ms: 1000,
  election_step_ms: 150,
  fence_after_ms: 1000,
  handover_timeout_ms: 3000,
  zk_session_timeout_ms: 6000
}

const hangs = <A, E>(dead: () => boolean, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.suspend(() => (dead() ? Effect.never : effect))

/**
 * A Redis service whose connections stop answering (forever) once the node has crashed, and
 * whose requests to an address in `cut` are refused (a firewall between this node and that Redis).
 */
const mortal = (service: RedisService, dead: () => boolean, cut: ReadonlySet<string>): RedisService => ({
  connect: (address, timeout) =>
    Effect.map(service.connect(address, timeout), (c): RedisConnection => {
      const reach = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | RedisUnavailable> =>
        hangs(
          dead,
          Effect.suspend((): Effect.Effect<A, E | RedisUnavailable> =>
            cut.has(formatAddress(address))
              ? Effect.fail(new RedisUnavailable({ address: formatAddress(address), reason: "refused", detail: "connect ECONNREFUSED (cut by the test)" }))
              : effect
          )
        )
      return {
        address: c.address,
        ping: reach(c.ping),
        replication: reach(c.replication),
        check: reach(c.check),
        serverVersion: reach(c.serverVersion),
        replicaOf: (target) => reach(c.replicaOf(target)),
        pauseWrites: (duration) => reach(c.pauseWrites(duration)),
        unpause: reach(c.unpause),
        configSet: (key, value) => reach(c.configSet(key, value)),
        killClients: reach(c.killClients),
        closed: hangs(dead, c.closed)
      }
    })
})

const text = (message: unknown): string =>
  Array.isArray(message) ? message.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ") : String(message)

export const makeCluster = (options: { readonly svc?: string; readonly config?: Readonly<Record<string, unknown>> } = {}) =>
  Effect.gen(function* () {
    const ensemble = yield* ZkEnsemble.make
    const world = yield* RedisWorld.make
    const svc = options.svc ?? "svc"
    const paths = servicePaths(svc)
    const logs: Array<LogLine> = []
    const nodes: Array<ClusterNode> = []
    const setState = new Map<ClusterNode, (s: "stopped" | "crashed") => void>()
    const print = process.env["DICTATOR_TEST_LOGS"] === "1"

    const collector = Logger.make(({ annotations, date, logLevel, message }) => {
      const line = { node: String(Option.getOrElse(HashMap.get(annotations, "node"), () => "-")), level: logLevel.label, message: text(message) }
      logs.push(line)
      if (print) console.log(`${date.getTime()} ${line.node} ${line.level} ${line.message}`)
    })

    const withLogs =
      (name: string) =>
      <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        effect.pipe(
          Effect.annotateLogs({ node: name }),
          Effect.provide(Layer.merge(Logger.add(collector), Logger.minimumLogLevel(LogLevel.Debug)))
        )

    const driven = <A, E>(effect: Effect.Effect<A, E>, opts: { readonly step?: number; readonly max?: number } = {}) =>
      Effect.gen(function* () {
        const step = opts.step ?? 50
        const max = opts.max ?? 30_000
        const fiber = yield* Effect.fork(effect)
        for (let waited = 0; ; waited += step) {
          const exit = yield* Fiber.poll(fiber)
          if (Option.isSome(exit)) return yield* exit.value
          if (waited >= max) return yield* Effect.dieMessage(`driven: not done after ${max} ms of test time`)
          yield* TestClock.adjust(step)
        }
      })

    /**
     * Failsafe requests go straight to the node at the member record's HTTP host, if it runs
     * (a crashed or stopped node's port is closed: refused at once).
     */
    const failsafeTransport: FailsafeTransportService = {
      ask: (member, request, timeoutMs) =>
        Effect.suspend(() => {
          const host = member.http?.replace(/^https?:\/\//, "").split(":")[0]
          const target = [...nodes].reverse().find((n) => n.address.host === host)
          const refused = (reason: string) => Effect.fail(new FailsafeAskError({ member: member.name, reason }))
          if (target === undefined || target.state() !== "running") return refused(`${member.http}: connect ECONNREFUSED`)
          return target.api.failsafe(request).pipe(
            Effect.annotateLogs({ node: target.name }),
            Effect.map((v) => ({ answer: v.yes ? ("yes" as const) : ("no" as const), reason: v.reason })),
            Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new FailsafeAskError({ member: member.name, reason: "no answer in time" }) })
          )
        })
    }

    const start = (spec: NodeSpec) =>
      Effect.gen(function* () {
        const address = { host: spec.host, port: spec.port ?? 6379 }
        const scope = yield* Scope.make()
        const zkContext = yield* Layer.buildWithScope(layerSession(ensemble), scope)
        const zk = Context.get(zkContext, ZooKeeper)
        let state: "running" | "stopped" | "crashed" = "running"
        const dead = () => state === "crashed"
        const cut = new Set<string>()
        const redis = Layer.map(redisLayer(world), (ctx) => Context.make(Redis, mortal(Context.get(ctx, Redis), dead, cut)))
        const config = DictatorConfig.fromObject({
          ...defaultConfig,
          ...options.config,
          ...spec.config,
          svc_name: svc,
          node: {
            name: spec.name,
            host: address.host,
            port: address.port,
            ...(spec.priority === undefined ? {} : { priority: spec.priority }),
            ...(spec.loadingTimeout === undefined ? {} : { loading_timeout: spec.loadingTimeout })
          }
        })
        const api = yield* Node.make.pipe(
          Effect.provideService(ZooKeeper, zk),
          Effect.provideService(FailsafeTransport, failsafeTransport),
          Effect.provide(Layer.merge(redis, DictatorConfig.layerValue(config))),
          Scope.extend(scope),
          withLogs(spec.name)
        )
        const node: ClusterNode = {
          name: spec.name,
          address,
          zk,
          scope,
          api,
          sessionId: () => ensemble.sessionIdOf(zk),
          state: () => state,
          cutRedis: (to, isCut = true) => Effect.sync(() => void (isCut ? cut.add(formatAddress(to)) : cut.delete(formatAddress(to))))
        }
        setState.set(node, (s) => void (state = s))
        nodes.push(node)
        return node
      })

    const stop = (node: ClusterNode) =>
      Effect.suspend(() => {
        if (node.state() !== "running") return Effect.void
        setState.get(node)?.("stopped")
        return driven(Scope.close(node.scope, Exit.void))
      })

    const crash = (node: ClusterNode, opts: { readonly expire?: boolean } = {}) =>
      Effect.suspend(() => {
        if (node.state() !== "running") return Effect.void
        setState.get(node)?.("crashed")
        return Effect.zipRight(ensemble.disconnect(node.zk), opts.expire === false ? Effect.void : ensemble.expire(node.zk))
      })

    const master = (): MasterZnode | null => {
      const n = ensemble.get(paths.master)
      if (Option.isNone(n)) return null
      const raw = new TextDecoder().decode(n.value.data)
      let json: Record<string, unknown> | null = null
      try {
        const parsed: unknown = JSON.parse(raw)
        json = parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : null
      } catch {
        json = null
      }
      return { raw, json, owner: n.value.stat.ephemeralOwner, czxid: n.value.stat.czxid, version: n.value.stat.version }
    }

    const describe = () =>
      Effect.gen(function* () {
        const lines = ensemble.dump().map((n) => `  ${n.path} owner=${n.stat.ephemeralOwner} czxid=${n.stat.czxid} ${n.data}`)
        for (const node of nodes) {
          const s = yield* world.inspect(node.address).pipe(Effect.option)
          const status = node.state() === "running" ? yield* node.api.status : null
          lines.push(
            `  node ${node.name} (${node.state()}) role=${status?.role ?? "-"} plan=${status?.plan?._tag ?? "-"} health=${status?.health._tag ?? "-"}` +
              (Option.isSome(s)
                ? ` redis ${formatAddress(node.address)} ${s.value.state} ${s.value.role}${s.value.master ? ` of ${formatAddress(s.value.master)}` : ""} offset=${s.value.offset} paused=${s.value.paused}`
                : "")
          )
        }
        return lines.join("\n")
      })

    const waitUntil = (
      label: string,
      cond: () => boolean | Effect.Effect<boolean>,
      opts: { readonly within?: number; readonly step?: number } = {}
    ) =>
      Effect.gen(function* () {
        const within = opts.within ?? 10_000
        const step = opts.step ?? 50
        const check = Effect.suspend(() => {
          const r = cond()
          return typeof r === "boolean" ? Effect.succeed(r) : r
        })
        for (let waited = 0; ; waited += step) {
          if (yield* check) return waited
          if (waited >= within) {
            return yield* Effect.dieMessage(`waitUntil: "${label}" not true after ${within} ms of test time\n${yield* describe()}`)
          }
          yield* TestClock.adjust(step)
        }
      })

    // Whatever still runs when the test ends is stopped, quickly: cut off from ZooKeeper first, so
    // no handover waits for anything (the tests that want a graceful stop call `stop`).
    yield* Effect.addFinalizer(() =>
      Effect.forEach(
        nodes.filter((n) => n.state() === "running"),
        (n) => Effect.zipRight(ensemble.disconnect(n.zk), stop(n)),
        { discard: true }
      )
    )

    const cluster: Cluster = {
      ensemble,
      world,
      svc,
      paths,
      logs,
      nodes,
      add: (spec, redis) =>
        Effect.zipRight(world.addServer(spec.host, spec.port ?? 6379, redis), start(spec)),
      start,
      stop,
      crash,
      node: (name) => {
        const n = [...nodes].reverse().find((x) => x.name === name)
        if (n === undefined) throw new Error(`cluster: no node ${name}`)
        return n
      },
      master,
      masterName: () => {
        const name = master()?.json?.["name"]
        return typeof name === "string" ? name : null
      },
      members: () => ensemble.children(paths.members),
      driven,
      waitUntil,
      describe,
      withLogs
    }
    return cluster
  })
