/**
 * What `dictator list` shows, from what it read in ZooKeeper: one view per service, its JSON
 * (a stable schema, documented in README "Operating") and its table. Pure: no I/O.
 */
import type {
  MaintenanceRecord,
  MasterView,
  MemberRecord,
  SwitchoverRequest,
  SwitchoverResult
} from "./domain/Records.js"

/** Everything read about one service. */
export interface ServiceSnapshot {
  readonly service: string
  readonly master: MasterView
  readonly members: ReadonlyArray<MemberRecord>
  /** Present (maybe unreadable: `{}` then) while the service is paused. */
  readonly maintenance: MaintenanceRecord | { readonly malformed: string } | null
  readonly switchover: SwitchoverRequest | { readonly malformed: string } | null
  readonly lastSwitchover: SwitchoverResult | null
}

/** `dictator list --json`: `{ "services": [ServiceJson…] }`. Fields are only ever added. */
export interface ServiceJson {
  readonly service: string
  readonly master: { readonly name: string; readonly host: string; readonly port: number; readonly epoch: string } | null
  /** Set when the master znode exists but cannot be read. */
  readonly master_malformed: string | null
  readonly maintenance: boolean
  readonly maintenance_since: string | null
  readonly maintenance_by: string | null
  readonly switchover_pending: SwitchoverRequest | null
  readonly last_switchover: SwitchoverResult | null
  readonly members: ReadonlyArray<MemberJson>
}

export interface MemberJson {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly address: string
  /** "master" for the elected master; otherwise the role its dictator publishes (replica, master, unknown). */
  readonly role: string
  /** True for the member named by the master znode. */
  readonly elected: boolean
  readonly healthy: boolean
  readonly offset: number
  /** Bytes behind the master's published offset; null for the master or without one. */
  readonly lag_bytes: number | null
  /** Seconds behind when known; member records carry no time, so null today. */
  readonly lag_seconds: number | null
  readonly link_up: boolean
  readonly priority: number
  /** Epoch (czxid) of the master this member votes unreachable, or null. */
  readonly master_down: string | null
  readonly version: string
}

export const serviceJson = (s: ServiceSnapshot): ServiceJson => {
  const elected = s.master._tag === "Present" ? s.master.record.name : null
  const masterMember = elected === null ? undefined : s.members.find((m) => m.name === elected)
  const masterOffset = masterMember?.offset ?? null
  const members = [...s.members].sort((a, b) => (a.name === elected ? -1 : b.name === elected ? 1 : a.name.localeCompare(b.name)))
  const maintenance = s.maintenance
  return {
    service: s.service,
    master:
      s.master._tag === "Present"
        ? { name: s.master.record.name, host: s.master.record.host, port: s.master.record.port, epoch: s.master.epoch }
        : null,
    master_malformed: s.master._tag === "Malformed" ? s.master.reason : null,
    maintenance: maintenance !== null,
    maintenance_since: maintenance !== null && "since" in maintenance ? maintenance.since : null,
    maintenance_by: maintenance !== null && "by" in maintenance ? maintenance.by : null,
    switchover_pending: s.switchover !== null && "id" in s.switchover ? s.switchover : null,
    last_switchover: s.lastSwitchover,
    members: members.map((m) => ({
      name: m.name,
      host: m.host,
      port: m.port,
      address: `${m.host}:${m.port}`,
      role: m.name === elected ? "master" : m.role,
      elected: m.name === elected,
      healthy: m.healthy,
      offset: m.offset,
      lag_bytes: m.name === elected || masterOffset === null ? null : Math.max(0, masterOffset - m.offset),
      lag_seconds: null,
      link_up: m.link_up,
      priority: m.priority,
      master_down: m.master_down,
      version: m.version
    }))
  }
}

const pad = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()).join("\n")
}

const flagsOf = (m: MemberJson, s: ServiceJson): string => {
  const flags: Array<string> = []
  if (s.maintenance) flags.push("paused")
  if (!m.elected && m.role === "master") flags.push("not-elected")
  if (!m.elected && !m.link_up) flags.push("link-down")
  if (m.priority === 0) flags.push("never-master")
  if (m.master_down !== null && s.master !== null && m.master_down === s.master.epoch) flags.push("votes-master-down")
  return flags.length === 0 ? "-" : flags.join(",")
}

/** One service as a table with a header line, as `dictator list` prints it. */
export const serviceTable = (s: ServiceJson): string => {
  const master =
    s.master !== null
      ? `master ${s.master.name} (${s.master.host}:${s.master.port}, epoch ${s.master.epoch})`
      : s.master_malformed !== null
        ? `master znode malformed (${s.master_malformed})`
        : "no master"
  const notes = [
    s.maintenance ? `MAINTENANCE (paused${s.maintenance_since === null ? "" : ` since ${s.maintenance_since}`}${s.maintenance_by === null ? "" : ` by ${s.maintenance_by}`}): no automatic failover` : null,
    s.switchover_pending === null
      ? null
      : `switchover pending${s.switchover_pending.to === null ? "" : ` to ${s.switchover_pending.to}`}${s.switchover_pending.at === null ? "" : ` at ${s.switchover_pending.at}`} (asked by ${s.switchover_pending.by})`
  ].filter((n): n is string => n !== null)
  const header = `service ${s.service}: ${master}${notes.map((n) => `\n  ${n}`).join("")}`
  if (s.members.length === 0) return `${header}\n  (no members)`
  const rows = [
    ["MEMBER", "ADDRESS", "ROLE", "HEALTH", "OFFSET", "LAG", "PRIORITY", "EPOCH", "FLAGS"],
    ...s.members.map((m) => [
      m.name,
      m.address,
      m.role,
      m.healthy ? "healthy" : "unhealthy",
      String(m.offset),
      m.lag_bytes === null ? "-" : `${m.lag_bytes} B${m.lag_seconds === null ? "" : ` / ${m.lag_seconds}s`}`,
      String(m.priority),
      m.elected && s.master !== null ? s.master.epoch : "-",
      flagsOf(m, s)
    ])
  ]
  return `${header}\n${pad(rows)}`
}
