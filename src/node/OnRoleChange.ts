/**
 * What follows a change of the local Redis's role (RoleEvents), each in a supervised fiber of its
 * own that never holds the controller's permit, so neither can delay the election or the fencing:
 *
 * - kill_clients_on_role_change: once the master znode names the new master (this node's view,
 *   which /master, /status and the Sentinel endpoint answer from) and one more check interval has
 *   passed (the Sentinel endpoint refreshes its view every check interval), the Redis's normal and
 *   pub/sub client connections are closed, as Sentinel does: clients that rediscover only on a
 *   closed connection ask again and get the new master. Never the dictators' own connections nor
 *   replication links (Redis.killClients).
 * - on_role_change: the hook, run without a shell with the new role, service, node, master host,
 *   master port and epoch as its last arguments and as DICTATOR_* variables; killed (its whole
 *   process group) after on_role_change_timeout_ms. One run at a time; changes that come while it
 *   runs keep only the latest (at most one pending, latest wins).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { Duration, Effect, Layer, Option, Queue, Schedule } from "effect"
import { DictatorConfig } from "../Config.js"
import { LocalHealth } from "./LocalHealth.js"
import { Metrics, type HookOutcome } from "./Metrics.js"
import { type RoleChange, RoleEvents } from "./RoleEvents.js"
import { Store } from "./Store.js"
import { supervised } from "./supervised.js"

/** The longest wait for this node's view of the master znode to name the new master. */
const VIEW_WAIT = Duration.seconds(5)
/** Output of a hook kept for its log line (stdout and stderr together). */
export const HOOK_OUTPUT_LIMIT = 4096

/** The hook's environment additions. */
export const hookEnv = (c: RoleChange): Record<string, string> => ({
  DICTATOR_ROLE: c.role,
  DICTATOR_SERVICE: c.service,
  DICTATOR_NODE: c.node,
  DICTATOR_MASTER_NAME: c.master.name,
  DICTATOR_MASTER_HOST: c.master.host,
  DICTATOR_MASTER_PORT: String(c.master.port),
  DICTATOR_EPOCH: c.epoch ?? "",
  DICTATOR_CAUSE: c.cause
})

/** The hook's argv: the configured command, then role, service, node, master host, master port, epoch. */
export const hookArgs = (command: ReadonlyArray<string>, c: RoleChange): ReadonlyArray<string> => [
  ...command,
  c.role,
  c.service,
  c.node,
  c.master.host,
  String(c.master.port),
  c.epoch ?? ""
]

export interface HookResult {
  readonly outcome: HookOutcome
  readonly detail: string
  readonly output: string
  readonly ms: number
}

/**
 * Runs `argv` (no shell) with `env` added, for at most `timeoutMs`: then its process group is
 * killed. Output is kept up to HOOK_OUTPUT_LIMIT characters. Interrupting it kills the group too.
 */
export const runHook = (argv: ReadonlyArray<string>, env: Record<string, string>, timeoutMs: number): Effect.Effect<HookResult> =>
  Effect.async<HookResult>((resume) => {
    const started = Date.now()
    let output = ""
    let truncated = false
    let timedOut = false
    let child: ChildProcess
    const killGroup = () => {
      if (child.pid === undefined) return
      try {
        process.kill(-child.pid, "SIGKILL")
      } catch {
        // gone already
      }
    }
    try {
      // Its own process group (detached), so a timeout kills whatever it started as well.
      child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true })
    } catch (e) {
      resume(Effect.succeed({ outcome: "error", detail: (e as Error).message, output: "", ms: 0 }))
      return
    }
    const keep = (chunk: Buffer) => {
      if (output.length >= HOOK_OUTPUT_LIMIT) {
        truncated = true
        return
      }
      output += chunk.toString("utf8")
      if (output.length > HOOK_OUTPUT_LIMIT) {
        output = output.slice(0, HOOK_OUTPUT_LIMIT)
        truncated = true
      }
    }
    child.stdout?.on("data", keep)
    child.stderr?.on("data", keep)
    const timer = setTimeout(() => {
      timedOut = true
      killGroup()
    }, timeoutMs)
    let done = false
    const finish = (r: Omit<HookResult, "output" | "ms">) => {
      if (done) return
      done = true
      clearTimeout(timer)
      // A grandchild may still hold the pipes: stop reading them.
      child.stdout?.destroy()
      child.stderr?.destroy()
      resume(Effect.succeed({ ...r, output: truncated ? `${output}…(truncated)` : output, ms: Date.now() - started }))
    }
    child.once("error", (e) => finish({ outcome: "error", detail: e.message }))
    child.once("exit", (code, signal) =>
      finish(
        timedOut
          ? { outcome: "timeout", detail: `killed after ${timeoutMs} ms` }
          : code === 0
            ? { outcome: "ok", detail: "exit 0" }
            : { outcome: "failed", detail: code === null ? `killed by ${signal ?? "a signal"}` : `exit ${code}` }
      )
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      killGroup()
    })
  })

