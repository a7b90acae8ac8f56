/**
 * Real servers for integration tests, chaos tests, benchmarks and examples: ZooKeeper (standalone
 * or an ensemble), redis-server and the built dictator binary, each a scoped resource.
 *
 * Every process is acquired with `Effect.acquireRelease`: when the scope closes (test passed,
 * failed or was interrupted) it gets SIGTERM, then SIGKILL if it has not exited within 10 s, and
 * its temp dir is removed. As a last line of defence, children still alive when this Node process
 * exits are SIGKILLed from a `process.on("exit")` hook.
 *
 * Everything uses the real clock: use it from `it.live` / `it.scopedLive`, or from plain scripts
 * through `runScoped`.
 *
 * Environment knobs:
 * - `ZOOKEEPER_CLASSPATH`: Java classpath of ZooKeeper (default: Debian's
 *   /usr/share/java/zookeeper.jar plus the slf4j → log4j 1.2 binding when installed).
 * - `JAVA`: the java binary (default `java`); `REDIS_SERVER`: the redis-server binary.
 * - `DICTATOR_MAIN`: the dictator entry point (default `<repo>/dist/dictator.cjs`, the bundle
 *   `npm run build` makes and the `dictator` bin runs; `dist/src/main.js` is the unbundled one).
 * - `DICTATOR_NODE_ARGS`: node flags given before it (space-separated), for measurements; by
 *   default those of the `dictator` bin (bin/node-options).
 * - `HARNESS_ECHO=1`: also copy every child's output, line-prefixed, to this process's stderr.
 * - `HARNESS_DETACH=1`: spawn children in their own process group, so a terminal's Ctrl-C reaches
 *   only this process, which then stops them in order (the demo sets it). Default: same group,
 *   so a Ctrl-C on vitest also reaches every server directly.
 *
 * Placement: ZooKeeper, Redis and the dictator can run inside a Linux network namespace
 * (`ip netns exec NS …`, see test/support/netns.ts), bound to that namespace's address instead of
 * 127.0.0.1. Without a placement everything stays on loopback as before.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, readFileSync, rmSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Cause, Clock, Data, Duration, Effect, Option, Scope } from "effect"
import { Redis as IORedis } from "ioredis"
import zookeeper from "node-zookeeper-client"
import { connectionString } from "../../src/ZooKeeperClient.js"

// ---------------------------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------------------------

/**
 * Where a server runs: inside network namespace `netns` (spawned as `ip netns exec NETNS cmd …`),
 * listening on `host` (an address of that namespace, reachable from this process).
 */
export interface Placement {
  readonly netns: string
  readonly host: string
}

export class HarnessError extends Data.TaggedError("HarnessError")<{ readonly message: string }> {}

const errorText = (e: unknown): string =>
  e instanceof Error ? e.message : typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)

const harnessError = (message: string) => new HarnessError({ message })

const tail = (s: string, max = 4000): string => (s.length <= max ? s : `…${s.slice(s.length - max)}`)

/**
 * Polls `probe` with the real clock until it yields `Some`. A failing probe counts as "not yet";
 * the last failure is quoted in the timeout error, which names `what`.
 */
export const waitUntil = <A, E, R>(
  what: string,
  probe: Effect.Effect<Option.Option<A>, E, R>,
  opts?: { readonly timeout?: Duration.DurationInput; readonly interval?: Duration.DurationInput }
): Effect.Effect<A, HarnessError, R> => {
  const timeout = Duration.decode(opts?.timeout ?? "30 seconds")
  const interval = Duration.decode(opts?.interval ?? "100 millis")
  return Effect.suspend(() => {
    let last = "no answer yet"
    const attempt: Effect.Effect<Option.Option<A>, never, R> = probe.pipe(
      Effect.catchAllCause((cause) => {
        last = tail(Cause.pretty(cause).split("\n")[0] ?? "failure", 300)
        return Effect.succeed(Option.none<A>())
      }),
      Effect.tap((o) => (Option.isNone(o) ? Effect.sleep(interval) : Effect.void))
    )
    return attempt.pipe(
      Effect.repeat({ until: Option.isSome }),
      Effect.map((o) => (o as Option.Some<A>).value),
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => harnessError(`timed out after ${Duration.format(timeout)} waiting for ${what} (last: ${last})`)
      }),
      Effect.withClock(Clock.make()) // the real clock, even under a TestClock
    )
  })
}

/** Runs a scoped program and closes the scope (stopping every server) when it ends. For scripts. */
export const runScoped = <A, E>(program: Effect.Effect<A, E, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(program))

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

const handedPorts = new Set<number>()

const bindEphemeral = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once("error", reject)
    srv.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const addr = srv.address()
      const port = typeof addr === "object" && addr !== null ? addr.port : 0
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("no port assigned"))))
    })
  })

/** A port that was free on 127.0.0.1 a moment ago and was never handed out before by this process. */
export const freePort: Effect.Effect<number> = Effect.promise(async () => {
  for (let i = 0; i < 100; i++) {
    const port = await bindEphemeral()
    if (!handedPorts.has(port)) {
      handedPorts.add(port)
      return port
    }
  }
  throw new Error("freePort: no fresh port after 100 attempts")
})

