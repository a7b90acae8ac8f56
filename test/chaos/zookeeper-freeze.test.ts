/**
 * Chaos, a silent ZooKeeper server (issue 7 item 1, DESIGN.md invariant 8) on a real 3-server
 * ensemble, 3 redis-servers and 3 dictators (the built dist/src/main.js), under a write load:
 * SIGSTOP one ZooKeeper server while the quorum lives. A frozen server keeps its TCP connections
 * open and answers nothing, so a client without a read deadline stays "connected" to it until its
 * session expires on the quorum. The dictators must notice it themselves, move to a healthy
 * server within the session timeout and keep their sessions: no failover at all, no two writable
 * masters, no acknowledged write lost.
 *
 * Each dictator lists the ensemble through one TCP forwarder per server (test/support/
 * tcpForwarder.ts), so scenario j can steer every session onto one server before freezing it;
 * which server a session uses is read from that server's own `cons` four-letter word (it lists
 * the session ids of its connections), matched with the session id in the dictator's /status.
 */
import * as fs from "node:fs"
import { expect, layer } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import { type ZkServer, waitUntil, zkSessionsOn } from "../support/servers.js"
import { type TcpForwarder, tcpForwarder } from "../support/tcpForwarder.js"
import { awaitConverged, staleClient, type Topology, type TopologyNode } from "../support/workload.js"
import { type Outcome, Topo, describeOverlaps, fmtMs, layer as topology, masterOf, scenario, summary } from "./topology.js"

/** zk_session_timeout_ms of src/Config.ts (the harness keeps it). */
const SESSION_TIMEOUT_MS = 6000
/** Longer than a session: a dictator that stays on the frozen server loses its session. */
const FREEZE_MS = SESSION_TIMEOUT_MS + 2000

const now = Clock.currentTimeMillis

/** The forwarders in front of each topology's servers, by service name. */
const forwarders = new Map<string, ReadonlyArray<TcpForwarder>>()

const withForwarders = (svc: string, extra: Record<string, unknown>) =>
  topology(svc, {
    extra,
    dictatorZkHosts: (zk) =>
      Effect.gen(function* () {
        const fw = yield* Effect.forEach(zk.servers, (s) => tcpForwarder(s.clientPort))
        forwarders.set(svc, fw)
        return fw.map((f) => f.address)
      })
  })

/** The dictator's session id as `cons` prints it (hex, no 0x, no leading zeros). */
const sessionOf = (n: TopologyNode) =>
  n.dictator.status.pipe(
    Effect.map((s) => {
      const id = (s as { session?: { id?: unknown } }).session?.id
      return typeof id === "string" ? id.replace(/^0x0*/i, "").toLowerCase() : null
    })
  )

/** The server whose `cons` lists `sid`; None when none does (yet). Frozen servers do not answer. */
const serverOf = (t: Topology, sid: string) =>
  Effect.gen(function* () {
    for (const s of t.zk.servers) {
      const sids = yield* Effect.option(zkSessionsOn(s.clientPort))
      if (Option.isSome(sids) && sids.value.has(sid)) return Option.some(s)
    }
    return Option.none<ZkServer>()
  })

const sessionsOf = (t: Topology) =>
  Effect.forEach(t.nodes, (n) =>
    sessionOf(n).pipe(Effect.flatMap((sid) => (sid === null ? Effect.fail(new Error(`${n.name} has no session`)) : Effect.succeed(sid))))
  )

/**
 * Freezes `frozen` for FREEZE_MS and records, for each node, when the server side first lists
 * its session on another server (the dictator moved), or undefined if it never did.
 */