export const layer = Layer.scopedDiscard(
  Effect.gen(function* () {
    const { config } = yield* DictatorConfig
    const roles = yield* RoleEvents
    const local = yield* LocalHealth
    const store = yield* Store
    const metrics = yield* Metrics

    if (config.kill_clients_on_role_change) {
      // Subscribed now, before any change can be published; consumed in the loop below.
      const changes = yield* roles.subscribe
      /** This node's view names the change's master: what /master, /status and Sentinel answer from. */
      const viewNames = (c: RoleChange) =>
        Effect.flatMap(store.master.get, (v) =>
          v !== null && v._tag === "Present" && v.record.name === c.master.name ? Effect.void : Effect.fail("not yet" as const)
        )
      const closeClients = (c: RoleChange) =>
        Effect.gen(function* () {
          const seen = yield* viewNames(c).pipe(
            Effect.retry(Schedule.spaced("10 millis")),
            Effect.timeoutOption(VIEW_WAIT),
            Effect.orElseSucceed(() => Option.none())
          )
          if (Option.isNone(seen)) {
            yield* Effect.logInfo(`not closing client connections: the master znode did not name ${c.master.name} within ${Duration.format(VIEW_WAIT)}`)
            return
          }
          // The Sentinel endpoint refreshes its view every check interval.
          yield* Effect.sleep(Duration.millis(config.check_interval_ms))
          const closed = yield* local.connection.killClients
          yield* metrics.clientsClosed(closed)
          yield* Effect.logInfo(`closed ${closed} client connection(s) of the local Redis after its change to ${c.role} (kill_clients_on_role_change)`)
        }).pipe(Effect.catchAll((e) => Effect.logWarning(`cannot close the local Redis's client connections: ${e.message}`)))
      yield* supervised("close-clients")(Effect.forever(Effect.flatMap(changes.take, closeClients)))
    }

    const command = config.on_role_change
    if (command !== undefined) {
      const changes = yield* roles.subscribe
      // At most one change waits while the hook runs: the latest.
      const pending = yield* Queue.sliding<RoleChange>(1)
      yield* supervised("role-hook-queue")(Effect.forever(Effect.flatMap(changes.take, (c) => Queue.offer(pending, c))))
      const runOnce = (c: RoleChange) =>
        Effect.gen(function* () {
          const argv = hookArgs(command, c)
          const r = yield* runHook(argv, hookEnv(c), config.on_role_change_timeout_ms)
          yield* metrics.hookRun(r.outcome)
          const output = r.output.trim() === "" ? "" : `; output: ${JSON.stringify(r.output.trim())}`
          const line = `on_role_change hook ${JSON.stringify(argv[0])} for ${c.role} (${r.ms} ms): ${r.detail}${output}`
          yield* r.outcome === "ok" ? Effect.logInfo(line) : Effect.logWarning(line)
        })
      yield* supervised("role-hook")(Effect.forever(Effect.flatMap(Queue.take(pending), runOnce)))
    }
  })
)