// ---------------------------------------------------------------------------------------------
// Managed processes
// ---------------------------------------------------------------------------------------------

export interface ManagedProcess {
  readonly pid: () => number | undefined
  readonly signal: (sig: NodeJS.Signals) => Effect.Effect<void>
  readonly kill9: Effect.Effect<void>
  /** SIGTERM, wait ≤ 10 s, then SIGKILL. */
  readonly stop: Effect.Effect<void>
  /**
   * (Re)starts with the same args, dir and port, and waits until the server is ready again. A
   * no-op while running. Dies (defect carrying a HarnessError with the output) if the process
   * exits or is not ready in time.
   */
  readonly start: Effect.Effect<void>
  readonly running: Effect.Effect<boolean>
  /** stdout + stderr so far (bounded, most recent kept), for debugging failed tests. */
  readonly output: () => string
  /** Waits for the current run to exit: its exit code, null if killed by a signal or never started. */
  readonly exitCode: Effect.Effect<number | null>
}

const liveChildren = new Set<ChildProcess>()
const liveDirs = new Set<string>()
let exitHookInstalled = false
/** Last resort when the process exits without closing its scopes: SIGKILL children, remove temp dirs. */
const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on("exit", () => {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 2 })
      } catch {
        // best effort
      }
    }
  })
}

const OUTPUT_LIMIT = 1024 * 1024
const echo = process.env.HARNESS_ECHO === "1" || process.env.HARNESS_ECHO === "true"

interface Run {
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  done: boolean
}

interface ProcessSpec {
  readonly label: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  readonly env?: NodeJS.ProcessEnv
  /** One readiness probe: succeeds with true when the server answers. */
  readonly ready: Effect.Effect<boolean>
  readonly readyTimeout: Duration.DurationInput
  /** Shown when the command cannot be spawned at all (ENOENT …). */
  readonly hint: string
  /**
   * Run inside this network namespace. `ip netns exec` execs the command after setns, so the
   * child's pid is the server's own and signals reach it directly; it gets a process group of its
   * own, so a Ctrl-C on vitest does not race the test bed's orderly teardown.
   */
  readonly netns?: string
}

interface Managed {
  readonly proc: ManagedProcess
  /** Spawns (if not running); never waits. */
  readonly spawnNow: Effect.Effect<void, HarnessError>
  /** Waits for readiness of the current run. */
  readonly awaitReady: Effect.Effect<void, HarnessError>
}

