/**
 * A network-partition test bed on real Linux network namespaces (issue 8), as a scoped resource.
 *
 * Layout, for a run of process PID with hosts h1 … hn:
 *
 *   namespace rdt<PID>-sw      a bridge `br0`, one port per host, one port `c0` for the clients
 *   namespace rdt<PID>-<h>     `eth0` (veth into the bridge) with 198.18.<N>.<i>/24, and `lo`
 *   root namespace             `rdt<PID>c` (veth into the bridge) with 198.18.<N>.254/24
 *
 * Why the clients (this test process: writers, checkers, ZooKeeper readers) sit in the root
 * namespace behind one extra veth: they are this Node process, and a Node process cannot enter
 * another namespace (there is no setns), so running them "in the switch namespace" would mean a
 * second process and an IPC protocol for every measurement. The price is one connected route,
 * 198.18.<N>.0/24 dev rdt<PID>c, in the root namespace: a /24 of the benchmarking range
 * 198.18.0.0/15 (RFC 2544, never a real network) that no other route of the machine covers
 * (checked; another live run's /24 is skipped), pointing at a veth whose other end is a bridge
 * with no uplink. Nothing leaves the machine, and the route disappears with the veth. The bridge
 * itself lives in its own namespace, so the root namespace gets no bridge and no forwarding.
 *
 * Partitions are nftables rules in a host's own namespace (table `inet rdt_cut`): traffic from
 * chosen peers dropped on input, to them on output, or both, optionally only for some ports.
 * Dropped, not rejected: a cut link is silent, as a real one is. Healing deletes the table.
 *
 * Scope close (test passed, failed or was interrupted) kills whatever still runs in the
 * namespaces, deletes them and the client veth. At start, the leftovers of earlier runs whose
 * process is dead (a crashed or SIGKILLed vitest) are removed the same way; a live run's never.
 *
 * Needs root (CI runs as root), `ip` (iproute2) and `nft` (nftables) with kernel support;
 * `netnsSupport` says in one line why not, so a suite can skip (or fail under CI=true).
 */
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { Data, Effect, type Scope } from "effect"
import type { Placement } from "./servers.js"

export class NetnsError extends Data.TaggedError("NetnsError")<{ readonly message: string }> {}

const PREFIX = "rdt"
const TABLE = "rdt_cut"

// ---------------------------------------------------------------------------------------------
// Running ip / nft
// ---------------------------------------------------------------------------------------------

interface RunResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to completion (≤ 10 s), feeding `input` on stdin. Never fails: the caller reads the code. */
const run = (command: string, args: ReadonlyArray<string>, input?: string): Effect.Effect<RunResult> =>
  Effect.async<RunResult>((resume) => {
    let stdout = ""
    let stderr = ""
    let settled = false
    const child = spawn(command, [...args], { stdio: ["pipe", "pipe", "pipe"] })
    const settle = (r: RunResult) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resume(Effect.succeed(r))
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      settle({ code: null, stdout, stderr: `${stderr}\n(killed after 10 s)` })
    }, 10_000)
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", (e) => settle({ code: null, stdout, stderr: `${stderr}${e.message}` }))
    child.on("close", (code) => settle({ code, stdout, stderr }))
    child.stdin.on("error", () => {})
    child.stdin.end(input ?? "")
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

/** Runs a command that must succeed; fails with the command line and its stderr. */
const must = (command: string, args: ReadonlyArray<string>, input?: string): Effect.Effect<string, NetnsError> =>
  Effect.flatMap(run(command, args, input), (r) =>
    r.code === 0
      ? Effect.succeed(r.stdout)
      : Effect.fail(new NetnsError({ message: `${command} ${args.join(" ")} failed (${r.code ?? "no exit code"}): ${r.stderr.trim()}` }))
  )

const ip = (...args: ReadonlyArray<string>) => must("ip", args)
const inNs = (ns: string, command: string, args: ReadonlyArray<string>, input?: string) =>
  must("ip", ["netns", "exec", ns, command, ...args], input)

// ---------------------------------------------------------------------------------------------
// Support check
// ---------------------------------------------------------------------------------------------

let supportCache: Promise<string | undefined> | undefined

/**
 * Undefined when namespaces, veths, a bridge and nftables work here; otherwise one line saying
 * why not (not root, `ip` or `nft` missing, no kernel support). Checked once per process, with a
 * throwaway namespace.
 */
