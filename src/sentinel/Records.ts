/**
 * What a dictator tells Redis clients through its Sentinel-compatible endpoint, as plain data:
 * a `DiscoveryView` built from the node's status (and the previous view, which remembers the last
 * master and the members that left), and the Sentinel instance records built from it. No I/O.
 */
import { createHash } from "node:crypto"

// ---------------------------------------------------------------------------------------------
// The narrow shape of the node's status this module reads (NodeStatus satisfies it)

export interface StatusMember {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly priority: number
  readonly healthy: boolean
  readonly role: string
  readonly offset: number
  readonly link_up: boolean
  readonly master_down: string | null
  /** "host:port" of the member's own discovery endpoint, when it runs one. */
  readonly sentinel?: string | null | undefined
}

export type StatusMaster =
  | { readonly _tag: "Absent" }
  | { readonly _tag: "Malformed" }
  | { readonly _tag: "Present"; readonly record: { readonly name: string; readonly host: string; readonly port: number }; readonly epoch: string }

export interface StatusInput {
  readonly name: string
  readonly service: string
  readonly session: { readonly status: string; readonly since: number }
  /** null until the master znode was read once. */
  readonly master: StatusMaster | null
  readonly members: ReadonlyArray<StatusMember>
}

// ---------------------------------------------------------------------------------------------
// The view

export interface Address {
  readonly host: string
  readonly port: number
}

export interface MasterInfo extends Address {
  /** The node name in the master record. */
  readonly name: string
  /** czxid of the master znode, a decimal string. */
  readonly epoch: string
}

export interface MemberInfo extends Address {
  readonly name: string
  readonly priority: number
  readonly healthy: boolean
  readonly role: string
  readonly offset: number
  readonly linkUp: boolean
  readonly sentinel: Address | null
  /** False for a member that left (its znode is gone): it is shown `disconnected`. */
  readonly present: boolean
}

export interface DiscoveryView {
  readonly service: string
  /** This dictator's node name (its own endpoint is not listed among the sentinels). */
  readonly self: string
  /** The current master, or the last one known while none replaced it; null when none was ever seen. */
  readonly master: MasterInfo | null
  /** The master znode names `master` now. */
  readonly masterPresent: boolean
  /** This dictator, or the master's own dictator, finds the master's Redis down. */
  readonly masterSdown: boolean
  /** Lost and not replaced: the znode is gone, or a majority of the other members voted it down. */
  readonly masterOdown: boolean
  readonly votes: number
  readonly quorum: number
  /**
   * This dictator has been cut off from ZooKeeper long enough that it cannot vouch for anything:
   * it hands out no master (clients ask another sentinel) and flags the master down.
   */
  readonly stale: boolean
  /** Current members first (by name), then those that left. */
  readonly members: ReadonlyArray<MemberInfo>
}

/** Members that left are remembered up to this many (newest kept). */
export const MAX_DEPARTED = 64

/** "host:port" or "[v6]:port" into an address; null when it is not one. */
export const parseEndpoint = (s: string | null | undefined): Address | null => {
  if (s === null || s === undefined) return null
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s.trim())
  if (m === null) return null
  const port = Number(m[3])
  if (!(port >= 1 && port <= 65535)) return null
  return { host: (m[1] ?? m[2])!, port }
}

export const formatEndpoint = (a: Address): string => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)

const memberInfo = (m: StatusMember): MemberInfo => ({
  name: m.name,
  host: m.host,
  port: m.port,
  priority: m.priority,
  healthy: m.healthy,
  role: m.role,
  offset: m.offset,
  linkUp: m.link_up,
  sentinel: parseEndpoint(m.sentinel),
  present: true
})

export interface ViewOptions {
  /** Clock millis now. */
  readonly now: number
  /** A session not connected for this long makes the view stale. */
  readonly staleAfterMs: number
}

export const fromStatus = (status: StatusInput, previous: DiscoveryView | null, opts: ViewOptions): DiscoveryView => {
  const current = [...status.members].sort((a, b) => a.name.localeCompare(b.name))
  const names = new Set(current.map((m) => m.name))
  const departed = (previous?.members ?? [])
    .filter((m) => !names.has(m.name))
    .map((m) => (m.present ? { ...m, present: false, healthy: false, linkUp: false } : m))
    .slice(-MAX_DEPARTED)

  const stale = status.session.status !== "connected" && opts.now - status.session.since >= opts.staleAfterMs

  let master: MasterInfo | null = previous?.master ?? null
  let masterPresent = false
  let masterSdown = true
  let masterOdown = true
  let votes = 0
  let quorum = 1
  if (status.master !== null && status.master._tag === "Present") {
    const { record, epoch } = status.master
    master = { name: record.name, host: record.host, port: record.port, epoch }
    masterPresent = true
    // As the dictators count votes: a majority of the members other than the master's own.
    const others = current.filter((m) => m.name !== record.name)
    votes = others.filter((m) => m.master_down === epoch).length
    quorum = Math.floor(others.length / 2) + 1
    masterOdown = votes >= quorum && others.length > 0
    const own = current.find((m) => m.name === status.name)
    const masters = current.find((m) => m.name === record.name)
    masterSdown = masterOdown || own?.master_down === epoch || (masters !== undefined && !masters.healthy)
  } else if (status.master === null && previous === null) {
    // Not read yet: nothing to say, nothing down.
    masterSdown = false
    masterOdown = false
  }

  return {
    service: status.service,
    self: status.name,
    master,
    masterPresent,
    masterSdown,
    masterOdown,
    votes,
    quorum,
    stale,
    members: [...current.map(memberInfo), ...departed]
  }
}