const makeManaged = (spec: ProcessSpec): Managed => {
  installExitHook()
  let out = ""
  let run: Run | undefined
  let runs = 0

  const append = (chunk: string) => {
    out += chunk
    if (out.length > OUTPUT_LIMIT) out = out.slice(out.length - OUTPUT_LIMIT / 2)
    if (echo) {
      for (const line of chunk.split("\n")) if (line.length > 0) process.stderr.write(`[${spec.label}] ${line}\n`)
    }
  }

  const isRunning = () => run !== undefined && !run.done

  const spawnNow: Effect.Effect<void, HarnessError> = Effect.suspend(() => {
    if (isRunning()) return Effect.void
    runs++
    if (runs > 1) append(`\n----- harness: restart #${runs - 1} -----\n`)
    let child: ChildProcess
    try {
      const [command, args] =
        spec.netns === undefined
          ? [spec.command, [...spec.args]]
          : ["ip", ["netns", "exec", spec.netns, spec.command, ...spec.args]]
      child = spawn(command, args, {
        cwd: spec.cwd,
        env: spec.env ?? process.env,
        stdio: ["ignore", "pipe", "pipe"],
        detached: spec.netns !== undefined || process.env.HARNESS_DETACH === "1"
      })
    } catch (e) {
      return Effect.fail(harnessError(`${spec.label}: cannot spawn ${spec.command}: ${errorText(e)}. ${spec.hint}`))
    }
    let resolveExit!: (code: number | null) => void
    const exited = new Promise<number | null>((r) => (resolveExit = r))
    const thisRun: Run = { child, exited, done: false }
    const finish = (code: number | null) => {
      if (thisRun.done) return
      thisRun.done = true
      liveChildren.delete(child)
      resolveExit(code)
    }
    child.stdout?.setEncoding("utf8").on("data", append)
    child.stderr?.setEncoding("utf8").on("data", append)
    child.on("exit", (code, signal) => {
      append(`\n----- harness: ${spec.label} exited (${signal ?? `code ${code}`}) -----\n`)
      finish(code)
    })
    child.on("error", (e) => {
      append(`\n----- harness: ${spec.label} error: ${e.message} -----\n`)
      if (child.pid === undefined) finish(null)
    })
    if (child.pid !== undefined) liveChildren.add(child)
    run = thisRun
    return Effect.void
  })

  const awaitReady: Effect.Effect<void, HarnessError> = Effect.suspend(() => {
    const current = run
    if (current === undefined) return Effect.fail(harnessError(`${spec.label} was never started`))
    const probe = Effect.suspend(() => {
      if (current.done) {
        return Effect.fail(
          harnessError(`${spec.label} exited before it was ready. ${spec.hint}\n--- output ---\n${tail(out)}`)
        )
      }
      return spec.ready.pipe(
        Effect.map((ok) => (ok ? Option.some(true) : Option.none())),
        Effect.catchAllCause(() => Effect.succeed(Option.none<boolean>()))
      )
    })
    return probe.pipe(
      Effect.tap((o) => (Option.isNone(o) ? Effect.sleep("100 millis") : Effect.void)),
      Effect.repeat({ until: Option.isSome }),
      Effect.timeoutFail({
        duration: spec.readyTimeout,
        onTimeout: () =>
          harnessError(
            `${spec.label} not ready within ${Duration.format(Duration.decode(spec.readyTimeout))}\n--- output ---\n${tail(out)}`
          )
      }),
      Effect.asVoid
    )
  })

  // Interruptible wait: `stop` runs uninterruptibly, where a timeout could not cut it short.
  const waitExit = (current: Run, within: Duration.DurationInput): Effect.Effect<boolean> =>
    Effect.interruptible(Effect.promise(() => current.exited)).pipe(
      Effect.timeoutOption(within),
      Effect.map(Option.isSome)
    )

  const signal = (sig: NodeJS.Signals): Effect.Effect<void> =>
    Effect.sync(() => {
      if (run !== undefined && !run.done) {
        try {
          // In a namespace the process leads a group of its own: signal the whole group, so
          // nothing it started outlives it.
          const pid = run.child.pid
          if (spec.netns !== undefined && pid !== undefined) process.kill(-pid, sig)
          else run.child.kill(sig)
        } catch {
          // raced with exit
        }
      }
    })

  const kill9: Effect.Effect<void> = Effect.suspend(() => {
    const current = run
    if (current === undefined || current.done) return Effect.void
    return signal("SIGKILL").pipe(Effect.zipRight(waitExit(current, "10 seconds")), Effect.asVoid)
  })

  const stop: Effect.Effect<void> = Effect.suspend(() => {
    const current = run
    if (current === undefined || current.done) return Effect.void
    // SIGCONT first: a process stopped by a test (SIGSTOP) would never act on SIGTERM.
    return signal("SIGCONT").pipe(
      Effect.zipRight(signal("SIGTERM")),
      Effect.zipRight(waitExit(current, "10 seconds")),
      Effect.flatMap((exited) => (exited ? Effect.void : kill9))
    )
  }).pipe(Effect.uninterruptible)

  const proc: ManagedProcess = {
    pid: () => (run !== undefined && !run.done ? run.child.pid : undefined),
    signal,
    kill9,
    stop,
    start: spawnNow.pipe(Effect.zipRight(awaitReady), Effect.orDie),
    running: Effect.sync(isRunning),
    output: () => out,
    exitCode: Effect.suspend(() => (run === undefined ? Effect.succeed(null) : Effect.promise(() => run!.exited)))
  }
  return { proc, spawnNow, awaitReady }
}

/** A temp dir removed (recursively) when the scope closes. */
export const tempDir = (prefix: string): Effect.Effect<string, HarnessError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        installExitHook()
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), `dictator-${prefix}-`))
        liveDirs.add(dir)
        return dir
      },
      catch: (e) => harnessError(`cannot create a temp dir: ${errorText(e)}`)
    }),
    (dir) =>
      Effect.tryPromise(() => fs.rm(dir, { recursive: true, force: true, maxRetries: 3 })).pipe(
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => liveDirs.delete(dir)))
      )
  )

export const writeFile = (file: string, text: string): Effect.Effect<void, HarnessError> =>
  Effect.tryPromise({
    try: () => fs.writeFile(file, text),
    catch: (e) => harnessError(`cannot write ${file}: ${errorText(e)}`)
  })

/**
 * Spawns the process as a scoped resource (stopped when the scope closes), then waits until it is
 * ready. The readiness wait is outside the acquire, so it stays interruptible.
 */
const launch = (m: Managed): Effect.Effect<void, HarnessError, Scope.Scope> =>
  Effect.acquireRelease(m.spawnNow, () => m.proc.stop).pipe(Effect.zipRight(m.awaitReady))

// ---------------------------------------------------------------------------------------------
// TCP helpers
// ---------------------------------------------------------------------------------------------

/** Sends `text` to host:port (default 127.0.0.1) and collects everything until the server closes (≤ 2 s). */
const tcpExchange = (
  port: number,
  text: string,
  timeoutMs = 2000,
  host = "127.0.0.1"
): Effect.Effect<string, HarnessError> =>
  Effect.async<string, HarnessError>((resume) => {
    let data = ""
    let settled = false
    const socket = net.createConnection({ host, port })
    const done = (r: Effect.Effect<string, HarnessError>) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resume(r)
    }
    const timer = setTimeout(() => done(Effect.fail(harnessError(`no answer from ${host}:${port}`))), timeoutMs)
    socket.setEncoding("utf8")
    socket.on("connect", () => socket.write(text))
    socket.on("data", (d: string) => (data += d))
    socket.on("end", () => done(Effect.succeed(data)))
    socket.on("close", () => done(Effect.succeed(data)))
    socket.on("error", (e) => done(Effect.fail(harnessError(`${host}:${port}: ${e.message}`))))
    return Effect.sync(() => {
      settled = true
      clearTimeout(timer)
      socket.destroy()
    })
  })

