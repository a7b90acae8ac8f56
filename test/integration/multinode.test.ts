/**
 * Issue 12, many nodes per process: two services × 3 nodes run by 3 dictator processes (three
 * "hosts"), each process managing one node of each service through `nodes: [...]` on one
 * ZooKeeper session and one HTTP listener. Killing one Redis fails over its service only.
 *
 * Real standalone ZooKeeper, real redis-servers, the built dictator (`npm run build` first).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { type DictatorProcess, HarnessError, dictator, readMaster, redisServer, waitUntil, zooKeeper } from "../support/servers.js"

const SERVICES = ["alpha", "beta"] as const
const HOSTS = ["h1", "h2", "h3"] as const

const field = (v: unknown, k: string): unknown => (typeof v === "object" && v !== null ? (v as Record<string, unknown>)[k] : undefined)

/** GET /nodes of one process: every node's JSON status. */
const nodesOf = (d: DictatorProcess) =>
  Effect.flatMap(d.http("/nodes"), (r) =>
    r.status === 200
      ? Effect.succeed(JSON.parse(r.body) as ReadonlyArray<unknown>)
      : Effect.fail(new HarnessError({ message: `/nodes answered ${r.status}: ${r.body}` }))
  )

/** Roles of every node of `svc`, by host, read from the three processes. */
const rolesOf = (procs: ReadonlyArray<DictatorProcess>, svc: string) =>
  Effect.forEach(procs, (d) =>
    Effect.map(nodesOf(d), (list) => field(list.find((s) => field(s, "service") === svc), "role"))
  )

describe("many nodes per process", () => {
  it.scopedLive(
    "one session and one listener per process; a dead Redis fails over its service only",
    () =>
      Effect.gen(function* () {
        const zk = yield* zooKeeper()
        const redis = {
          alpha: yield* Effect.forEach(HOSTS, () => redisServer()),
          beta: yield* Effect.forEach(HOSTS, () => redisServer())
        }
        const procs = yield* Effect.forEach(
          HOSTS,
          (host, i) =>
            dictator({
              name: host,
              svc: "alpha",
              zkHosts: [zk.connectString],
              redisPort: redis.alpha[i]!.port,
              nodesList: SERVICES.map((service) => ({ service, name: host, host: "127.0.0.1", port: redis[service][i]!.port })),
              // Three processes starting at once on a loaded machine.
              readyTimeout: "60 seconds"
            }),
          { concurrency: "unbounded" }
        )

        // Each service: one master and two replicas, whatever hosts they landed on.
        for (const svc of SERVICES) {
          yield* waitUntil(
            `service ${svc}: one master, two replicas`,
            Effect.map(rolesOf(procs, svc), (roles) =>
              roles.filter((r) => r === "master").length === 1 && roles.filter((r) => r === "replica").length === 2
                ? Option.some(roles)
                : Option.none()
            ),
            { timeout: "60 seconds", interval: "250 millis" }
          ).pipe(Effect.tapError(() => Effect.sync(() => procs.forEach((d) => console.log(`--- ${d.name}\n${d.output().slice(-3000)}`)))))
        }

        // One ZooKeeper session per process, shared by its two nodes; three distinct sessions.
        const sessions = yield* Effect.forEach(procs, (d) =>
          Effect.map(nodesOf(d), (list) => new Set(list.map((s) => field(field(s, "session"), "id"))))
        )
        for (const s of sessions) expect(s.size).toBe(1)
        expect(new Set(sessions.map((s) => [...s][0])).size).toBe(3)

        // The per-node paths: /nodes/<service>/<name>/status on the process's one port.
        const st = yield* procs[1]!.http("/nodes/beta/h2/status?format=json")
        expect(st.status).toBe(200)
        expect(field(JSON.parse(st.body), "service")).toBe("beta")
        expect(field(JSON.parse(st.body), "name")).toBe("h2")
        expect((yield* procs[1]!.http("/nodes/gamma/h2/status")).status).toBe(404)

        // Kill alpha's master Redis: alpha fails over, beta keeps its master (same znode, same epoch).
        const alphaBefore = Option.getOrThrow(yield* readMaster([zk.connectString], "alpha"))
        const betaBefore = Option.getOrThrow(yield* readMaster([zk.connectString], "beta"))
        const victim = HOSTS.indexOf(alphaBefore.name as (typeof HOSTS)[number])
        expect(victim).toBeGreaterThanOrEqual(0)
        yield* redis.alpha[victim]!.kill9
        const alphaAfter = yield* waitUntil(
          "a new alpha master",
          Effect.map(readMaster([zk.connectString], "alpha"), (m) =>
            Option.filter(m, (x) => x.name !== alphaBefore.name)
          ),
          { timeout: "60 seconds", interval: "200 millis" }
        )
        expect(alphaAfter.czxid).not.toBe(alphaBefore.czxid)
        // Let any disturbance show: beta's master and roles stay as they were.
        yield* Effect.sleep("3 seconds")
        const betaAfter = Option.getOrThrow(yield* readMaster([zk.connectString], "beta"))
        expect(betaAfter.czxid).toBe(betaBefore.czxid)
        expect(betaAfter.name).toBe(betaBefore.name)
        const betaRoles = yield* rolesOf(procs, "beta")
        expect(betaRoles.filter((r) => r === "master").length).toBe(1)
        expect(betaRoles[HOSTS.indexOf(betaBefore.name as (typeof HOSTS)[number])]).toBe("master")
        // The process whose alpha Redis died still serves its beta node.
        const victimBeta = yield* procs[victim]!.http(`/nodes/beta/${HOSTS[victim]}/health`)
        expect(victimBeta.status).toBe(200)
        const victimAlpha = yield* procs[victim]!.http(`/nodes/alpha/${HOSTS[victim]}/health`)
        expect(victimAlpha.status).toBe(503)
      }),
    { timeout: 180_000 }
  )
})
