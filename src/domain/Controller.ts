/**
 * The node's decisions as one deterministic step: `step(state, event)` returns the next state
 * and the actions to perform. The interpreter (node/Controller.ts) performs the actions and feeds
 * their outcomes back as events; time and every input arrive inside the events. No I/O here.
 */
import { Data } from "effect"
import type { RedisAddress, ReplicationInfo } from "../Redis.js"
import { sameAddress } from "../Redis.js"
import type { SessionInfo } from "../ZooKeeper.js"
import type { VoteCount } from "./Election.js"
import { type HealthState, isUp, lastInfo } from "./Health.js"
import type { MasterRecord, MasterView, PresentMaster } from "./Records.js"

// ---------------------------------------------------------------------------------------------
// The plan: what this node should be, given one snapshot of what it knows

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
  /**
   * Maintenance mode (`dictator pause`): no automatic failover. A master keeps its role even with
   * its Redis down, no one campaigns for an absent master, no one deposes the present one.
   */
  readonly maintenance?: boolean
}

/** Why nothing is elected while the service is paused. */
export const MAINTENANCE_IDLE = "maintenance mode: no automatic failover"

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
      if (s.maintenance === true) return { _tag: "Idle", reason: MAINTENANCE_IDLE }
      if (s.self.priority === 0) return { _tag: "Fence", reason: "no master elected and priority 0" }
      return s.health._tag === "Healthy"
        ? { _tag: "Elect" }
        : { _tag: "Fence", reason: "no master elected and the local Redis is not healthy" }
    case "Malformed":
      return { _tag: "Fence", reason: `master znode is malformed (${m.reason}): not following it` }
    case "Present": {
      if (m.owner === s.session.sessionId) {
        // Maintenance: the master keeps its role (and its znode) whatever its Redis does.
        return (s.health._tag === "Down" || s.health._tag === "Loading") && s.maintenance !== true
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

/**
 * One sentence per plan: a change of this key is a change of decision, logged once. The time
 * spent away from ZooKeeper grows with every snapshot while the decision stays the same.
 */
export const planKey = (p: Plan): string =>
  p._tag === "Follow"
    ? `Follow ${p.master.name}`
    : p._tag === "Idle" || p._tag === "Fence"
      ? `${p._tag} ${p.reason.replace(/ for \d+(\.\d+)?s$/, "")}`
      : p._tag

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

// ---------------------------------------------------------------------------------------------
// The step

export type Role = "starting" | "master" | "replica" | "candidate" | "fenced" | "disabled" | "waiting" | "handing-over"

export const roleOf = (plan: Plan, redisUp: boolean): Role =>
  plan._tag === "BeMaster"
    ? "master"
    : plan._tag === "Follow"
      ? redisUp ? "replica" : "waiting"
      : plan._tag === "Fence"
        ? "fenced"
        : plan._tag === "Elect"
          ? "candidate"
          : plan._tag === "Idle" && plan.reason === "disabled"
            ? "disabled"
            : "waiting"

export interface ControllerState {
  /** The last plan decided (null before the first snapshot). */
  readonly plan: Plan | null
  readonly role: Role
  /** We hold the master znode: set when seen as its owner, kept while disconnected. */
  readonly owned: boolean
  /**
   * We paused writes on the local Redis. Unknown at start (a previous run may have paused it):
   * taken as paused, so the first action lifts it.
   */
  readonly paused: boolean
  /** `min-replicas-to-write` this node last set on its Redis as master; null when not master. */
  readonly minReplicas: number | null
  /** The fence delay in force (fence_after_ms, or less for a short negotiated session timeout). */
  readonly fenceAfterMs: number | null
  /** Maintenance mode as last observed (absent = off), so its start and end are logged once. */
  readonly maintenance?: boolean
}

export const initialState: ControllerState = { plan: null, role: "starting", owned: false, paused: true, minReplicas: null, fenceAfterMs: null }

/** Settings of the step (from the config). */
export interface Settings {
  readonly fenceAfterMs: number
  readonly minReplicasToWrite: number
  readonly minReplicasMaxLag: number
}

export type Event = Data.TaggedEnum<{
  /** One snapshot of every input (reconcile). */
  Observed: Omit<Situation, "owned" | "fenceAfterMs"> & {
    /** Epoch of the master this node finds unreachable (its own vote). */
    readonly opinion: string | null
    /** Votes of the members against the present master (null when none is present). */
    readonly votes: VoteCount | null
  }
  /** The master znode was created by this session (an election won). */
  Elected: {}
  /** The local Redis took the master role after an election: REPLICAOF NO ONE and the pause lifted. */
  Promoted: {}
  /** This node's master znode was removed (resigned, handed over, promotion given back). */
  Released: {}
  /** CLIENT PAUSE is about to be sent (marked first: a pause that times out may still run later). */
  Pausing: {}
  Unpaused: {}
  MinReplicasApplied: { readonly value: number }
  HandoverStarted: {}
  /** The node left the election (after its handover). */
  Disabled: {}
}>
export const Event = Data.taggedEnum<Event>()

export type Log = { readonly level: "Debug" | "Info" | "Warning"; readonly message: string }

export type Action = Data.TaggedEnum<{
  Log: Log
  /** Run the election (only one at a time), or stop it. */
  Campaign: { readonly run: boolean }
  /** Remove this view of the master znode (never a newer one); `Released` follows when it was ours. */
  RemoveMaster: { readonly master: PresentMaster; readonly ours: boolean }
  /** REPLICAOF NO ONE; with `proof`, only after a fresh read shows this session owns the master znode. */
  PromoteRedis: { readonly proof: boolean }
  /** REPLICAOF `master` once it is promoted (or has not been for a bounded wait). */
  ReplicateFrom: { readonly master: MasterRecord }
  PauseWrites: { readonly reason: string }
  /** Lift our pause; with `proof`, only after a fresh read shows this session owns the master znode. */
  Unpause: { readonly proof: boolean }
  SetMinReplicas: { readonly value: number; readonly maxLag: number; readonly proof: boolean }
  /** Check the local Redis again now (its role just changed). */
  RecheckHealth: {}
}>
export const Action = Data.taggedEnum<Action>()

type Observed = Extract<Event, { readonly _tag: "Observed" }>

const planLog = (plan: Plan): ReadonlyArray<Action> => {
  switch (plan._tag) {
    case "Idle":
      // Any node losing ZooKeeper says so, master or not; being disabled is the operator's doing.
      return plan.reason.startsWith("waiting for ZooKeeper")
        ? [Action.Log({ level: "Warning", message: `lost ZooKeeper: ${plan.reason}` })]
        : [Action.Log({ level: "Debug", message: `plan: ${planKey(plan)}` })]
    case "Elect":
      return [Action.Log({ level: "Debug", message: `plan: ${planKey(plan)}` })]
    case "Fence":
      return [Action.Log({ level: "Warning", message: `fencing: ${plan.reason}` })]
    case "Follow":
      return [Action.Log({ level: "Info", message: `master is ${plan.master.name} (${plan.master.host}:${plan.master.port})` })]
    case "BeMaster":
      return [Action.Log({ level: "Info", message: "this node is the master" })]
    case "ClearStale":
      return [Action.Log({ level: "Info", message: `clearing stale master znode: ${plan.reason}; a new election follows` })]
    case "Resign":
      return []
  }
}

const pauseReason = (plan: Plan): string =>
  plan._tag === "Fence" || plan._tag === "Resign" || plan._tag === "ClearStale" ? plan.reason : "not the master"

/**
 * What the local Redis needs for `plan`: its role, the pause, `min-replicas-to-write`. Nothing
 * while the Redis is not up (its state is unknown).
 */
const adjustRedis = (
  s: ControllerState,
  plan: Plan,
  e: Observed,
  settings: Settings
): readonly [ControllerState, ReadonlyArray<Action>] => {
  if (!isUp(e.health)) return [s, []]
  const info = lastInfo(e.health)
  const actions: Array<Action> = []
  let next = s
  const redis = redisStep(plan, info, s.paused)
  switch (redis._tag) {
    case "PromoteRedis":
      actions.push(Action.PromoteRedis({ proof: true }))
      break
    case "ReplicateFrom":
      actions.push(Action.ReplicateFrom({ master: redis.master }))
      break
    case "PauseWrites":
      next = { ...next, paused: true }
      actions.push(Action.PauseWrites({ reason: pauseReason(plan) }))
      break
    case "None":
      break
  }
  // A follower's pause is lifted only once its Redis replicates from the master: lifted before,
  // the writes it held would run on a Redis that is still a master, acknowledged then lost.
  // Loosening a fence on a master needs ownership confirmed by the server: after a freeze, the
  // view (and even the session state) may still be the one from before it.
  const settled = plan._tag === "BeMaster" || (plan._tag === "Follow" && redis._tag === "None")
  if (settled && next.paused) actions.push(Action.Unpause({ proof: plan._tag === "BeMaster" }))
  if (plan._tag === "BeMaster") {
    const wanted = minReplicasFor(settings.minReplicasToWrite, info?.role === "master" ? info.replicas.length : 0)
    const applied = next.minReplicas
    if (applied !== wanted) {
      // Raising it only tightens; lowering it lets a master take writes alone: proof first. Not
      // knowing what Redis has (after a restart or a resignation), 0 may be a lowering too.
      const loosens = applied === null ? wanted === 0 : wanted < applied
      actions.push(Action.SetMinReplicas({ value: wanted, maxLag: settings.minReplicasMaxLag, proof: loosens }))
    }
  } else if (next.minReplicas !== null) {
    next = { ...next, minReplicas: null }
  }
  if (redis._tag !== "None") actions.push(Action.RecheckHealth())
  return [next, actions]
}

/**
 * The fence must come before the session can expire on the server: never later than half the
 * timeout the server negotiated (it may have lowered the one asked for), whatever is configured.
 */
export const fenceAfter = (configuredMs: number, negotiatedTimeoutMs: number | undefined): number =>
  negotiatedTimeoutMs === undefined ? configuredMs : Math.min(configuredMs, Math.floor(negotiatedTimeoutMs / 2))

const observe = (s: ControllerState, e: Observed, settings: Settings): readonly [ControllerState, ReadonlyArray<Action>] => {
  // At start, nothing is decided before the local Redis's first check: "not healthy" would only
  // be "not checked yet", and a normal start would begin with a fencing warning.
  if (s.plan === null && e.health._tag === "Unknown") return [s, []]
  const fenceAfterMs = fenceAfter(settings.fenceAfterMs, e.session.timeoutMs)
  const owned =
    e.session.status === "connected" ? e.master._tag === "Present" && e.master.owner === e.session.sessionId : s.owned
  const maintenance = e.maintenance === true
  const plan = decide({
    now: e.now,
    self: e.self,
    enabled: e.enabled,
    session: e.session,
    master: e.master,
    health: e.health,
    owned,
    fenceAfterMs,
    maintenance
  })
  const out: Array<Action> = []
  if (maintenance !== (s.maintenance === true)) {
    out.push(
      Action.Log(
        maintenance
          ? { level: "Warning", message: "maintenance mode on: no automatic failover until `dictator resume` (the master keeps its role, replicas keep following)" }
          : { level: "Info", message: "maintenance mode off: automatic failover resumes" }
      )
    )
  }
  if (fenceAfterMs < settings.fenceAfterMs && s.fenceAfterMs !== fenceAfterMs) {
    out.push(
      Action.Log({
        level: "Warning",
        message: `fence_after_ms ${settings.fenceAfterMs} is not well inside the negotiated ZooKeeper session timeout of ${e.session.timeoutMs} ms: fencing after ${fenceAfterMs} ms instead`
      })
    )
  }
  const changed = s.plan === null || planKey(s.plan) !== planKey(plan)
  if (changed) out.push(...planLog(plan))
  out.push(Action.Campaign({ run: plan._tag === "Elect" }))
  let next: ControllerState = { ...s, owned, plan, fenceAfterMs, maintenance }
  switch (plan._tag) {
    case "Resign":
      // Once per decision: the removal follows at once, and a failed one is retried silently.
      // Nothing is sent to the Redis: it is down or loading, which is why we resign.
      if (changed) out.push(Action.Log({ level: "Warning", message: `resigning as master: ${plan.reason}` }))
      out.push(Action.RemoveMaster({ master: plan.master, ours: true }))
      return [{ ...next, role: "waiting" }, out]
    case "ClearStale": {
      const [adjusted, actions] = adjustRedis(next, plan, e, settings)
      out.push(...actions)
      out.push(Action.RemoveMaster({ master: plan.master, ours: false }))
      return [{ ...adjusted, role: roleOf(plan, isUp(e.health)) }, out]
    }
    case "Follow": {
      // Host-death detection: a majority of the other members finds the master's Redis unreachable.
      // Never in maintenance mode: a lost master is not replaced until the operator resumes.
      if (!maintenance && e.master._tag === "Present" && e.opinion === e.master.epoch && e.votes !== null && e.votes.carried) {
        out.push(
          Action.Log({
            level: "Warning",
            message: `deposing master ${e.master.record.name} (epoch ${e.master.epoch}): unreachable for ${e.votes.votes} of the other members (${e.votes.voters.join(", ")}), ${e.votes.needed} needed`
          }),
          Action.RemoveMaster({ master: e.master, ours: false })
        )
      }
      break
    }
    default:
      break
  }
  const [adjusted, actions] = adjustRedis(next, plan, e, settings)
  next = { ...adjusted, role: roleOf(plan, isUp(e.health)) }
  out.push(...actions)
  return [next, out]
}

export const step = (s: ControllerState, e: Event, settings: Settings): readonly [ControllerState, ReadonlyArray<Action>] => {
  switch (e._tag) {
    case "Observed":
      return observe(s, e, settings)
    case "Elected":
      return [{ ...s, owned: true }, []]
    case "Promoted":
      return [{ ...s, paused: false, role: "master" }, []]
    case "Released":
      return [{ ...s, owned: false }, []]
    case "Pausing":
      return [{ ...s, paused: true }, []]
    case "Unpaused":
      return [{ ...s, paused: false }, []]
    case "MinReplicasApplied":
      return [{ ...s, minReplicas: e.value }, []]
    case "HandoverStarted":
      return [{ ...s, role: "handing-over" }, []]
    case "Disabled":
      return [{ ...s, role: "disabled" }, []]
  }
}