// ---------------------------------------------------------------------------------------------
// ZooKeeper
// ---------------------------------------------------------------------------------------------

export interface ZkServer extends ManagedProcess {
  readonly id: number
  readonly clientPort: number
  /** The address it serves clients on: 127.0.0.1 unless placed in a network namespace. */
  readonly host: string
  /** "host:port" */
  readonly connectString: string
  /** From the `srvr` four-letter word; "down" when it does not answer or is not serving. */
  readonly mode: Effect.Effect<"leader" | "follower" | "standalone" | "down">
}

const zkClasspath = (): string => {
  const fromEnv = process.env.ZOOKEEPER_CLASSPATH
  if (fromEnv !== undefined && fromEnv.length > 0) return fromEnv
  const jars = [
    "/usr/share/java/zookeeper.jar",
    // ZooKeeper logs through slf4j; Debian's jar carries no binding, so add log4j 1.2 if present.
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar"
  ]
  return jars.filter((j) => existsSync(j)).join(":")
}

const ZK_HINT =
  "Is ZooKeeper installed? Run `bash test/run.sh --setup-only` (Debian: apt-get install zookeeper) or set ZOOKEEPER_CLASSPATH."

const LOG4J = `log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
`

// ZooKeeper ≥ 3.8 as shipped by Apache (e.g. Nix) logs through logback instead.
const LOGBACK = `<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level [%thread:%logger{0}] - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="CONSOLE"/></root>
</configuration>
`

const zkMode = (clientPort: number, host = "127.0.0.1"): Effect.Effect<"leader" | "follower" | "standalone" | "down"> =>
  tcpExchange(clientPort, "srvr", 2000, host).pipe(
    Effect.map((text) => {
      const m = /^Mode:\s*(\w+)/m.exec(text)
      const mode = m?.[1]
      return mode === "leader" || mode === "follower" || mode === "standalone" ? mode : ("down" as const)
    }),
    Effect.orElseSucceed(() => "down" as const)
  )

const zkRuok = (clientPort: number, host = "127.0.0.1"): Effect.Effect<boolean> =>
  tcpExchange(clientPort, "ruok", 2000, host).pipe(
    Effect.map((s) => s.trim() === "imok"),
    Effect.orElseSucceed(() => false)
  )

/**
 * Hex ids (lower case, no leading zeros, no 0x) of the sessions connected to this server now,
 * from the `cons` four-letter word: the server's own view of which client uses it.
 * Fails when the server does not answer (frozen or down).
 */
export const zkSessionsOn = (clientPort: number): Effect.Effect<ReadonlySet<string>, HarnessError> =>
  tcpExchange(clientPort, "cons", 1000).pipe(
    Effect.map((text) => new Set([...text.matchAll(/sid=0x([0-9a-f]+)/gi)].map((m) => m[1]!.toLowerCase().replace(/^0+(?=.)/, ""))))
  )

interface ZkPlan {
  readonly id: number
  readonly clientPort: number
  readonly peerPort: number
  readonly electionPort: number
  /** Bound to this address (default 127.0.0.1), inside `netns` when given. */
  readonly host?: string
  readonly netns?: string
}

/** Writes the config of one server and returns its (not yet spawned) managed process. */
const prepareZk = (
  plan: ZkPlan,
  all: ReadonlyArray<ZkPlan> | undefined,
  tickTime: number
): Effect.Effect<{ readonly server: ZkServer; readonly managed: Managed }, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const classpath = zkClasspath()
    if (classpath.length === 0) return yield* Effect.fail(harnessError(`ZooKeeper jar not found. ${ZK_HINT}`))
    const dir = yield* tempDir(`zk${plan.id}`)
    const host = plan.host ?? "127.0.0.1"
    const dataDir = path.join(dir, "data")
    yield* Effect.promise(() => fs.mkdir(dataDir, { recursive: true }))
    const lines = [
      `tickTime=${tickTime}`,
      `dataDir=${dataDir}`,
      `clientPort=${plan.clientPort}`,
      `clientPortAddress=${host}`,
      "admin.enableServer=false",
      "4lw.commands.whitelist=*",
      "initLimit=5",
      "syncLimit=2",
      // Snapshots and logs stay small; nothing to purge in a test.
      "autopurge.purgeInterval=0"
    ]
    if (all !== undefined) {
      for (const p of all) lines.push(`server.${p.id}=${p.host ?? "127.0.0.1"}:${p.peerPort}:${p.electionPort}`)
      yield* writeFile(path.join(dataDir, "myid"), `${plan.id}\n`)
    }
    const cfg = path.join(dir, "zoo.cfg")
    yield* writeFile(cfg, lines.join("\n") + "\n")
    const log4j = path.join(dir, "log4j.properties")
    yield* writeFile(log4j, LOG4J)
    const logback = path.join(dir, "logback.xml")
    yield* writeFile(logback, LOGBACK)
    const managed = makeManaged({
      label: `zookeeper#${plan.id}:${plan.clientPort}`,
      ...(plan.netns === undefined ? {} : { netns: plan.netns }),
      command: process.env.JAVA ?? "java",
      args: [
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Xss512k",
        "-Djava.net.preferIPv4Stack=true",
        `-Dlog4j.configuration=file:${log4j}`,
        `-Dlogback.configurationFile=${logback}`,
        "-Dzookeeper.jmx.log4j.disable=true",
        "-Dzookeeper.admin.enableServer=false",
        "-cp",
        classpath,
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        cfg
      ],
      cwd: dir,
      // A standalone server is ready once it serves (`srvr` names its mode; `ruok` answers
      // earlier). An ensemble member is ready once it runs: it may have no quorum to join.
      ready:
        all === undefined
          ? zkMode(plan.clientPort, host).pipe(Effect.map((m) => m === "standalone"))
          : zkRuok(plan.clientPort, host),
      readyTimeout: "60 seconds",
      hint: ZK_HINT
    })
    const server: ZkServer = {
      ...managed.proc,
      id: plan.id,
      clientPort: plan.clientPort,
      host,
      connectString: `${host}:${plan.clientPort}`,
      mode: zkMode(plan.clientPort, host)
    }
    return { server, managed }
  })