const freeze = (t: Topology, frozen: ZkServer, sids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const others = t.zk.servers.filter((s) => s !== frozen)
    const movedAfter: Array<number | undefined> = sids.map(() => undefined)
    const faultAt = yield* now
    yield* frozen.signal("SIGSTOP")
    // Bounded: FREEZE_MS / 100 ms polls.
    while ((yield* now) - faultAt < FREEZE_MS) {
      for (const s of others) {
        const on = yield* Effect.option(zkSessionsOn(s.clientPort))
        if (Option.isNone(on)) continue
        const at = (yield* now) - faultAt
        sids.forEach((sid, i) => {
          if (movedAfter[i] === undefined && on.value.has(sid)) movedAfter[i] = at
        })
      }
      yield* Effect.sleep("100 millis")
    }
    yield* frozen.signal("SIGCONT")
    return { faultAt, movedAfter }
  })

/** A frozen ZooKeeper server with a living quorum is not a reason to fail over. */
const expectNoFailover = (o: Outcome<{ readonly sids: ReadonlyArray<string>; readonly movedAfter: ReadonlyArray<number | undefined> }>, sidsAfter: ReadonlyArray<string>, watched: ReadonlyArray<number>) => {
  expect(o.report.overlaps, `two writable masters: ${describeOverlaps(o.report)}`).toEqual([])
  expect(o.lost, "acknowledged writes lost").toEqual([])
  for (const i of watched) {
    expect(o.result.movedAfter[i] ?? Number.POSITIVE_INFINITY, `dictator ${i + 1} moved to a healthy server within the session timeout`).toBeLessThan(SESSION_TIMEOUT_MS)
  }
  expect(sidsAfter, "every dictator kept its session").toEqual(o.result.sids)
  expect(o.after.master.name, "the same master").toBe(o.before.master.name)
  expect(o.after.master.czxid, "the same master epoch").toBe(o.before.master.czxid)
  const epochs = [...new Set(o.writer.follower.history().map((h) => h.master?.czxid ?? "none"))]
  expect(epochs, "the master znode never changed").toEqual([o.before.master.czxid])
  expect(o.after.replicas).toHaveLength(2)
}

const masterServerCase = (label: string, tag: string) =>
  Effect.gen(function* () {
    const t = yield* Topo
    const o = yield* scenario(t, tag, ({ before }) =>
      Effect.gen(function* () {
        const sids = yield* sessionsOf(t)
        const master = t.nodes.indexOf(masterOf(t, before))
        const frozen = yield* waitUntil("the server of the master's dictator", serverOf(t, sids[master]!), {
          timeout: "10 seconds",
          interval: "100 millis"
        })
        const mode = yield* frozen.mode
        // Writes straight to the master's Redis, whatever ZooKeeper says: what a client that
        // has not heard of a failover would see acknowledged.
        const old = t.nodes[master]!
        const stale = yield* staleClient(old.redis, { tag: `${tag}-stale` })
        const r = yield* freeze(t, frozen, sids)
        yield* stale.stop
        return { ...r, sids, master, stale, oldPort: old.redis.port, frozen: `zookeeper#${frozen.id} (${mode})` }
      })
    )
    const sidsAfter = yield* sessionsOf(t)
    const newMaster = o.checker.firstAcceptSince(o.result.faultAt, o.result.oldPort)
    const late = newMaster === undefined ? [] : o.result.stale.ackedSince(newMaster.sentAt)
    console.log(
      summary(label, o, {
        frozen: o.result.frozen,
        "master's dictator moved after": fmtMs(o.result.movedAfter[o.result.master]),
        "sessions kept": String(sidsAfter.every((s, i) => s === o.result.sids[i])),
        "another writable master after": fmtMs(newMaster && newMaster.at - o.result.faultAt),
        "old master's acks after that": String(late.length)
      })
    )
    expect(late, "writes acknowledged by the old master after another one took writes").toEqual([])
    expectNoFailover(o, sidsAfter, [o.result.master])
  })

