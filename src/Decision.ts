/**
 * The decisions of a dictator, as plain functions of what it knows: parse the master record,
 * classify health checks, rank candidates, decide what to do next, count votes against a master.
 * No I/O here: everything is tested on tables of cases.
 */
import { Either, Option, ParseResult, Schema } from "effect"
import type { RedisAddress, RedisFailure, ReplicationInfo } from "./Redis.js"
import { sameAddress } from "./Redis.js"
import type { SessionInfo, ZkNode } from "./ZooKeeper.js"

// ---------------------------------------------------------------------------------------------
// The master record (COMPAT: `port` is a string, as the original wrote it)

const PortString = Schema.Union(
  Schema.String.pipe(Schema.pattern(/^\d{1,5}$/)),
  Schema.Int.pipe(Schema.between(1, 65535))
).annotations({ message: () => ({ message: "must be a port between 1 and 65535, as a string of digits or a number", override: true }) })

export const MasterRecordJson = Schema.Struct({
  host: Schema.String.pipe(Schema.minLength(1)),
  port: PortString,
  name: Schema.String.pipe(Schema.minLength(1))
})

export interface MasterRecord extends RedisAddress {
  readonly name: string
}

export type MasterView =
  | { readonly _tag: "Absent" }
  | {
      readonly _tag: "Malformed"
      readonly raw: string
      readonly reason: string
      readonly version: number
      readonly owner: string
      readonly epoch: string
      readonly epochVersion: number | null
    }
  | {
      readonly _tag: "Present"
      readonly record: MasterRecord
      readonly version: number
      /** czxid of the znode: every election makes a new one. */
      readonly epoch: string
      /** Hex session id of the owning dictator. */
      readonly owner: string
      /**
       * Version of the epoch znode bumped by the transaction that created this master znode, or
       * null when it was not created that way. Removing "this master and no newer one" checks it:
       * a znode's own version starts at 0 again when it is re-created, so it cannot tell.
       */
      readonly epochVersion: number | null
    }

export type PresentMaster = Extract<MasterView, { readonly _tag: "Present" }>

export const encodeMasterRecord = (r: MasterRecord, extra: Record<string, unknown> = {}): Uint8Array =>
  new TextEncoder().encode(JSON.stringify({ host: r.host, port: String(r.port), name: r.name, ...extra }))

/** `epochNode` is the epoch znode read after the master znode: it belongs to it when its last change is the master's creation. */
export const parseMasterView = (node: Option.Option<ZkNode>, epochNode: Option.Option<ZkNode> = Option.none()): MasterView => {
  if (Option.isNone(node)) return { _tag: "Absent" }
  const { data, stat } = node.value
  const raw = new TextDecoder().decode(data)
  const epochVersion = Option.isSome(epochNode) && epochNode.value.stat.mzxid === stat.czxid ? epochNode.value.stat.version : null
  const common = { version: stat.version, owner: stat.ephemeralOwner, epoch: stat.czxid, epochVersion }
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch {
    return { _tag: "Malformed", raw, reason: "not JSON", ...common }
  }
  const decoded = Schema.decodeUnknownEither(MasterRecordJson)(json)
  if (Either.isLeft(decoded)) {
    const issue = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)[0]
    const reason = issue === undefined ? "invalid" : `${issue.path.map(String).join(".") || "record"}: ${issue.message}`
    return { _tag: "Malformed", raw, reason, ...common }
  }
  const port = Number(decoded.right.port)
  if (!(port >= 1 && port <= 65535)) {
    return { _tag: "Malformed", raw, reason: `port ${decoded.right.port} out of range`, ...common }
  }
  return { _tag: "Present", record: { host: decoded.right.host, port, name: decoded.right.name }, ...common }
}

// ---------------------------------------------------------------------------------------------
// Member records: what each dictator publishes about itself

export const MemberRecordJson = Schema.Struct({
  name: Schema.String,
  host: Schema.String,
  port: Schema.Int,
  priority: Schema.Int,
  healthy: Schema.Boolean,
  role: Schema.String,
  offset: Schema.Number,
  link_up: Schema.Boolean,
  /** Epoch (czxid) of the master this member finds unreachable, or null. */
  master_down: Schema.NullOr(Schema.String),
  version: Schema.String
})
export type MemberRecord = typeof MemberRecordJson.Type

export const encodeMember = (m: MemberRecord): Uint8Array => new TextEncoder().encode(JSON.stringify(m))

export const parseMember = (data: Uint8Array): Option.Option<MemberRecord> => {
  try {
    return Schema.decodeUnknownOption(MemberRecordJson)(JSON.parse(new TextDecoder().decode(data)))
  } catch {
    return Option.none()
  }
}

// ---------------------------------------------------------------------------------------------
// Health

export interface HealthOptions {
  /** Timeouts this long in a row make a Redis down. */
  readonly downAfterMs: number
}