/** A standalone ZooKeeper; resolves once it answers `ruok` with `imok`. */
export const zooKeeper = (opts?: { readonly tickTime?: number }): Effect.Effect<ZkServer, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const clientPort = yield* freePort
    const { managed, server } = yield* prepareZk({ id: 1, clientPort, peerPort: 0, electionPort: 0 }, undefined, opts?.tickTime ?? 2000)
    yield* launch(managed)
    return server
  })

/**
 * A ZooKeeper ensemble of `size` servers (default 3) on 127.0.0.1; resolves once every server is
 * serving as leader or follower, with exactly one leader. With `placement` (one per server), each
 * server runs in its own network namespace on its own address, on the standard ports 2181, 2888
 * and 3888 (nothing else listens there).
 */
export const zooKeeperEnsemble = (
  size = 3,
  opts?: { readonly tickTime?: number; readonly placement?: ReadonlyArray<Placement> }
): Effect.Effect<
  { readonly servers: ReadonlyArray<ZkServer>; readonly hosts: ReadonlyArray<string> },
  HarnessError,
  Scope.Scope
> =>
  Effect.gen(function* () {
    if (!Number.isInteger(size) || size < 1) return yield* Effect.fail(harnessError(`bad ensemble size ${size}`))
    const placement = opts?.placement
    if (placement !== undefined && placement.length !== size) {
      return yield* Effect.fail(harnessError(`${placement.length} placements for an ensemble of ${size}`))
    }
    const plans: Array<ZkPlan> = []
    for (let id = 1; id <= size; id++) {
      const at = placement?.[id - 1]
      plans.push(
        at === undefined
          ? { id, clientPort: yield* freePort, peerPort: yield* freePort, electionPort: yield* freePort }
          : { id, clientPort: 2181, peerPort: 2888, electionPort: 3888, host: at.host, netns: at.netns }
      )
    }
    const prepared = yield* Effect.forEach(plans, (p) => prepareZk(p, size > 1 ? plans : undefined, opts?.tickTime ?? 2000))
    // Spawn all first (each registered for cleanup), then wait: the servers need each other.
    for (const p of prepared) yield* Effect.acquireRelease(p.managed.spawnNow, () => p.managed.proc.stop)
    yield* Effect.forEach(prepared, (p) => p.managed.awaitReady, { concurrency: "unbounded", discard: true })
    const servers = prepared.map((p) => p.server)
    if (size > 1) {
      yield* waitUntil(
        `a ZooKeeper quorum of ${size} (one leader, the others followers)`,
        Effect.forEach(servers, (s) => s.mode, { concurrency: "unbounded" }).pipe(
          Effect.map((modes) =>
            modes.filter((m) => m === "leader").length === 1 && modes.every((m) => m === "leader" || m === "follower")
              ? Option.some(modes)
              : Option.none()
          )
        ),
        { timeout: "60 seconds", interval: "200 millis" }
      )
    }
    return { servers, hosts: servers.map((s) => s.connectString) }
  })

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

export interface RedisServer extends ManagedProcess {
  /** 127.0.0.1 unless placed in a network namespace. */
  readonly host: string
  readonly port: number
  readonly dir: string
  /** One command over a short-lived connection; the reply as a string (arrays one item a line, nil as ""). */
  readonly cli: (...args: string[]) => Effect.Effect<string, HarnessError>
}

const replyText = (r: unknown): string =>
  r === null || r === undefined
    ? ""
    : Buffer.isBuffer(r)
      ? r.toString("utf8")
      : Array.isArray(r)
        ? r.map(replyText).join("\n")
        : String(r)

/** One Redis command over a fresh connection (≤ 5 s), closed afterwards. */
/**
 * A client for tests and measurements: connects when asked (`connect()`), never reconnects, never
 * queues or resends, so every failure surfaces at once through the command's promise. Its
 * 'error' events are the caller's to listen to.
 */
