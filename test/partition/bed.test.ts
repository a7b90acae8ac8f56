/**
 * The network-namespace test bed itself (test/support/netns.ts): hosts reach each other and the
 * clients over the bridge, cuts drop exactly what they name (one-way, per peer, per port), heal
 * restores, a dead run's leftovers are removed, a closed scope leaves nothing behind.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { cleanLeftovers, namespaceExists, netnsSupport, testBed } from "../support/netns.js"
import { redisServer } from "../support/servers.js"
import { requireNetns } from "./support.js"

const support = await netnsSupport()

/** Whether a TCP connection from this process to host:port is established within 1 s. */
const reaches = (host: string, port: number) =>
  Effect.async<boolean>((resume) => {
    const s = net.createConnection({ host, port })
    const done = (ok: boolean) => {
      s.destroy()
      resume(Effect.succeed(ok))
    }
    s.setTimeout(1000, () => done(false))
    s.once("connect", () => done(true))
    s.once("error", () => done(false))
    return Effect.sync(() => s.destroy())
  })

/** Whether a TCP connection from inside namespace `ns` to host:port is established within 1 s (bash's /dev/tcp). */
const reachesFrom = (ns: string, host: string, port: number) =>
  Effect.async<boolean>((resume) => {
    const child = spawn("ip", ["netns", "exec", ns, "timeout", "1", "bash", "-c", `exec 3<>/dev/tcp/${host}/${port}`], { stdio: "ignore" })
    child.on("close", (code) => resume(Effect.succeed(code === 0)))
    child.on("error", () => resume(Effect.succeed(false)))
  })

const ipOutput = (...args: string[]) =>
  Effect.async<string>((resume) => {
    let out = ""
    const child = spawn("ip", args, { stdio: ["ignore", "pipe", "ignore"] })
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
    child.on("close", () => resume(Effect.succeed(out)))
    child.on("error", () => resume(Effect.succeed(out)))
  })

const ip = (...args: string[]) =>
  Effect.async<void>((resume) => {
    const child = spawn("ip", args, { stdio: "ignore" })
    child.on("close", () => resume(Effect.void))
    child.on("error", () => resume(Effect.void))
  })

describe.skipIf(requireNetns(support))("partition test bed (network namespaces)", () => {
  it.live("hosts reach each other and the clients; cuts drop what they name; heal restores; scope close removes everything", () =>
    Effect.acquireUseRelease(Scope.make(), (scope) => Effect.gen(function* () {
      const bed = yield* Scope.extend(testBed(["a", "b", "c"]), scope)
      expect(bed.subnet).toMatch(/^198\.18\.\d+\.0\/24$/)
      const a = bed.host("a")
      const b = bed.host("b")
      const redisA = yield* Scope.extend(redisServer({ placement: a, port: 6390 }), scope)
      const redisB = yield* Scope.extend(redisServer({ placement: b, port: 6390 }), scope)
      expect(yield* redisA.cli("PING")).toBe("PONG")
      expect(yield* reaches(a.host, 6390)).toBe(true)
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(true)
      expect(yield* reachesFrom(bed.host("c").netns, a.host, 6390)).toBe(true)

      // One-way, one peer: a drops what comes from b; c and the clients still get through.
      yield* bed.cut({ host: "a", peers: ["b"], direction: "in" })
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(false)
      expect(yield* reachesFrom(bed.host("c").netns, a.host, 6390)).toBe(true)
      expect(yield* reaches(a.host, 6390)).toBe(true)
      // Packet level, one way: only a's input chain holds a rule. (TCP from a to b fails too:
      // b's SYN-ACK is an incoming packet from b.)
      const oneWay = yield* bed.rules("a")
      expect(oneWay).toMatch(/chain input[^}]*ip saddr 198\.18\.\d+\.11 drop/)
      expect(oneWay).not.toMatch(/chain output[^}]*drop/)
      expect(yield* reachesFrom(a.netns, bed.host("c").host, 6390)).toBe(false) // nothing listens on c
      expect(yield* reachesFrom(a.netns, b.host, 6390)).toBe(false)
      yield* bed.heal("a")
      expect(yield* reachesFrom(a.netns, b.host, 6390)).toBe(true)
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(true)

      // Outgoing only: a cannot reach b, b still reaches a.
      yield* bed.cut({ host: "a", peers: ["b"], direction: "out" })
      expect(yield* reachesFrom(a.netns, b.host, 6390)).toBe(false)
      // b's SYN arrives but a's SYN-ACK to b is dropped: no connection either way.
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(false)
      yield* bed.heal("a")

      // Per port: only a's port 6390 is closed to b; another port of a is not.
      const other = yield* Scope.extend(redisServer({ placement: a, port: 6391 }), scope)
      yield* bed.cut({ host: "a", peers: ["b"], direction: "in", localPorts: [6390] })
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(false)
      expect(yield* reachesFrom(b.netns, a.host, other.port)).toBe(true)
      expect(yield* bed.rules("a")).toContain("rdt_cut")
      yield* bed.healAll
      expect(yield* bed.rules("a")).not.toContain("rdt_cut")
      expect(yield* reachesFrom(b.netns, a.host, 6390)).toBe(true)
      // Healing twice is harmless.
      yield* bed.heal("a")

      // Loopback inside a host is never cut, whatever the rules.
      yield* bed.cut({ host: "a", peers: ["b", "c", bed.clientAddress] })
      expect(yield* reaches(a.host, 6390)).toBe(false)
      expect(yield* reachesFrom(a.netns, a.host, 6390)).toBe(true)

      yield* Scope.close(scope, Exit.void)
      for (const h of bed.hosts) expect(yield* namespaceExists(h.netns)).toBe(false)
      expect(yield* namespaceExists(`${bed.runId}-sw`)).toBe(false)
      // No probe to the old addresses now: with the client veth gone they would follow the
      // default route off the machine. The veth and its route must be gone.
      expect(yield* ipOutput("-o", "link", "show")).not.toContain(`${bed.runId}c`)
      expect(yield* ipOutput("-4", "route", "show")).not.toContain(bed.subnet)
      expect(redisB.pid()).toBeUndefined()
    }), (scope, exit) => Scope.close(scope, exit))
  )

  it.live("leftovers of a dead run are removed, a live run's are kept", () =>
    Effect.gen(function* () {
      // A pid that cannot be alive (above Linux's pid_max limit of 2^22).
      const deadNs = "rdt9999999-zk1"
      const liveNs = `rdt${process.pid}-keep`
      yield* ip("netns", "add", deadNs)
      yield* ip("netns", "add", liveNs)
      const removed = yield* cleanLeftovers.pipe(Effect.ensuring(ip("netns", "del", liveNs)))
      expect(removed).toContain(deadNs)
      expect(removed).not.toContain(liveNs)
      expect(yield* namespaceExists(deadNs)).toBe(false)
    })
  )
})
