/**
 * `redis-sentinel` processes as scoped resources, on free ports of 127.0.0.1, each with its config
 * file in a temp dir of its own (Sentinel rewrites its config file: its id, the other sentinels,
 * the replicas, the current master). Stopped (SIGCONT, SIGTERM, SIGKILL after 5 s) and their
 * dirs removed when the scope closes; SIGKILLed from an exit hook if this process exits first.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { rmSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Option, type Scope } from "effect"
import { type HarnessError, type Placement, freePort, redisCommand, waitUntil } from "../test/support/servers.js"

export interface SentinelOptions {
  readonly masterName: string
  readonly masterPort: number
  readonly quorum: number
  readonly downAfterMs: number
  readonly failoverTimeoutMs: number
  readonly parallelSyncs: number
  /** The master's address (default 127.0.0.1). */
  readonly masterHost?: string
  /**
   * Run in this network namespace (`ip netns exec`), bound to its address, on port 26379
   * (bench/partition.ts); default: a free port of 127.0.0.1.
   */
  readonly placement?: Placement
  /** More masters monitored with the same quorum and timings (bench/scale.ts: one per service). */
  readonly moreMasters?: ReadonlyArray<{ readonly name: string; readonly port: number; readonly host?: string }>
}

export interface SentinelProcess {
  readonly host: string
  readonly port: number
  readonly configPath: string
  readonly pid: () => number | undefined
  /** stdout + stderr so far (the most recent 1 MB). */
  readonly output: () => string
}

const live = new Set<ChildProcess>()
const liveDirs = new Set<string>()
let hooked = false
const hookExit = () => {
  if (hooked) return
  hooked = true
  process.on("exit", () => {
    for (const c of live) {
      try {
        c.kill("SIGKILL")
      } catch {
        // gone
      }
    }
    for (const d of liveDirs) rmSync(d, { recursive: true, force: true })
  })
}

const stopChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGCONT")
    child.kill("SIGTERM")
  })

export const sentinelConfig = (port: number, dir: string, o: SentinelOptions): string =>
  [
    `port ${port}`,
    `bind ${o.placement?.host ?? "127.0.0.1"}`,
    "protected-mode no",
    "daemonize no",
    `dir ${dir}`,
    ...[{ name: o.masterName, port: o.masterPort, host: o.masterHost }, ...(o.moreMasters ?? [])].flatMap((m) => [
      `sentinel monitor ${m.name} ${m.host ?? "127.0.0.1"} ${m.port} ${o.quorum}`,
      `sentinel down-after-milliseconds ${m.name} ${o.downAfterMs}`,
      `sentinel failover-timeout ${m.name} ${o.failoverTimeoutMs}`,
      `sentinel parallel-syncs ${m.name} ${o.parallelSyncs}`
    ]),
    ""
  ].join("\n")

/** One `redis-sentinel <conf>`; resolves once it answers PING. */
export const sentinelProcess = (o: SentinelOptions): Effect.Effect<SentinelProcess, HarnessError, Scope.Scope> =>
  Effect.gen(function* () {
    hookExit()
    const port = o.placement === undefined ? yield* freePort : 26379
    const host = o.placement?.host ?? "127.0.0.1"
    const dir = yield* Effect.acquireRelease(
      Effect.promise(async () => {
        const d = await fs.mkdtemp(path.join(os.tmpdir(), `bench-sentinel${port}-`))
        liveDirs.add(d)
        return d
      }),
      (d) =>
        Effect.promise(() => fs.rm(d, { recursive: true, force: true })).pipe(
          Effect.ensuring(Effect.sync(() => liveDirs.delete(d)))
        )
    )
    const configPath = path.join(dir, "sentinel.conf")
    yield* Effect.promise(() => fs.writeFile(configPath, sentinelConfig(port, dir, o)))
    let out = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const command = process.env.REDIS_SENTINEL ?? "redis-sentinel"
        const c =
          o.placement === undefined
            ? spawn(command, [configPath], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
            : spawn("ip", ["netns", "exec", o.placement.netns, command, configPath], {
                cwd: dir,
                stdio: ["ignore", "pipe", "pipe"],
                detached: true
              })
        const append = (d: string) => {
          out += d
          if (out.length > 1024 * 1024) out = out.slice(out.length - 512 * 1024)
        }
        c.stdout?.setEncoding("utf8").on("data", append)
        c.stderr?.setEncoding("utf8").on("data", append)
        c.on("error", (e) => append(`\n----- bench: redis-sentinel error: ${e.message} -----\n`))
        c.on("exit", (code, sig) => {
          live.delete(c)
          append(`\n----- bench: redis-sentinel exited (${sig ?? `code ${code}`}) -----\n`)
        })
        live.add(c)
        return c
      }),
      // SIGKILL after 5 s inside stopChild; the outer bound is for a child that ignores even that.
      (c) => Effect.promise(() => stopChild(c)).pipe(Effect.interruptible, Effect.timeoutOption("15 seconds"))
    )
    yield* waitUntil(
      `redis-sentinel on port ${port} to answer PING`,
      Effect.suspend(() =>
        child.exitCode !== null || child.signalCode !== null
          ? Effect.die(new Error(`redis-sentinel exited before it was ready:\n${out.slice(-2000)}`))
          : redisCommand(port, ["PING"], host).pipe(Effect.map((r) => (r === "PONG" ? Option.some(true) : Option.none())))
      ),
      { timeout: "20 seconds", interval: "100 millis" }
    )
    return {
      host,
      port,
      configPath,
      pid: () => (child.exitCode === null && child.signalCode === null ? child.pid : undefined),
      output: () => out
    } satisfies SentinelProcess
  })