export type HealthState =
  | { readonly _tag: "Unknown" }
  | { readonly _tag: "Healthy"; readonly info: ReplicationInfo; readonly at: number }
  /** Failing checks that are not yet conclusive (timeouts shorter than down_after). */
  | { readonly _tag: "Suspect"; readonly since: number; readonly detail: string; readonly info: ReplicationInfo | null }
  | { readonly _tag: "Loading"; readonly since: number }
  | { readonly _tag: "Down"; readonly since: number; readonly detail: string }
  /**
   * The dictator's own access is refused (credentials, ACL, TLS certificate): nothing is known
   * about the server. Not healthy (no candidate, no promotion), not down (no resignation, no
   * vote against a master): fixed by the operator, never by a failover.
   */
  | { readonly _tag: "Misconfigured"; readonly since: number; readonly detail: string }

export type CheckResult = Either.Either<ReplicationInfo, RedisFailure>

const failingSince = (prev: HealthState, now: number): number =>
  prev._tag === "Suspect" || prev._tag === "Down" || prev._tag === "Loading" ? prev.since : now

/**
 * Folds one check into the health state. A refused connection means the process is gone: down
 * at once. A timeout may be a slow command: down only after `downAfterMs` of timeouts, so a
 * long `KEYS *` does not cause a failover. A dropped connection counts as refused on the second
 * check in a row (the reconnect will have told refused from alive by then).
 */
export const nextHealth = (prev: HealthState, result: CheckResult, now: number, opts: HealthOptions): HealthState => {
  if (Either.isRight(result)) return { _tag: "Healthy", info: result.right, at: now }
  const e = result.left
  const since = failingSince(prev, now)
  switch (e._tag) {
    case "RedisLoading":
      return { _tag: "Loading", since: prev._tag === "Loading" ? prev.since : now }
    case "RedisCommandError":
      return { _tag: "Down", since, detail: e.message }
    case "RedisAuthFailed":
      return { _tag: "Misconfigured", since: prev._tag === "Misconfigured" ? prev.since : now, detail: e.message }
    case "RedisUnavailable": {
      if (e.reason === "refused") return { _tag: "Down", since, detail: e.message }
      if (e.reason === "closed") {
        return prev._tag === "Suspect" || prev._tag === "Down"
          ? { _tag: "Down", since, detail: e.message }
          : { _tag: "Suspect", since, detail: e.message, info: prev._tag === "Healthy" ? prev.info : null }
      }
      if (prev._tag === "Down") return { _tag: "Down", since: prev.since, detail: e.message }
      return now - since >= opts.downAfterMs
        ? { _tag: "Down", since, detail: `${e.message} for ${now - since} ms` }
        : {
            _tag: "Suspect",
            since,
            detail: e.message,
            info: prev._tag === "Healthy" ? prev.info : prev._tag === "Suspect" ? prev.info : null
          }
    }
  }
}

/** Usable as a master or candidate right now (a Suspect Redis keeps its role until it is Down). */
export const isUp = (h: HealthState): boolean => h._tag === "Healthy" || h._tag === "Suspect"

export const lastInfo = (h: HealthState): ReplicationInfo | null =>
  h._tag === "Healthy" ? h.info : h._tag === "Suspect" ? h.info : null

// ---------------------------------------------------------------------------------------------
// Ranking

export interface Candidate {
  readonly name: string
  readonly priority: number
  readonly offset: number
  readonly healthy: boolean
  readonly reachable: boolean
  readonly syncInProgress: boolean
}

export interface Ranking {
  readonly ranked: ReadonlyArray<Candidate>
  /** Why each left-out member is not a candidate. */
  readonly excluded: ReadonlyArray<{ readonly name: string; readonly reason: string }>
}

/**
 * Orders the candidates of an election: priority (lower first, like Redis's replica-priority;
 * 0 never), then replication offset (highest first), then the previous master, then name. Every
 * dictator computes the same order from the same facts, so only the best one tries at once.
 */
export const rankCandidates = (candidates: ReadonlyArray<Candidate>, previousMaster: string | null): Ranking => {
  const excluded: Array<{ name: string; reason: string }> = []
  const eligible = candidates.filter((c) => {
    const reason =
      c.priority === 0
        ? "priority 0"
        : !c.healthy
          ? "unhealthy"
          : !c.reachable
            ? "Redis unreachable"
            : c.syncInProgress
              ? "still syncing from its master"
              : null
    if (reason !== null) excluded.push({ name: c.name, reason })
    return reason === null
  })
  const ranked = [...eligible].sort(
    (a, b) =>
      a.priority - b.priority ||
      b.offset - a.offset ||
      Number(b.name === previousMaster) - Number(a.name === previousMaster) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  )
  return { ranked, excluded }
}

export const describeRanking = (r: Ranking): string => {
  const best = r.ranked[0]
  if (best === undefined) return "no eligible candidate"
  return `highest offset ${best.offset} (priority ${best.priority}) among ${r.ranked.length} healthy candidate${r.ranked.length === 1 ? "" : "s"}`
}

// ---------------------------------------------------------------------------------------------
// Votes against an unreachable master

/** Majority of the members other than the master itself. */
export const votesNeeded = (otherMembers: number): number => Math.floor(otherMembers / 2) + 1