/** Credentials and TLS for the test's own clients of a secured Redis (node:tls options, PEM text). */
export interface RedisAccess {
  readonly username?: string
  readonly password?: string
  readonly tls?: {
    readonly ca?: string
    readonly cert?: string
    readonly key?: string
    readonly servername?: string
    readonly rejectUnauthorized?: boolean
  }
}

export const oneShotRedis = (
  address: { readonly host: string; readonly port: number },
  opts: { readonly connectTimeoutMs: number; readonly commandTimeoutMs?: number; readonly name?: string; readonly access?: RedisAccess }
): IORedis =>
  new IORedis({
    host: address.host,
    port: address.port,
    ...(opts.access?.username === undefined ? {} : { username: opts.access.username }),
    ...(opts.access?.password === undefined ? {} : { password: opts.access.password }),
    ...(opts.access?.tls === undefined ? {} : { tls: { ...opts.access.tls } }),
    lazyConnect: true,
    connectTimeout: opts.connectTimeoutMs,
    ...(opts.commandTimeoutMs === undefined ? {} : { commandTimeout: opts.commandTimeoutMs }),
    ...(opts.name === undefined ? {} : { connectionName: opts.name }),
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    enableReadyCheck: false,
    autoResendUnfulfilledCommands: false,
    retryStrategy: () => null,
    reconnectOnError: () => false
  })

export const redisCommand = (
  port: number,
  args: ReadonlyArray<string>,
  host = "127.0.0.1",
  access?: RedisAccess
): Effect.Effect<string, HarnessError> => {
  const [command, ...rest] = args
  if (command === undefined) return Effect.fail(harnessError("cli: no command"))
  return Effect.acquireUseRelease(
    Effect.sync(() =>
      oneShotRedis({ host, port }, { connectTimeoutMs: 2000, commandTimeoutMs: 5000, ...(access === undefined ? {} : { access }) })
    ),
    (client) =>
      Effect.tryPromise({
        try: async () => {
          // Swallow the emitter's 'error' events: failures surface through the promises below.
          client.on("error", () => {})
          await client.connect()
          return replyText(await client.call(command, ...rest))
        },
        catch: (e) => harnessError(`redis ${host}:${port} ${[command, ...rest].join(" ")}: ${errorText(e)}`)
      }),
    (client) => Effect.sync(() => client.disconnect())
  ).pipe(
    Effect.timeoutFail({
      duration: "6 seconds",
      onTimeout: () => harnessError(`redis ${host}:${port} ${command}: no answer within 6s`)
    })
  )
}

const REDIS_HINT = "Is redis-server installed? Run `bash test/run.sh --setup-only` (Debian: apt-get install redis-server)."

/**
 * `redis-server --port P --bind 127.0.0.1 --dir TMP --save "" --appendonly no --daemonize no …args`;
 * resolves once PING answers. With `placement` it runs in that network namespace, bound to its
 * address, on `port` (default: a free port of this process's loopback).
 */
export const redisServer = (opts?: {
  readonly args?: ReadonlyArray<string>
  readonly placement?: Placement
  readonly port?: number
  /**
   * Lines of a redis.conf written into the server's dir and given first (`user …` ACL lines,
   * `tls-*` settings …); `args` still override them.
   */
  readonly configLines?: ReadonlyArray<string>
  /** How `cli` and the readiness PING reach the server (requirepass, ACL user, TLS). */
  readonly access?: RedisAccess
  /** Serve TLS only: `port` is the tls-port and the plain port is off (`--port 0`). */
  readonly tlsOnly?: boolean
}): Effect.Effect<RedisServer, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const port = opts?.port ?? (yield* freePort)
    const host = opts?.placement?.host ?? "127.0.0.1"
    const dir = yield* tempDir(`redis${port}`)
    const cli = (...args: string[]) => redisCommand(port, args, host, opts?.access)
    const confFile = path.join(dir, "redis.conf")
    if (opts?.configLines !== undefined) yield* writeFile(confFile, opts.configLines.join("\n") + "\n")
    const managed = makeManaged({
      label: opts?.placement === undefined ? `redis:${port}` : `redis:${host}:${port}`,
      ...(opts?.placement === undefined ? {} : { netns: opts.placement.netns }),
      command: process.env.REDIS_SERVER ?? "redis-server",
      args: [
        ...(opts?.configLines === undefined ? [] : [confFile]),
        "--port", String(port),
        "--bind", host,
        "--dir", dir,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        // Protected mode refuses every client not on loopback; in a namespace the clients (the
        // dictator's peers, the tests) come over the bed's bridge, which has no uplink.
        ...(opts?.placement === undefined ? [] : ["--protected-mode", "no"]),
        ...(opts?.tlsOnly === true ? ["--port", "0", "--tls-port", String(port)] : []),
        ...(opts?.args ?? [])
      ],
      cwd: dir,
      ready: cli("PING").pipe(
        Effect.map((r) => r === "PONG"),
        Effect.orElseSucceed(() => false)
      ),
      readyTimeout: "30 seconds",
      hint: REDIS_HINT
    })
    yield* launch(managed)
    const server: RedisServer = { ...managed.proc, host, port, dir, cli }
    return server
  })

