/**
 * A local playground (`npm run demo`): one ZooKeeper, three redis-servers and three dictators
 * (redis1..3) for the service "demo", all on free ports of 127.0.0.1 and temp dirs.
 *
 * It prints the roles in words whenever they change (`master: redis1 127.0.0.1:7001 (epoch …) ·
 * replicas: redis2, redis3`) and writes each dictator's log to a file it names. On a terminal it
 * reads single keys (see MENU in demoView.ts): kill or restart the master's Redis, freeze a host,
 * stop or start a dictator, /disable and /enable. Without a terminal (CI, a pipe) it only prints
 * and keeps running. Ctrl-C, `q` or SIGTERM stop everything in order — dictators first, then
 * Redis, then ZooKeeper — remove the temp dirs (the logs stay) and exit 0.
 * HARNESS_ECHO=1 npm run demo also copies every server's output to stderr.
 */
// Children in their own process group: a terminal Ctrl-C reaches only this process, which then
// stops them in order. Must be set before the first spawn.
process.env.HARNESS_DETACH = "1"

import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Option, Queue, Ref, Schedule } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  type DictatorProcess,
  dictator,
  httpRequest,
  type RedisServer,
  redisServer,
  waitUntil,
  zooKeeper
} from "../test/support/servers.js"
import { MENU, type NodeView, rolesLine } from "./demoView.js"

const SVC = "demo"
const NAMES = ["redis1", "redis2", "redis3"] as const
/** Kept after the demo exits, so the logs can be read afterwards; its files emptied at each start (DEMO_LOG_DIR to move it). */
const LOG_DIR = process.env.DEMO_LOG_DIR ?? path.join(os.tmpdir(), "dictator-demo-logs")

const interactive = process.stdin.isTTY === true

interface Host {
  readonly name: string
  readonly redis: RedisServer
  readonly dictator: DictatorProcess
  readonly logFile: string
}

const time = () => new Date().toISOString().slice(11, 23)
const say = (line: string) => Console.log(`${time()}  ${line}`)

/**
 * Appends what a dictator printed since the last call to its log file. The harness keeps the last
 * 1 MB of output (then halves it): the end of what was written last is found again in it.
 */
const logCopier = (host: Host) => {
  let written = ""
  return Effect.sync(() => {
    const out = host.dictator.output()
    let fresh: string
    if (written === "") fresh = out
    else {
      const at = out.lastIndexOf(written)
      fresh = at >= 0 ? out.slice(at + written.length) : `\n[… output skipped …]\n${out}`
    }
    if (fresh.length === 0) return
    fs.appendFileSync(host.logFile, fresh)
    written = out.slice(-200)
  })
}