const everyDictatorCase = (label: string, tag: string) =>
  Effect.gen(function* () {
    const t = yield* Topo
    const fw = forwarders.get(t.svc)!
    const o = yield* scenario(t, tag, () =>
      Effect.gen(function* () {
        const sids = yield* sessionsOf(t)
        // A follower: a frozen leader also makes the ensemble elect, which the other case may hit.
        const modes = yield* Effect.forEach(t.zk.servers, (s) => s.mode)
        const frozen = t.zk.servers[modes.indexOf("follower")]!
        // Steer every session onto `frozen`: the other servers hang up on the dictators until
        // all three sessions are there, then take connections again.
        const steer = Effect.gen(function* () {
          yield* Effect.forEach(fw.filter((f) => f.target !== frozen.clientPort), (f) => f.block)
          yield* waitUntil(
            `every dictator's session on zookeeper#${frozen.id}`,
            zkSessionsOn(frozen.clientPort).pipe(
              Effect.map((on) => (sids.every((s) => on.has(s)) ? Option.some(true) : Option.none())),
              Effect.orElseSucceed(() => Option.none())
            ),
            { timeout: "20 seconds", interval: "100 millis" }
          )
        }).pipe(Effect.ensuring(Effect.forEach(fw, (f) => f.unblock)))
        yield* steer
        yield* awaitConverged(t, "30 seconds")
        const r = yield* freeze(t, frozen, sids)
        return { ...r, sids, frozen: `zookeeper#${frozen.id}` }
      })
    )
    const sidsAfter = yield* sessionsOf(t)
    console.log(
      summary(label, o, {
        frozen: o.result.frozen,
        "dictators moved after": o.result.movedAfter.map(fmtMs).join(", "),
        "sessions kept": String(sidsAfter.every((s, i) => s === o.result.sids[i]))
      })
    )
    expectNoFailover(o, sidsAfter, [0, 1, 2])
  })

/**
 * The same dictators with another min_replicas_to_write: rewrite their config files and restart
 * them (kill -9, so no handover; the master znode goes with the old session, and the scenario's
 * reset waits for a new master). Cheaper than a second ensemble.
 */
const setMinReplicas = (t: Topology, n: number) =>
  Effect.gen(function* () {
    yield* Effect.forEach(t.nodes, (node) => node.dictator.kill9, { concurrency: "unbounded", discard: true })
    for (const node of t.nodes) {
      const config = JSON.parse(fs.readFileSync(node.dictator.configPath, "utf8")) as Record<string, unknown>
      fs.writeFileSync(node.dictator.configPath, JSON.stringify({ ...config, min_replicas_to_write: n }, null, 2) + "\n")
    }
    // One at a time: three Node start-ups at once on a loaded 2-core machine can exceed the
    // harness's 20 s readiness wait.
    for (const node of t.nodes) yield* node.dictator.start
  })

layer(withForwarders("chaos-zkfreeze", { min_replicas_to_write: 0 }), { timeout: "120 seconds", excludeTestServices: true })(
  "chaos: a frozen ZooKeeper server",
  (it) => {
    it.effect("i0. min_replicas_to_write 0, SIGSTOP the ZooKeeper server the master's dictator uses: it moves to another server, no failover, no two writable masters", () =>
      masterServerCase("i0. SIGSTOP the master's ZooKeeper server (min_replicas_to_write 0)", "i0"))

    it.effect("j0. min_replicas_to_write 0, SIGSTOP the ZooKeeper server every dictator uses: they all move, no failover", () =>
      everyDictatorCase("j0. SIGSTOP the ZooKeeper server of every dictator (min_replicas_to_write 0)", "j0"))

    it.effect("i1. min_replicas_to_write 1, SIGSTOP the ZooKeeper server the master's dictator uses: it moves to another server, no failover, no two writable masters", () =>
      Effect.gen(function* () {
        yield* setMinReplicas(yield* Topo, 1)
        yield* masterServerCase("i1. SIGSTOP the master's ZooKeeper server (min_replicas_to_write 1)", "i1")
      }))
  }
)