// ---------------------------------------------------------------------------------------------
// Dictator
// ---------------------------------------------------------------------------------------------

export interface DictatorProcess extends ManagedProcess {
  readonly name: string
  readonly httpPort: number
  readonly configPath: string
  /** GET /status?format=json, parsed. */
  readonly status: Effect.Effect<unknown, HarnessError>
  readonly http: (path: string, method?: "GET" | "POST") => Effect.Effect<{ status: number; body: string }, HarnessError>
}

let repoRootCache: string | undefined
/** The repository root: the nearest ancestor of this file with the project's package.json. */
export const repoRoot = (): string => {
  if (repoRootCache !== undefined) return repoRootCache
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = path.join(dir, "package.json")
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "redis-dictator") {
          repoRootCache = dir
          return dir
        }
      } catch {
        // keep looking
      }
    }
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`cannot find the redis-dictator package.json above ${fileURLToPath(import.meta.url)}`)
    dir = up
  }
}

/** One HTTP request to host:port (default 127.0.0.1; ≤ timeoutMs, default 5 s; no keep-alive). */
export const httpRequest = (
  port: number,
  urlPath: string,
  method: "GET" | "POST" = "GET",
  timeoutMs = 5000,
  host = "127.0.0.1"
): Effect.Effect<{ status: number; body: string }, HarnessError> =>
  Effect.async<{ status: number; body: string }, HarnessError>((resume) => {
    const req = http.request(
      { host, port, path: urlPath, method, agent: false, timeout: timeoutMs, headers: { connection: "close" } },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => (body += d))
        res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body })))
        res.on("error", (e) => resume(Effect.fail(harnessError(`${method} ${urlPath} on :${port}: ${e.message}`))))
      }
    )
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on("error", (e) => resume(Effect.fail(harnessError(`${method} ${urlPath} on :${port}: ${e.message}`))))
    req.end()
    return Effect.sync(() => req.destroy())
  })

/**
 * The node flags a dictator runs with: the `dictator` bin's (bin/node-options), so tests and
 * benchmarks run what ships, or DICTATOR_NODE_ARGS for measurements (`--cpu-prof`, V8 flags).
 */
export const dictatorNodeArgs = (): ReadonlyArray<string> =>
  (process.env.DICTATOR_NODE_ARGS ?? readFileSync(path.join(repoRoot(), "bin", "node-options"), "utf8")).split(/\s+/).filter((a) => a.length > 0)

/**
 * Writes a config file in the original JSON format into a temp dir and runs the built dictator
 * (`node dist/dictator.cjs --config=FILE`); resolves when its HTTP /ping answers 200 (≤ 20 s).
 */
export const dictator = (opts: {
  readonly name: string
  readonly svc: string
  readonly zkHosts: ReadonlyArray<string>
  readonly redisPort: number
  readonly httpPort?: number
  readonly extra?: Record<string, unknown>
  readonly node?: Record<string, unknown>
  /** Several local nodes in one process: written as `nodes: [...]` instead of `node`. */
  readonly nodesList?: ReadonlyArray<Record<string, unknown>>
  readonly logLevel?: string
  /** Run in this network namespace; the HTTP API and `node.host` use its address. */
  readonly placement?: Placement
  /** Bound of the wait for /ping (default 20 s). */
  readonly readyTimeout?: Duration.DurationInput
}): Effect.Effect<DictatorProcess, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    const main = process.env.DICTATOR_MAIN ?? path.join(repoRoot(), "dist", "dictator.cjs")
    if (!existsSync(main)) {
      return yield* Effect.fail(harnessError(`${main} does not exist: run \`npm run build\` first`))
    }
    const httpPort = opts.httpPort ?? (yield* freePort)
    const host = opts.placement?.host ?? "127.0.0.1"
    const dir = yield* tempDir(`node-${opts.name}`)
    const config = {
      svc_name: opts.svc,
      log_level: opts.logLevel ?? "INFO",
      http_port: httpPort,
      http_host: host,
      zk_hosts: [...opts.zkHosts],
      ...opts.extra,
      ...(opts.nodesList === undefined
        ? {
            node: {
              name: opts.name,
              host,
              port: opts.redisPort,
              loading_timeout: 30,
              ...opts.node
            }
          }
        : { nodes: opts.nodesList })
    }
    const configPath = path.join(dir, "dictator.conf")
    yield* writeFile(configPath, JSON.stringify(config, null, 2) + "\n")
    const httpCall = (p: string, method: "GET" | "POST" = "GET") => httpRequest(httpPort, p, method, 5000, host)
    const env = { ...process.env }
    // Do not hand vitest's or a debugger's loader flags to the child.
    delete env.NODE_OPTIONS
    const managed = makeManaged({
      label: `dictator:${opts.name}`,
      ...(opts.placement === undefined ? {} : { netns: opts.placement.netns }),
      command: process.execPath,
      args: [...dictatorNodeArgs(), main, `--config=${configPath}`],
      cwd: dir,
      env,
      ready: httpRequest(httpPort, "/ping", "GET", 1000, host).pipe(
        Effect.map((r) => r.status === 200),
        Effect.orElseSucceed(() => false)
      ),
      readyTimeout: opts.readyTimeout ?? "20 seconds",
      hint: "Was the project built (`npm run build`)?"
    })
    yield* launch(managed)
    const status = httpCall("/status?format=json").pipe(
      Effect.flatMap((r) =>
        r.status === 200
          ? Effect.try({
              try: () => JSON.parse(r.body) as unknown,
              catch: () => harnessError(`dictator ${opts.name}: /status is not JSON: ${tail(r.body, 300)}`)
            })
          : Effect.fail(harnessError(`dictator ${opts.name}: /status answered ${r.status}: ${tail(r.body, 300)}`))
      )
    )
    const proc: DictatorProcess = { ...managed.proc, name: opts.name, httpPort, configPath, status, http: httpCall }
    return proc
  })