const program = Effect.gen(function* () {
  fs.mkdirSync(LOG_DIR, { recursive: true })
  for (const name of NAMES) fs.writeFileSync(path.join(LOG_DIR, `${name}.log`), "")

  // Registered first, so it runs last: after the dictators stopped, their last lines are copied too.
  let copiers: ReadonlyArray<Effect.Effect<void>> = []
  yield* Effect.addFinalizer(() => Effect.forEach(copiers, (c) => c, { discard: true }))

  yield* Console.log("Starting ZooKeeper…")
  const zk = yield* zooKeeper()
  yield* Console.log(`  ZooKeeper  ${zk.connectString}`)

  yield* Console.log("Starting 3 redis-servers and 3 dictators…")
  const redises = yield* Effect.forEach(NAMES, () => redisServer())
  const dictators = yield* Effect.forEach(redises, (r, i) =>
    dictator({ name: NAMES[i]!, svc: SVC, zkHosts: [zk.connectString], redisPort: r.port })
  )
  const hosts: ReadonlyArray<Host> = NAMES.map((name, i) => ({
    name,
    redis: redises[i]!,
    dictator: dictators[i]!,
    logFile: path.join(LOG_DIR, `${name}.log`)
  }))
  for (const h of hosts) {
    yield* Console.log(
      `  ${h.name}  redis 127.0.0.1:${h.redis.port}  dictator http://127.0.0.1:${h.dictator.httpPort}/status  log ${h.logFile}`
    )
  }
  copiers = hosts.map(logCopier)
  yield* Effect.forEach(copiers, (c) => c, { discard: true }).pipe(
    Effect.repeat(Schedule.spaced("250 millis")),
    Effect.forkScoped
  )

  const frozen = yield* Ref.make<ReadonlySet<string>>(new Set())

  const view = (h: Host): Effect.Effect<NodeView> =>
    Effect.gen(function* () {
      if ((yield* Ref.get(frozen)).has(h.name)) return { name: h.name, state: "frozen" }
      if (!(yield* h.dictator.running)) return { name: h.name, state: "stopped" }
      const r = yield* httpRequest(h.dictator.httpPort, "/status?format=json", "GET", 1000).pipe(Effect.option)
      if (Option.isNone(r) || r.value.status !== 200) return { name: h.name, state: "no answer" }
      try {
        return { name: h.name, state: "status", status: JSON.parse(r.value.body) as unknown }
      } catch {
        return { name: h.name, state: "no answer" }
      }
    })
  const roles = Effect.map(Effect.forEach(hosts, view, { concurrency: "unbounded" }), rolesLine)

  /** The host whose dictator answers 200 on /master (the load-balancer check). */
  const masterHost = Effect.gen(function* () {
    const frozenNow = yield* Ref.get(frozen)
    for (const h of hosts) {
      if (frozenNow.has(h.name)) continue
      const r = yield* httpRequest(h.dictator.httpPort, "/master", "GET", 1000).pipe(Effect.option)
      if (Option.isSome(r) && r.value.status === 200) return Option.some(h)
    }
    return Option.none<Host>()
  })

  yield* waitUntil("a master", Effect.map(masterHost, Option.map(() => true)), { timeout: "60 seconds", interval: "250 millis" })
  yield* Console.log(`\nA master is elected. Clients find it in ZooKeeper at /services/redis/${SVC}/master,`)
  yield* Console.log("or through each dictator's GET /master (200 only on the master's dictator).")
  yield* Console.log(`Logs: tail -f ${path.join(LOG_DIR, "*.log")}\n`)
  yield* Console.log(interactive ? MENU : "No terminal: printing the roles when they change; SIGINT or SIGTERM stops everything.")
  yield* Console.log("")

  // The roles line, whenever it changes.
  let last = ""
  const printIfChanged = Effect.flatMap(roles, (line) =>
    line === last ? Effect.void : Effect.zipRight(Effect.sync(() => (last = line)), say(line))
  )
  yield* printIfChanged.pipe(Effect.repeat(Schedule.spaced("300 millis")), Effect.forkScoped)

  if (!interactive) return yield* Effect.never

  const keys = yield* Queue.unbounded<string>()
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      const onData = (chunk: Buffer) => {
        for (const ch of chunk.toString("utf8")) Queue.unsafeOffer(keys, ch)
      }
      process.stdin.setRawMode(true)
      process.stdin.on("data", onData)
      process.stdin.resume()
      return onData
    }),
    (onData) =>
      Effect.sync(() => {
        process.stdin.off("data", onData)
        process.stdin.setRawMode(false)
        process.stdin.pause()
      })
  )

  const withMaster = (what: string, act: (h: Host) => Effect.Effect<void, unknown>) =>
    Effect.flatMap(
      masterHost,
      Option.match({
        onNone: () => say(`no master answers /master right now: nothing to ${what}`),
        onSome: act
      })
    )

  const toggleFreeze = Effect.gen(function* () {
    const now = yield* Ref.get(frozen)
    if (now.size > 0) {
      for (const h of hosts.filter((x) => now.has(x.name))) {
        yield* h.redis.signal("SIGCONT")
        yield* h.dictator.signal("SIGCONT")
        yield* say(`SIGCONT ${h.name}'s Redis and dictator: the host wakes up; a replaced old master fences itself and follows the new one`)
      }
      yield* Ref.set(frozen, new Set())
      return
    }
    yield* withMaster("freeze", (h) =>
      Effect.gen(function* () {
        yield* Ref.set(frozen, new Set([h.name]))
        yield* h.redis.signal("SIGSTOP")
        yield* h.dictator.signal("SIGSTOP")
        yield* say(`SIGSTOP ${h.name}'s Redis and dictator: a frozen host; the others vote it out (f again to thaw)`)
      })
    )
  })

  const handle = (key: string): Effect.Effect<void, unknown> => {
    switch (key) {
      case "k":
        return withMaster("kill", (h) =>
          Effect.zipRight(say(`kill -9 ${h.name}'s Redis (127.0.0.1:${h.redis.port})`), h.redis.kill9)
        )
      case "r":
        return Effect.forEach(
          hosts,
          (h) =>
            Effect.flatMap(h.redis.running, (up) =>
              up ? Effect.void : Effect.zipRight(say(`restarting ${h.name}'s Redis (it comes back empty and rejoins as a replica)`), h.redis.start)
            ),
          { discard: true }
        )
      case "f":
        return toggleFreeze
      case "1":
      case "2":
      case "3": {
        const h = hosts[Number(key) - 1]!
        return Effect.flatMap(h.dictator.running, (up) =>
          up
            ? Effect.zipRight(say(`SIGTERM ${h.name}'s dictator (a master hands over first)`), h.dictator.stop)
            : Effect.zipRight(say(`starting ${h.name}'s dictator`), h.dictator.start)
        )
      }
      case "d":
        return withMaster("disable", (h) =>
          Effect.zipRight(
            say(`POST /disable to ${h.name}'s dictator: it hands over and leaves the election`),
            h.dictator.http("/disable", "POST")
          )
        )
      case "e":
        return Effect.forEach(
          hosts,
          (h) =>
            h.dictator.http("/enable", "POST").pipe(
              Effect.flatMap((r) => (r.body.startsWith("enabled") ? say(`POST /enable to ${h.name}'s dictator: it rejoins`) : Effect.void)),
              Effect.ignore
            ),
          { discard: true }
        )
      case "s":
        return Effect.flatMap(roles, (line) => Effect.zipRight(Effect.sync(() => (last = line)), say(line)))
      case "?":
      case "h":
        return Console.log(MENU)
      case "q":
      case "\u0003": // Ctrl-C in raw mode is a key, not a signal
        return Effect.sync(() => process.kill(process.pid, "SIGINT"))
      default:
        return Effect.void
    }
  }

  return yield* Queue.take(keys).pipe(
    Effect.flatMap((key) => handle(key).pipe(Effect.catchAllCause((c) => say(`failed: ${c.toString().split("\n")[0]}`)))),
    Effect.forever
  )
}).pipe(
  Effect.onInterrupt(() => Console.log("\nStopping dictators, redis-servers and ZooKeeper…")),
  Effect.scoped,
  Effect.onInterrupt(() => Console.log(`All stopped. The dictators' logs are in ${LOG_DIR}`))
)

// A second Ctrl-C while stopping: give up on order; the harness's exit hook SIGKILLs the children.
let signals = 0
const force = () => {
  if (++signals >= 2) {
    console.error("Forced exit: killing every server.")
    process.exit(130)
  }
}
process.on("SIGINT", force)
process.on("SIGTERM", force)

NodeRuntime.runMain(program)