export interface VoteCount {
  readonly votes: number
  readonly needed: number
  readonly voters: ReadonlyArray<string>
  /** A majority of the other members finds the master unreachable. */
  readonly carried: boolean
}

export const countVotes = (
  members: ReadonlyMap<string, MemberRecord>,
  masterName: string,
  epoch: string
): VoteCount => {
  const others = [...members.values()].filter((m) => m.name !== masterName)
  const voters = others.filter((m) => m.master_down === epoch).map((m) => m.name)
  const needed = votesNeeded(others.length)
  return { votes: voters.length, needed, voters, carried: voters.length >= needed }
}

// ---------------------------------------------------------------------------------------------
// What to do next

export interface Self extends RedisAddress {
  readonly name: string
  readonly priority: number
}

export interface Situation {
  readonly now: number
  readonly self: Self
  readonly enabled: boolean
  readonly session: SessionInfo
  readonly master: MasterView
  readonly health: HealthState
  /** True while we believe we hold the master znode (set when seen as owner, kept while disconnected). */
  readonly owned: boolean
  readonly fenceAfterMs: number
}

export type Plan =
  | { readonly _tag: "Idle"; readonly reason: string }
  | { readonly _tag: "Elect" }
  | { readonly _tag: "BeMaster" }
  /** Give up `master`, this node's znode (that epoch, never a newer one). */
  | { readonly _tag: "Resign"; readonly master: PresentMaster; readonly reason: string }
  | { readonly _tag: "Follow"; readonly master: MasterRecord }
  | { readonly _tag: "Fence"; readonly reason: string }
  /** Remove `master`, left by an older session of this node. */
  | { readonly _tag: "ClearStale"; readonly master: PresentMaster; readonly reason: string }

export const decide = (s: Situation): Plan => {
  if (!s.enabled) return { _tag: "Idle", reason: "disabled" }
  if (s.session.status !== "connected") {
    // Expired: the master znode is gone already, a new master may exist. No grace period.
    if (s.owned && s.session.status === "expired") return { _tag: "Fence", reason: "ZooKeeper session expired" }
    const away = s.now - s.session.since
    if (s.owned && away >= s.fenceAfterMs) {
      return { _tag: "Fence", reason: `ZooKeeper ${s.session.status} for ${(away / 1000).toFixed(1)}s` }
    }
    return { _tag: "Idle", reason: `waiting for ZooKeeper (${s.session.status})` }
  }
  const m = s.master
  switch (m._tag) {
    case "Absent":
      if (s.self.priority === 0) return { _tag: "Fence", reason: "no master elected and priority 0" }
      return s.health._tag === "Healthy"
        ? { _tag: "Elect" }
        : { _tag: "Fence", reason: "no master elected and the local Redis is not healthy" }
    case "Malformed":
      return { _tag: "Fence", reason: `master znode is malformed (${m.reason}): not following it` }
    case "Present": {
      if (m.owner === s.session.sessionId) {
        return s.health._tag === "Down" || s.health._tag === "Loading"
          ? {
              _tag: "Resign",
              master: m,
              reason: s.health._tag === "Down" ? `local Redis down: ${s.health.detail}` : "local Redis is loading"
            }
          : { _tag: "BeMaster" }
      }
      if (m.record.name === s.self.name) {
        return {
          _tag: "ClearStale",
          master: m,
          reason: `master znode names this node but belongs to an older session 0x${m.owner}`
        }
      }
      if (sameAddress(m.record, s.self)) {
        return {
          _tag: "Fence",
          reason: `master znode names ${m.record.name} at this node's own Redis address: never replicating from itself`
        }
      }
      return { _tag: "Follow", master: m.record }
    }
  }
}

/** What the local Redis needs for a plan, given its last known state. */
export type RedisStep =
  | { readonly _tag: "None" }
  | { readonly _tag: "PromoteRedis" }
  | { readonly _tag: "ReplicateFrom"; readonly master: MasterRecord }
  | { readonly _tag: "PauseWrites" }

export const redisStep = (plan: Plan, info: ReplicationInfo | null, pausedByUs: boolean): RedisStep => {
  if (info === null) return { _tag: "None" }
  switch (plan._tag) {
    case "BeMaster":
      return info.role === "master" ? { _tag: "None" } : { _tag: "PromoteRedis" }
    case "Follow":
      return info.role === "replica" && info.master !== null && sameAddress(info.master, plan.master)
        ? { _tag: "None" }
        : { _tag: "ReplicateFrom", master: plan.master }
    case "Fence":
    case "Elect":
    case "Resign":
    case "ClearStale":
      return info.role === "master" && !pausedByUs ? { _tag: "PauseWrites" } : { _tag: "None" }
    case "Idle":
      return { _tag: "None" }
  }
}

/** `min-replicas-to-write` for a master: the configured value while it has that many linked replicas, else 0. */
export const minReplicasFor = (configured: number, linkedReplicas: number): number =>
  configured > 0 && linkedReplicas >= configured ? configured : 0