export const netnsSupport = (): Promise<string | undefined> => {
  supportCache ??= Effect.runPromise(
    Effect.gen(function* () {
      if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`
      if (typeof process.getuid === "function" && process.getuid() !== 0) {
        return "network namespaces need root (ip netns add, nft); run as root or under CI=true in a root container"
      }
      const hasIp = yield* run("ip", ["-V"])
      if (hasIp.code !== 0) return "`ip` (iproute2) is not installed: apt-get install iproute2 (or `bash test/run.sh --setup-only`)"
      const hasNft = yield* run("nft", ["--version"])
      if (hasNft.code !== 0) return "`nft` (nftables) is not installed: apt-get install nftables (or `bash test/run.sh --setup-only`)"
      const probe = `${PREFIX}${process.pid}-probe`
      const made = yield* run("ip", ["netns", "add", probe])
      if (made.code !== 0) return `cannot create a network namespace: ${made.stderr.trim()}`
      const result = yield* Effect.gen(function* () {
        const veth = yield* run("ip", ["-n", probe, "link", "add", "name", "a", "type", "veth", "peer", "name", "b"])
        if (veth.code !== 0) return `cannot create a veth pair (kernel module veth?): ${veth.stderr.trim()}`
        const bridge = yield* run("ip", ["-n", probe, "link", "add", "name", "br0", "type", "bridge"])
        if (bridge.code !== 0) return `cannot create a bridge (kernel module bridge?): ${bridge.stderr.trim()}`
        const nft = yield* run("ip", ["netns", "exec", probe, "nft", "-f", "-"], `table inet ${TABLE} {\n  chain input { type filter hook input priority 0; policy accept; ip saddr 198.18.0.1 drop; }\n}\n`)
        if (nft.code !== 0) return `nftables does not work here (kernel support for nf_tables?): ${nft.stderr.trim()}`
        return undefined
      }).pipe(Effect.ensuring(run("ip", ["netns", "del", probe])))
      return result
    })
  )
  return supportCache
}

// ---------------------------------------------------------------------------------------------
// Leftovers of dead runs
// ---------------------------------------------------------------------------------------------

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists, owned by someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const nsPattern = new RegExp(`^${PREFIX}(\\d+)-[A-Za-z0-9]+$`)
const linkPattern = new RegExp(`^${PREFIX}(\\d+)c$`)

const namespaces: Effect.Effect<ReadonlyArray<string>> = Effect.map(run("ip", ["netns", "list"]), (r) =>
  r.stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((n) => n.length > 0)
)

/** SIGKILLs every process in `ns`, waits until none is left (≤ 5 s), deletes `ns`. */
const destroyNamespace = (ns: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (let i = 0; i < 50; i++) {
      const pids = (yield* run("ip", ["netns", "pids", ns])).stdout
        .split("\n")
        .map((p) => Number(p.trim()))
        .filter((p) => Number.isInteger(p) && p > 0)
      if (pids.length === 0) break
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
      yield* Effect.sleep("100 millis")
    }
    yield* run("ip", ["netns", "del", ns])
  })

/** Removes the namespaces and client veths of earlier runs whose process is gone; returns their names. */
export const cleanLeftovers: Effect.Effect<ReadonlyArray<string>> = Effect.gen(function* () {
  const removed: Array<string> = []
  for (const ns of yield* namespaces) {
    const m = nsPattern.exec(ns)
    if (m === null) continue
    const pid = Number(m[1])
    if (pid === process.pid || pidAlive(pid)) continue
    yield* destroyNamespace(ns)
    removed.push(ns)
  }
  const links = (yield* run("ip", ["-o", "link", "show"])).stdout
  for (const line of links.split("\n")) {
    const name = /^\d+:\s+([^:@\s]+)/.exec(line)?.[1]
    const m = name === undefined ? null : linkPattern.exec(name)
    if (name === undefined || m === null) continue
    const pid = Number(m[1])
    if (pid === process.pid || pidAlive(pid)) continue
    yield* run("ip", ["link", "del", name])
    removed.push(name)
  }
  return removed
})

// ---------------------------------------------------------------------------------------------
// The bed
// ---------------------------------------------------------------------------------------------

export interface NetHost extends Placement {
  readonly name: string
}

/** Which traffic of a host a cut drops: from the peers (`in`), to them (`out`), or `both`. */
export type Direction = "in" | "out" | "both"

export interface Cut {
  /** The host whose namespace holds the rules. */
  readonly host: string
  /** Names of other hosts (or raw addresses); traffic with these is dropped. */
  readonly peers: ReadonlyArray<string>
  readonly direction?: Direction
  /** Only these local ports (incoming: destination port; outgoing: source port) or, for `remotePorts`, the peer's. */
  readonly localPorts?: ReadonlyArray<number>
  readonly remotePorts?: ReadonlyArray<number>
}

export interface TestBed {
  readonly runId: string
  /** "198.18.N.0/24" */
  readonly subnet: string
  /** The address of this process (the clients) on the bridge. */
  readonly clientAddress: string
  readonly hosts: ReadonlyArray<NetHost>
  readonly host: (name: string) => NetHost
  /** Adds drop rules in `cut.host`'s namespace (on top of any already there). */
  readonly cut: (cut: Cut) => Effect.Effect<void, NetnsError>
  /** Removes every rule of `host` (deletes its table); a no-op when there is none. */
  readonly heal: (host: string) => Effect.Effect<void, NetnsError>
  readonly healAll: Effect.Effect<void, NetnsError>
  /** The rules currently in `host`'s namespace (nft list ruleset), for logs. */
  readonly rules: (host: string) => Effect.Effect<string>
}

const hostName = /^[a-z][a-z0-9]{0,7}$/

/** A /24 of 198.18.0.0/15 that no address or route of the root namespace touches yet. */
const freeSubnet: Effect.Effect<number, NetnsError> = Effect.gen(function* () {
  const text = (yield* run("ip", ["-4", "-o", "addr", "show"])).stdout + (yield* run("ip", ["-4", "route", "show"])).stdout
  const used = new Set<number>()
  for (const m of text.matchAll(/198\.18\.(\d+)\./g)) used.add(Number(m[1]))
  if (/198\.18\.0\.0\/(1[5-9]|2[0-3])\b/.test(text)) {
    return yield* Effect.fail(new NetnsError({ message: "a route of this machine covers 198.18.0.0/15 already; the test bed will not overlap it" }))
  }
  const start = (process.pid % 250) + 1
  for (let i = 0; i < 250; i++) {
    const n = ((start + i - 1) % 250) + 1
    if (!used.has(n)) return n
  }
  return yield* Effect.fail(new NetnsError({ message: "no free /24 left in 198.18.0.0/24 … 198.18.250.0/24" }))
})

/**
 * Builds the bed for `names` (lower-case, ≤ 8 characters each): host i gets 198.18.N.(10+i).
 * Removed when the scope closes.
 */
export const testBed = (names: ReadonlyArray<string>): Effect.Effect<TestBed, NetnsError, Scope.Scope> =>
  Effect.gen(function* () {
    const problem = yield* Effect.promise(netnsSupport)
    if (problem !== undefined) return yield* Effect.fail(new NetnsError({ message: problem }))
    for (const n of names) {
      if (!hostName.test(n)) return yield* Effect.fail(new NetnsError({ message: `bad host name ${JSON.stringify(n)}: lower-case letters and digits, ≤ 8` }))
    }
    if (new Set(names).size !== names.length) return yield* Effect.fail(new NetnsError({ message: `duplicate host names in ${names.join(", ")}` }))
    if (names.length > 200) return yield* Effect.fail(new NetnsError({ message: "at most 200 hosts" }))
    yield* cleanLeftovers
    const runId = `${PREFIX}${process.pid}`
    const sw = `${runId}-sw`
    const clientLink = `${runId}c`
    const n = yield* freeSubnet
    const net = `198.18.${n}`
    const hosts: Array<NetHost> = names.map((name, i) => ({ name, netns: `${runId}-${name}`, host: `${net}.${10 + i}` }))

    // Torn down in one finalizer, whatever part of the build succeeded.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* run("ip", ["link", "del", clientLink])
        for (const h of hosts) yield* destroyNamespace(h.netns)
        yield* destroyNamespace(sw)
      })
    )

    yield* ip("netns", "add", sw)
    yield* ip("-n", sw, "link", "set", "lo", "up")
    yield* ip("-n", sw, "link", "add", "name", "br0", "type", "bridge")
    yield* ip("-n", sw, "link", "set", "br0", "up")
    for (const h of hosts) {
      yield* ip("netns", "add", h.netns)
      yield* ip("-n", sw, "link", "add", "name", `p-${h.name}`, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
      yield* ip("-n", sw, "link", "set", `p-${h.name}`, "master", "br0", "up")
      yield* ip("-n", h.netns, "addr", "add", `${h.host}/24`, "dev", "eth0")
      yield* ip("-n", h.netns, "link", "set", "eth0", "up")
      yield* ip("-n", h.netns, "link", "set", "lo", "up")
    }
    const clientAddress = `${net}.254`
    yield* ip("link", "add", "name", clientLink, "type", "veth", "peer", "name", "c0", "netns", sw)
    yield* ip("-n", sw, "link", "set", "c0", "master", "br0", "up")
    yield* ip("addr", "add", `${clientAddress}/24`, "dev", clientLink)
    yield* ip("link", "set", clientLink, "up")

    const byName = new Map(hosts.map((h) => [h.name, h]))
    const host = (name: string): NetHost => {
      const h = byName.get(name)
      if (h === undefined) throw new Error(`no host ${name} in the test bed (${names.join(", ")})`)
      return h
    }
    const addressOf = (peer: string): string => byName.get(peer)?.host ?? peer

    const cut = (c: Cut): Effect.Effect<void, NetnsError> =>
      Effect.suspend(() => {
        const h = host(c.host)
        const direction = c.direction ?? "both"
        if (c.peers.length === 0) return Effect.fail(new NetnsError({ message: `cut of ${c.host}: no peers` }))
        const peers = `{ ${c.peers.map(addressOf).join(", ")} }`
        const ports = (p: ReadonlyArray<number> | undefined) => (p === undefined ? undefined : `{ ${p.join(", ")} }`)
        const local = ports(c.localPorts)
        const remote = ports(c.remotePorts)
        const rules: Array<string> = []
        if (direction !== "out") {
          rules.push(
            `add rule inet ${TABLE} input ip saddr ${peers}${local ? ` tcp dport ${local}` : ""}${remote ? ` tcp sport ${remote}` : ""} drop`
          )
        }
        if (direction !== "in") {
          rules.push(
            `add rule inet ${TABLE} output ip daddr ${peers}${local ? ` tcp sport ${local}` : ""}${remote ? ` tcp dport ${remote}` : ""} drop`
          )
        }
        const script = [
          `add table inet ${TABLE}`,
          `add chain inet ${TABLE} input { type filter hook input priority 0; policy accept; }`,
          `add chain inet ${TABLE} output { type filter hook output priority 0; policy accept; }`,
          ...rules
        ].join("\n")
        return inNs(h.netns, "nft", ["-f", "-"], script + "\n").pipe(Effect.asVoid)
      })

    const heal = (name: string): Effect.Effect<void, NetnsError> =>
      Effect.suspend(() => {
        const h = host(name)
        // One command (a flapping link heals every second): `delete` of a missing table fails
        // with ENOENT, which is a heal already done. (`destroy` would not fail, but needs
        // nftables ≥ 1.0.8; Debian 12 has 1.0.6.)
        return run("ip", ["netns", "exec", h.netns, "nft", "delete", "table", "inet", TABLE]).pipe(
          Effect.flatMap((r) =>
            r.code === 0 || /No such file or directory/.test(r.stderr)
              ? Effect.void
              : Effect.fail(new NetnsError({ message: `heal of ${name}: nft delete table inet ${TABLE} failed (${r.code ?? "no exit code"}): ${r.stderr.trim()}` }))
          )
        )
      })

    return {
      runId,
      subnet: `${net}.0/24`,
      clientAddress,
      hosts,
      host,
      cut,
      heal,
      healAll: Effect.forEach(hosts, (h) => heal(h.name), { discard: true }),
      rules: (name) => Effect.map(run("ip", ["netns", "exec", host(name).netns, "nft", "list", "ruleset"]), (r) => r.stdout)
    }
  })

/** True when `ip netns` knows `ns` (for the bed's own test). */
export const namespaceExists = (ns: string): Effect.Effect<boolean> =>
  Effect.map(namespaces, (all) => all.includes(ns) || existsSync(`/run/netns/${ns}`))