// ---------------------------------------------------------------------------------------------
// Reading ZooKeeper from the outside
// ---------------------------------------------------------------------------------------------

/**
 * One long-lived client for reading ZooKeeper from the outside every few ms (a session per read
 * would cost ZooKeeper a session each time). `current()` gives the client, a new session when the
 * previous one expired. Closed with the scope.
 */
export const reopeningZkClient = (
  hosts: ReadonlyArray<string>,
  sessionTimeoutMs = 10000
): Effect.Effect<() => zookeeper.Client, never, Scope.Scope> =>
  Effect.gen(function* () {
    let client: zookeeper.Client | undefined
    let expired = false
    yield* Effect.addFinalizer(() => Effect.sync(() => client?.close()))
    return () => {
      if (client !== undefined && !expired) return client
      client?.close()
      expired = false
      const c = zookeeper.createClient(connectionString(hosts), { sessionTimeout: sessionTimeoutMs, spinDelay: 100, retries: 0 })
      c.on("state", (state) => {
        if (state === zookeeper.State.EXPIRED) expired = true
      })
      c.connect()
      client = c
      return c
    }
  })

/** True when something accepts TCP connections on host:port (default 127.0.0.1). */
export const accepts = (port: number, host = "127.0.0.1"): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const socket = net.createConnection({ host, port })
    const done = (ok: boolean) => {
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    socket.setTimeout(1000, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
    return Effect.sync(() => socket.destroy())
  })

/** A short-lived node-zookeeper-client session, connected (≤ 5 s) and closed with the scope. */
export const zkSession = (hosts: ReadonlyArray<string>): Effect.Effect<zookeeper.Client, HarnessError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => zookeeper.createClient(connectionString(hosts), { sessionTimeout: 4000, spinDelay: 100, retries: 0 })),
    (client) => Effect.sync(() => client.close())
  ).pipe(
    Effect.tap((client) =>
      Effect.async<void, HarnessError>((resume) => {
        const timer = setTimeout(
          () => resume(Effect.fail(harnessError(`cannot connect to ZooKeeper ${hosts.join(",")} within 5s`))),
          5000
        )
        client.once("connected", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        client.connect()
        return Effect.sync(() => clearTimeout(timer))
      })
    )
  )

/** The master znode of `svc`, read with its own short-lived session; None when it does not exist. */
export const readMaster = (
  hosts: ReadonlyArray<string>,
  svc: string
): Effect.Effect<
  Option.Option<{ readonly host: string; readonly port: number; readonly name: string; readonly raw: string; readonly czxid: string }>,
  HarnessError
> => {
  // The COMPAT path (DESIGN.md §3), spelled out on purpose: the harness checks it from the outside.
  const znode = `/services/redis/${svc}/master`
  return Effect.scoped(
    Effect.gen(function* () {
      const client = yield* zkSession(hosts)
      const got = yield* Effect.async<Option.Option<{ data: Buffer; stat: zookeeper.Stat }>, HarnessError>((resume) => {
        client.getData(znode, (error, data, stat) => {
          if (error) {
            const code = "getCode" in error && typeof error.getCode === "function" ? (error.getCode() as number) : undefined
            if (code === zookeeper.Exception.NO_NODE) resume(Effect.succeed(Option.none()))
            else resume(Effect.fail(harnessError(`getData ${znode}: ${errorText(error)}`)))
          } else resume(Effect.succeed(Option.some({ data: data ?? Buffer.alloc(0), stat })))
        })
      })
      if (Option.isNone(got)) return Option.none()
      const raw = got.value.data.toString("utf8")
      const parsed = yield* Effect.try({
        try: () => JSON.parse(raw) as Record<string, unknown>,
        catch: () => harnessError(`${znode} holds malformed data: ${JSON.stringify(raw)}`)
      })
      const port = Number(parsed.port)
      if (typeof parsed.host !== "string" || !Number.isInteger(port) || typeof parsed.name !== "string") {
        return yield* Effect.fail(harnessError(`${znode} lacks host/port/name: ${raw}`))
      }
      return Option.some({
        host: parsed.host,
        port,
        name: parsed.name,
        raw,
        czxid: got.value.stat.czxid.readBigUInt64BE(0).toString()
      })
    })
  ).pipe(
    Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => harnessError(`reading ${znode} from ${hosts.join(",")} took more than 10s`)
    })
  )
}
