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
import type { FailsafeRequest } from "./Failsafe.js"
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
   * Failsafe mode: until when (clock millis) every other member's yes lets this master keep
   * taking writes without ZooKeeper; null or absent without such a grant.
   */
  readonly failsafeUntil?: number | null
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
  /** Keep taking writes without ZooKeeper: every other member confirmed it cannot reach it either (failsafe mode). */
  | { readonly _tag: "Failsafe"; readonly reason: string }

export const decide = (s: Situation): Plan => {
  if (!s.enabled) return { _tag: "Idle", reason: "disabled" }
  if (s.session.status !== "connected") {
    // Expired: the master znode is gone already, a new master may exist. No grace period.
    if (s.owned && s.session.status === "expired") return { _tag: "Fence", reason: "ZooKeeper session expired" }
    const away = s.now - s.session.since
    if (s.owned && away >= s.fenceAfterMs) {
      if (s.failsafeUntil != null && s.now < s.failsafeUntil) {
        return { _tag: "Failsafe", reason: `ZooKeeper ${s.session.status}; every other member confirms it cannot reach it either and still follows this master` }
      }
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
      // Our name at our Redis address: left by an older session of this node. Our name at another
      // address is another node (or an old address of ours, gone when its session expires):
      // followed like any master, never removed.
      if (m.record.name === s.self.name && sameAddress(m.record, s.self)) {
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

/** `pausedByUs`: true only when our PAUSE is known to be in force (see ControllerState.paused). */
export const redisStep = (plan: Plan, info: ReplicationInfo | null, pausedByUs: boolean | null): RedisStep => {
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
      return info.role === "master" && pausedByUs !== true ? { _tag: "PauseWrites" } : { _tag: "None" }
    case "Idle":
    // Without ZooKeeper the Redis's role never changes; only the pause may be lifted.
    case "Failsafe":
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
  plan._tag === "BeMaster" || plan._tag === "Failsafe"
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
   * Our pause as the local Redis has it: true once a CLIENT PAUSE succeeded, false once an
   * UNPAUSE (or a promotion) succeeded, null when unknown: at start (a previous run may have
   * paused it), while a PAUSE or UNPAUSE is in flight or after one failed or timed out (it may
   * still run: a frozen Redis runs its queue on waking), and after the Redis was down or loading
   * (a restarted process has no pause). Unknown is neither: a fence sends PAUSE again (behind any
   * late UNPAUSE on the same connection), a settled node sends UNPAUSE again (with proof).
   */
  readonly paused: boolean | null
  /** `min-replicas-to-write` this node last set on its Redis as master; null when not master. */
  readonly minReplicas: number | null
  /** The fence delay in force (fence_after_ms, or less for a short negotiated session timeout). */
  readonly fenceAfterMs: number | null
  /** Failsafe, as master: every other member's yes for this epoch, usable until `until`; null without. */
  readonly grant: { readonly until: number; readonly epoch: string } | null
  /** Failsafe, as master: writes were taken without ZooKeeper; ownership is re-confirmed once it answers. */
  readonly reconfirm: boolean
  /**
   * Failsafe, as member: this node answered yes to `master`'s request; it takes part in no
   * election (no campaign, no deposition, no removal) until `until` has passed AND ZooKeeper
   * answers AND the master znode was re-read through the quorum since (`reread`).
   */
  readonly hold: { readonly master: string; readonly epoch: string; readonly until: number; readonly reread: boolean } | null
  /** Maintenance mode as last observed (absent = off), so its start and end are logged once. */
  readonly maintenance?: boolean
}

export const initialState: ControllerState = {
  plan: null,
  role: "starting",
  owned: false,
  paused: null,
  minReplicas: null,
  fenceAfterMs: null,
  grant: null,
  reconfirm: false,
  hold: null
}

/** Settings of the step (from the config). */
export interface Settings {
  readonly fenceAfterMs: number
  readonly minReplicasToWrite: number
  readonly minReplicasMaxLag: number
}

export type Event = Data.TaggedEnum<{
  /** One snapshot of every input (reconcile). */
  Observed: Omit<Situation, "owned" | "fenceAfterMs" | "failsafeUntil"> & {
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
  /** CLIENT PAUSE is about to be sent (from now on the pause is unknown until it succeeds). */
  Pausing: {}
  /** CLIENT PAUSE succeeded. */
  Paused: {}
  /** CLIENT UNPAUSE succeeded. */
  Unpaused: {}
  MinReplicasApplied: { readonly value: number }
  HandoverStarted: {}
  /** The node left the election (after its handover). */
  Disabled: {}
  /** Failsafe: every other member answered yes to the round of requests sent for `epoch`; usable until `until`. */
  FailsafeGranted: { readonly until: number; readonly epoch: string }
  /** Failsafe: a round of requests did not get a yes from every member in time. */
  FailsafeRevoked: {}
  /** Failsafe: ZooKeeper answers again and a quorum read showed this session still owns the master znode. */
  Reconfirmed: {}
  /** Failsafe: the master znode was re-read through the quorum since ZooKeeper answers again. */
  MasterReread: {}
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
  /** Failsafe: lift our pause, only while the grant is still in force when it runs. */
  FailsafeUnpause: {}
  /** Failsafe: ZooKeeper answers again; confirm ownership (sync, read) before anything else; pause at once if it fails. */
  Reconfirm: {}
  /** Failsafe: re-read the master znode through the quorum (sync, read); `MasterReread` follows. */
  RereadMaster: {}
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
    case "Failsafe":
      return [Action.Log({ level: "Warning", message: `failsafe: keeping writes without ZooKeeper: ${plan.reason}` })]
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
  if (!isUp(e.health)) {
    // A Redis that was down or loading is (or will be) a new process: whatever pause it had is gone.
    const gone = e.health._tag === "Down" || e.health._tag === "Loading"
    return [gone && s.paused !== null ? { ...s, paused: null } : s, []]
  }
  const info = lastInfo(e.health)
  const actions: Array<Action> = []
  let next = s
  const redis = redisStep(plan, info, s.paused)
  switch (redis._tag) {
    case "PromoteRedis":
      actions.push(Action.PromoteRedis({ proof: true }))
      break
    case "ReplicateFrom":
      // Still a master until the REPLICAOF (which may wait for the new master's promotion): it
      // must not take writes meanwhile, so without our pause known in force, pause it first.
      if (info?.role === "master" && next.paused !== true) {
        next = { ...next, paused: null }
        actions.push(Action.PauseWrites({ reason: `following ${redis.master.name}, the local Redis is still a master` }))
      }
      actions.push(Action.ReplicateFrom({ master: redis.master }))
      break
    case "PauseWrites":
      // Unknown until it succeeds (Paused): a failed or timed-out PAUSE is sent again next pass.
      next = { ...next, paused: null }
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
  // Unknown until it succeeds (Unpaused): an UNPAUSE that timed out may still run later, so a
  // later fence must send its PAUSE behind it rather than trust an old "paused".
  if (settled && next.paused !== false) {
    next = { ...next, paused: null }
    actions.push(Action.Unpause({ proof: plan._tag === "BeMaster" }))
  }
  // Failsafe: the members' unanimous yes stands in for the quorum read; min-replicas stays as it is.
  if (plan._tag === "Failsafe" && next.paused !== false && info?.role === "master") {
    next = { ...next, paused: null }
    actions.push(Action.FailsafeUnpause())
  }
  if (plan._tag === "Failsafe") {
    // unchanged: the replicas that still receive the writes keep bounding them
  } else if (plan._tag === "BeMaster") {
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
  const connected = e.session.status === "connected"
  const owned =
    connected ? e.master._tag === "Present" && e.master.owner === e.session.sessionId : s.owned
  // A grant serves only while ZooKeeper is away, and only the master it was given to.
  const grant = connected || !owned ? null : s.grant
  const maintenance = e.maintenance === true
  const decided = decide({
    now: e.now,
    self: e.self,
    enabled: e.enabled,
    session: e.session,
    master: e.master,
    health: e.health,
    owned,
    fenceAfterMs,
    failsafeUntil: grant?.until ?? null,
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
  // Failsafe, as member: out of elections after a yes, until the hold has run out, ZooKeeper
  // answers and the master znode was re-read since.
  let hold = s.hold
  if (hold !== null && connected && hold.reread && e.now >= hold.until) {
    out.push(Action.Log({ level: "Info", message: `failsafe: ZooKeeper answers, the master znode was re-read and the hold for ${hold.master} ran out: taking part in elections again` }))
    hold = null
  }
  if (hold !== null && connected && !hold.reread) out.push(Action.RereadMaster())
  const plan: Plan =
    hold !== null && decided._tag === "Elect"
      ? { _tag: "Idle", reason: `out of elections: answered yes to ${hold.master}'s failsafe request (epoch ${hold.epoch})` }
      : decided
  // Failsafe, as master: once ZooKeeper answers again, ownership is confirmed before anything else.
  const reconfirm = plan._tag === "Failsafe" || (s.reconfirm && !(connected && plan._tag !== "BeMaster"))
  if (reconfirm && connected && plan._tag === "BeMaster") out.push(Action.Reconfirm())
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
  let next: ControllerState = { ...s, owned, plan, fenceAfterMs, grant, hold, reconfirm, maintenance }
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
      if (hold === null) out.push(Action.RemoveMaster({ master: plan.master, ours: false }))
      return [{ ...adjusted, role: roleOf(plan, isUp(e.health)) }, out]
    }
    case "Follow": {
      // Host-death detection: a majority of the other members finds the master's Redis unreachable.
      // Never in maintenance mode: a lost master is not replaced until the operator resumes.
      if (hold === null && !maintenance && e.master._tag === "Present" && e.opinion === e.master.epoch && e.votes !== null && e.votes.carried) {
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
      return [{ ...s, paused: null }, []]
    case "Paused":
      return [{ ...s, paused: true }, []]
    case "Unpaused":
      return [{ ...s, paused: false }, []]
    case "MinReplicasApplied":
      return [{ ...s, minReplicas: e.value }, []]
    case "HandoverStarted":
      return [{ ...s, role: "handing-over" }, []]
    case "Disabled":
      return [{ ...s, role: "disabled" }, []]
    case "FailsafeGranted":
      // Only to the owner of the znode: a grant arriving after the role was lost serves nobody.
      return [s.owned ? { ...s, grant: { until: e.until, epoch: e.epoch } } : s, []]
    case "FailsafeRevoked":
      return [{ ...s, grant: null }, []]
    case "Reconfirmed":
      return [{ ...s, reconfirm: false }, []]
    case "MasterReread":
      return [s.hold === null ? s : { ...s, hold: { ...s.hold, reread: true } }, []]
  }
}

// ---------------------------------------------------------------------------------------------
// Failsafe: a member's answer to the master's request

export interface FailsafeQuestion {
  readonly now: number
  readonly self: string
  readonly service: string
  readonly session: SessionInfo
  /** The master znode as this node last saw it. */
  readonly master: MasterView | null
  readonly request: FailsafeRequest
  /** How long a yes holds this node out of elections (failsafeTimings().holdMs). */
  readonly holdMs: number
}

export interface FailsafeVerdict {
  readonly yes: boolean
  readonly reason: string
}

/**
 * Yes only when this node cannot reach ZooKeeper either (its session is disconnected: a node
 * that reaches it could see, or take part in, a new election) and still sees the asker as the
 * master at that epoch. A yes holds this node out of elections (see `ControllerState.hold`),
 * extended by every renewal; a no changes nothing.
 */
export const answerFailsafe = (s: ControllerState, q: FailsafeQuestion): readonly [ControllerState, FailsafeVerdict] => {
  const no = (reason: string) => [s, { yes: false, reason }] as const
  const r = q.request
  if (r.service !== q.service) return no(`this node is of service ${q.service}, not ${r.service}`)
  if (r.master === q.self) return no("the request names this node as the master")
  if (q.session.status !== "disconnected") {
    return no(q.session.status === "connected" ? "this node reaches ZooKeeper" : `this node's ZooKeeper session is ${q.session.status}`)
  }
  const m = q.master
  if (m === null || m._tag !== "Present") return no("this node sees no master")
  if (m.record.name !== r.master || m.epoch !== r.epoch) {
    return no(`this node sees ${m.record.name} (epoch ${m.epoch}) as the master`)
  }
  const until = Math.max(q.now + q.holdMs, s.hold !== null && s.hold.epoch === r.epoch ? s.hold.until : 0)
  return [
    { ...s, hold: { master: r.master, epoch: r.epoch, until, reread: false } },
    { yes: true, reason: `ZooKeeper unreachable from here too; ${r.master} (epoch ${r.epoch}) is the master` }
  ]
}