// ---------------------------------------------------------------------------------------------
// What the endpoint answers

/**
 * The master to hand out (`get-master-addr-by-name`): the current one, or the last one while it is
 * lost and not yet replaced, as Sentinel does — its records carry `s_down,o_down` for the clients
 * that read flags, and the others fail to connect and ask again. Nothing when none is known or
 * when this dictator is cut off from ZooKeeper: it cannot vouch for any master, and the client
 * asks another sentinel. (Answering nothing while a master is merely lost would be worse:
 * ioredis's failoverDetector, firing while ioredis loops over sentinels that answer nothing,
 * makes that ioredis client give up for good.)
 */
export const handOut = (v: DiscoveryView | null): Address | null =>
  v !== null && v.master !== null && !v.stale ? { host: v.master.host, port: v.master.port } : null

const sameAddress = (a: Address, b: Address) => a.port === b.port && a.host === b.host

/** The members shown as replicas: every member but the master's. */
export const replicas = (v: DiscoveryView): ReadonlyArray<MemberInfo> =>
  v.members.filter((m) => v.master === null || (m.name !== v.master.name && !sameAddress(m, v.master)))

/** Other dictators' discovery endpoints, members that left excluded. */
export const sentinels = (v: DiscoveryView): ReadonlyArray<MemberInfo & { readonly sentinel: Address }> =>
  v.members.filter((m): m is MemberInfo & { readonly sentinel: Address } => m.present && m.sentinel !== null && m.name !== v.self)

/** A stable 40-hex id per service and node, as Sentinel's run ids look. */
export const runId = (service: string, name: string): string =>
  createHash("sha1").update(`redis-dictator\0${service}\0${name}`).digest("hex")

export const masterFlags = (v: DiscoveryView): string => {
  const flags = ["master"]
  if (v.masterSdown || v.stale) flags.push("s_down")
  if (v.masterOdown || v.stale) flags.push("o_down")
  return flags.join(",")
}

/** A replica is down unless it is present, healthy and replicating. */
export const replicaDown = (m: MemberInfo): boolean => !m.present || !m.healthy || m.role !== "replica"

export const replicaFlags = (m: MemberInfo): string => {
  const flags = ["slave"]
  if (replicaDown(m)) flags.push("s_down")
  if (!m.present) flags.push("disconnected")
  return flags.join(",")
}

export type Fields = ReadonlyArray<readonly [string, string]>

export interface RecordOptions {
  readonly downAfterMs: number
}

export const masterRecord = (v: DiscoveryView, master: MasterInfo, opts: RecordOptions): Fields => {
  const flags = masterFlags(v)
  return [
    ["name", v.service],
    ["ip", master.host],
    ["port", String(master.port)],
    ["runid", runId(v.service, master.name)],
    ["flags", flags],
    ["link-pending-commands", "0"],
    ["link-refcount", "1"],
    ["last-ping-sent", "0"],
    ["last-ok-ping-reply", "0"],
    ["last-ping-reply", "0"],
    ...(flags.includes("s_down") ? ([["s-down-time", "0"]] as const) : []),
    ...(flags.includes("o_down") ? ([["o-down-time", "0"]] as const) : []),
    ["down-after-milliseconds", String(opts.downAfterMs)],
    ["info-refresh", "0"],
    ["role-reported", "master"],
    ["role-reported-time", "0"],
    ["config-epoch", master.epoch],
    ["num-slaves", String(replicas(v).length)],
    ["num-other-sentinels", String(sentinels(v).length)],
    ["quorum", String(v.quorum)],
    ["failover-timeout", "180000"],
    ["parallel-syncs", "1"]
  ]
}

export const replicaRecord = (v: DiscoveryView, m: MemberInfo, opts: RecordOptions): Fields => {
  const address = formatEndpoint(m)
  return [
    ["name", address],
    ["ip", m.host],
    ["port", String(m.port)],
    ["runid", runId(v.service, m.name)],
    ["flags", replicaFlags(m)],
    ["link-pending-commands", "0"],
    ["link-refcount", "1"],
    ["last-ping-sent", "0"],
    ["last-ok-ping-reply", "0"],
    ["last-ping-reply", "0"],
    ["down-after-milliseconds", String(opts.downAfterMs)],
    ["info-refresh", "0"],
    ["role-reported", m.role === "master" ? "master" : "slave"],
    ["role-reported-time", "0"],
    ["master-link-down-time", "0"],
    ["master-link-status", m.present && m.linkUp ? "ok" : "err"],
    ["master-host", v.master?.host ?? "?"],
    ["master-port", String(v.master?.port ?? 0)],
    ["slave-priority", String(m.priority)],
    ["slave-repl-offset", String(m.offset)],
    ["replica-announced", "1"]
  ]
}

export const sentinelRecord = (v: DiscoveryView, m: MemberInfo & { readonly sentinel: Address }, opts: RecordOptions): Fields => {
  const id = runId(v.service, `${m.name}/sentinel`)
  return [
    ["name", id],
    ["ip", m.sentinel.host],
    ["port", String(m.sentinel.port)],
    ["runid", id],
    ["flags", "sentinel"],
    ["link-pending-commands", "0"],
    ["link-refcount", "1"],
    ["last-ping-sent", "0"],
    ["last-ok-ping-reply", "0"],
    ["last-ping-reply", "0"],
    ["down-after-milliseconds", String(opts.downAfterMs)],
    ["last-hello-message", "0"],
    ["voted-leader", "?"],
    ["voted-leader-epoch", "0"]
  ]
}
