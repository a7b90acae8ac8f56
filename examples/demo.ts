/**
 * A local playground (`npm run demo`): one ZooKeeper, three redis-servers and three dictators
 * (redis1..3) for the service "demo", all on free ports of 127.0.0.1 and temp dirs. Prints who is
 * master, then the roles every 2 s. Ctrl-C (or SIGTERM) stops everything in order — dictators
 * first, then Redis, then ZooKeeper — removes the temp dirs and exits 0.
 *
 * Try, in another terminal, with the ports printed at start-up:
 *   redis-cli -p <master redis port> SHUTDOWN NOSAVE     # the master's Redis dies: a replica takes over
 *   curl -s 127.0.0.1:<http port>/status?format=json     # a dictator's view
 * HARNESS_ECHO=1 npm run demo also shows every server's log.
 */
// Children in their own process group: a terminal Ctrl-C reaches only this process, which then
// stops them in order. Must be set before the first spawn.
process.env.HARNESS_DETACH = "1"

import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Option, Schedule } from "effect"
import {
  type DictatorProcess,
  dictator,
  readMaster,
  redisServer,
  waitUntil,
  zooKeeper
} from "../test/support/servers.js"

const SVC = "demo"
const NAMES = ["redis1", "redis2", "redis3"] as const

const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined

/** A master as the status shows it: a name, an address, an object with either, or nothing. */
const describeMaster = (m: unknown): string => {
  if (m === null || m === undefined || m === "") return "-"
  if (typeof m === "string" || typeof m === "number") return String(m)
  const name = field(m, "name")
  if (typeof name === "string") return name
  const host = field(m, "host")
  const port = field(m, "port")
  if (host !== undefined && port !== undefined) return `${String(host)}:${String(port)}`
  return JSON.stringify(m)
}

const roleOf = (d: DictatorProcess): Effect.Effect<string> =>
  d.status.pipe(
    Effect.map((s) => {
      const role = field(s, "role")
      return `${d.name}=${typeof role === "string" ? role : JSON.stringify(role ?? "?")}(master ${describeMaster(field(s, "master"))})`
    }),
    Effect.catchAll(() =>
      Effect.map(d.running, (up) => `${d.name}=${up ? "no-answer" : "stopped"}`)
    )
  )

const program = Effect.gen(function* () {
  yield* Console.log("Starting ZooKeeper…")
  const zk = yield* zooKeeper()
  const hosts = [zk.connectString]
  yield* Console.log(`  ZooKeeper  ${zk.connectString}`)

  yield* Console.log("Starting 3 redis-servers…")
  const redises = yield* Effect.forEach(NAMES, () => redisServer())
  for (const [i, r] of redises.entries()) yield* Console.log(`  ${NAMES[i]}     redis-server 127.0.0.1:${r.port}`)

  yield* Console.log("Starting 3 dictators…")
  const dictators = yield* Effect.forEach(redises, (r, i) =>
    dictator({ name: NAMES[i]!, svc: SVC, zkHosts: hosts, redisPort: r.port })
  )
  for (const d of dictators) {
    yield* Console.log(`  ${d.name}     http://127.0.0.1:${d.httpPort}/status   config ${d.configPath}`)
  }

  const master = yield* waitUntil("the master znode of service demo", readMaster(hosts, SVC), {
    timeout: "60 seconds",
    interval: "250 millis"
  })
  yield* Console.log(`\nMaster: ${master.name} (${master.host}:${master.port}), epoch (czxid) ${master.czxid}`)
  yield* Console.log(`/services/redis/${SVC}/master = ${master.raw}`)
  yield* Console.log("\nRoles every 2 s (Ctrl-C stops everything):")

  const tick = Effect.gen(function* () {
    const roles = yield* Effect.forEach(dictators, roleOf, { concurrency: "unbounded" })
    const znode = yield* readMaster(hosts, SVC).pipe(
      Effect.map(Option.match({ onNone: () => "none", onSome: (m) => `${m.name}#${m.czxid}` })),
      Effect.orElseSucceed(() => "unreadable")
    )
    const time = new Date().toISOString().slice(11, 19)
    yield* Console.log(`${time}  ${roles.join("  ")}  znode=${znode}`)
  })
  return yield* tick.pipe(Effect.repeat(Schedule.spaced("2 seconds")), Effect.asVoid)
}).pipe(
  Effect.onInterrupt(() => Console.log("\nStopping dictators, redis-servers and ZooKeeper…")),
  Effect.scoped,
  Effect.onInterrupt(() => Console.log("All stopped."))
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
