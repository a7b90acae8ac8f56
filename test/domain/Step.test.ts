/**
 * The controller's step as tables of (state, event) → (state, actions): every rule the node
 * follows when it acts (logging a decision once, running the campaign, resigning, deposing, the
 * local Redis's role, pause and min-replicas, ownership proof) is a row here.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  type Action,
  type ControllerState,
  Event,
  initialState,
  step
} from "../../src/domain/Controller.js"
import type { VoteCount } from "../../src/domain/Election.js"
import type { HealthState } from "../../src/domain/Health.js"
import type { MasterView } from "../../src/domain/Records.js"
import type { ReplicationInfo } from "../../src/Redis.js"
import type { SessionInfo } from "../../src/ZooKeeper.js"
import { connected, disconnected, masterInfo, mine, present, replicaInfo, self, settings, THEM, theirs } from "./fixtures.js"

const healthy = (info: ReplicationInfo): HealthState => ({ _tag: "Healthy", info, at: 0 })
const asMaster = healthy(masterInfo())
const asMasterWithReplica = healthy(masterInfo({ replicas: [{ host: "10.0.0.2", port: 6379, state: "online", offset: 1000 }] }))
const followingThem = healthy(replicaInfo("10.0.0.2", 6379))
const down: HealthState = { _tag: "Down", since: 0, detail: "refused" }
const votes = (carried: boolean): VoteCount => ({ votes: carried ? 2 : 1, needed: 2, voters: carried ? ["n1", "n3"] : ["n1"], carried })

const observed = (over: {
  readonly master?: MasterView
  readonly health?: HealthState
  readonly session?: SessionInfo
  readonly enabled?: boolean
  readonly opinion?: string | null
  readonly votes?: VoteCount | null
  readonly now?: number
}) =>
  Event.Observed({
    now: over.now ?? 10_000,
    self,
    enabled: over.enabled ?? true,
    session: over.session ?? connected,
    master: over.master ?? theirs,
    health: over.health ?? followingThem,
    opinion: over.opinion ?? null,
    votes: over.votes ?? null
  })

/** Settled states: what the node would hold after acting on the same situation before. */
const following: ControllerState = { plan: { _tag: "Follow", master: theirs.record }, role: "replica", owned: false, paused: false, minReplicas: null, fenceAfterMs: 1000, grant: null, reconfirm: false, hold: null }
const mastering: ControllerState = { plan: { _tag: "BeMaster" }, role: "master", owned: true, paused: false, minReplicas: 1, fenceAfterMs: 1000, grant: null, reconfirm: false, hold: null }

const tags = (out: ReadonlyArray<Action>) => out.map((a) => a._tag).filter((t) => t !== "Campaign" && t !== "Log")
const find = <T extends Action["_tag"]>(out: ReadonlyArray<Action>, tag: T) =>
  out.find((a): a is Extract<Action, { _tag: T }> => a._tag === tag)
const logs = (out: ReadonlyArray<Action>) => out.flatMap((a) => (a._tag === "Log" ? [`${a.level}: ${a.message}`] : []))

describe("step: acting on a snapshot (Observed)", () => {
  const rows: ReadonlyArray<{
    readonly name: string
    readonly from: ControllerState
    readonly event: Event
    readonly actions: ReadonlyArray<Action["_tag"]>
    readonly state?: Partial<ControllerState>
  }> = [
    // the local Redis's role
    { name: "following, already a replica of the master: nothing", from: following, event: observed({}), actions: [] },
    { name: "following, Redis still a master, our pause not known in force: PAUSE first, then REPLICAOF, then check it again", from: following, event: observed({ health: asMaster }), actions: ["PauseWrites", "ReplicateFrom", "RecheckHealth"], state: { paused: null } },
    { name: "following, Redis still a master under our pause: REPLICAOF the master, then check it again", from: { ...following, paused: true }, event: observed({ health: asMaster }), actions: ["ReplicateFrom", "RecheckHealth"] },
    { name: "owning the znode, Redis a replica: REPLICAOF NO ONE, then check it again", from: mastering, event: observed({ master: mine, health: followingThem }), actions: ["PromoteRedis", "SetMinReplicas", "RecheckHealth"], state: { role: "master", owned: true } },
    { name: "owning the znode, Redis a master with no linked replica: min-replicas lowered to 0 with proof", from: mastering, event: observed({ master: mine, health: asMaster }), actions: ["SetMinReplicas"], state: { minReplicas: 1 } },
    { name: "owning the znode, min-replicas already right: nothing", from: mastering, event: observed({ master: mine, health: asMasterWithReplica }), actions: [] },
    // nothing is done to a Redis that is not up
    { name: "Redis down while following: no command to it", from: following, event: observed({ health: down }), actions: [], state: { role: "waiting" } },
    { name: "Redis down while fenced and unpaused: no pause sent (it would not arrive); the pause is unknown (a restarted Redis has none)", from: { ...following, paused: true }, event: observed({ master: { _tag: "Absent" }, health: down }), actions: [], state: { role: "fenced", paused: null } },
    // fencing
    { name: "no master, Redis a master and not paused by us: pause (marked first)", from: { ...following, paused: false }, event: observed({ master: { _tag: "Malformed", raw: "x", reason: "not JSON", version: 0, owner: THEM, epoch: "9", epochVersion: null }, health: asMaster }), actions: ["PauseWrites", "RecheckHealth"], state: { paused: null, role: "fenced" } },
    { name: "no master, the last PAUSE failed or timed out (unknown): sent again", from: { ...following, paused: null }, event: observed({ master: { _tag: "Absent" }, health: asMaster }), actions: ["PauseWrites", "RecheckHealth"], state: { paused: null, role: "candidate" } },
    { name: "master after an UNPAUSE that timed out (unknown), then a fence: PAUSE sent (behind the late UNPAUSE)", from: { ...mastering, paused: null }, event: observed({ master: mine, health: asMaster, session: disconnected(8000) }), actions: ["PauseWrites", "RecheckHealth"], state: { paused: null, role: "fenced" } },
    { name: "at start (pause unknown), master: UNPAUSE only with proof", from: { ...initialState, plan: { _tag: "BeMaster" }, owned: true }, event: observed({ master: mine, health: asMaster }), actions: ["Unpause", "SetMinReplicas"], state: { paused: null } },
    { name: "fenced and already paused: nothing more", from: { ...following, paused: true }, event: observed({ master: { _tag: "Malformed", raw: "x", reason: "not JSON", version: 0, owner: THEM, epoch: "9", epochVersion: null }, health: asMaster }), actions: [] },
    { name: "owned and disconnected past fence_after_ms: pause", from: mastering, event: observed({ master: mine, health: asMaster, session: disconnected(8000) }), actions: ["PauseWrites", "RecheckHealth"], state: { owned: true, paused: null, role: "fenced", minReplicas: null } },
    { name: "owned and disconnected within fence_after_ms: wait, keep ownership", from: mastering, event: observed({ master: mine, health: asMaster, session: disconnected(9500) }), actions: [], state: { owned: true, paused: false, role: "waiting" } },
    // lifting our pause
    { name: "following while paused by us: unpause without proof", from: { ...following, paused: true }, event: observed({}), actions: ["Unpause"] },
    { name: "following while paused by us, Redis still a master: REPLICAOF first; the pause stays until it replicates", from: { ...following, paused: true }, event: observed({ health: asMaster }), actions: ["ReplicateFrom", "RecheckHealth"], state: { paused: true } },
    { name: "master while paused by us: unpause only with proof, and min-replicas", from: { ...mastering, paused: true, minReplicas: null }, event: observed({ master: mine, health: asMasterWithReplica }), actions: ["Unpause", "SetMinReplicas"] },
    // resigning and clearing
    { name: "owning the znode with Redis down: remove our znode", from: mastering, event: observed({ master: mine, health: down }), actions: ["RemoveMaster"], state: { role: "waiting", owned: true } },
    { name: "a znode naming us from an older session: remove it (not ours to release)", from: following, event: observed({ master: present("n1", "10.0.0.1", THEM), health: asMaster }), actions: ["PauseWrites", "RecheckHealth", "RemoveMaster"] },
    // deposing a master whose Redis a majority cannot reach
    { name: "our vote on this epoch and a majority: depose it", from: following, event: observed({ opinion: "500", votes: votes(true) }), actions: ["RemoveMaster"] },
    { name: "our vote but no majority: keep following", from: following, event: observed({ opinion: "500", votes: votes(false) }), actions: [] },
    { name: "a majority but not our vote: not ours to depose", from: following, event: observed({ opinion: null, votes: votes(true) }), actions: [] },
    { name: "a vote on an older epoch: not this master", from: following, event: observed({ opinion: "499", votes: votes(true) }), actions: [] }
  ]
  for (const row of rows) {
    it(row.name, () => {
      const [next, out] = step(row.from, row.event, settings)
      expect(tags(out)).toEqual(row.actions)
      if (row.state) expect(next).toMatchObject(row.state)
    })
  }

  it("at start nothing is decided (or logged) before the local Redis's first check", () => {
    const [s0, out] = step(initialState, observed({ master: { _tag: "Absent" }, health: { _tag: "Unknown" } }), settings)
    expect(s0).toEqual(initialState)
    expect(out).toEqual([])
    const [s1, out1] = step(s0, observed({ master: { _tag: "Absent" }, health: asMaster }), settings)
    expect(s1.role).toBe("candidate")
    expect(logs(out1)).toEqual(["Debug: plan: Elect"])
  })

  it("a replica that loses ZooKeeper says so once, as a warning", () => {
    const [, out] = step(following, observed({ session: disconnected(9990) }), settings)
    expect(logs(out)).toEqual(["Warning: lost ZooKeeper: waiting for ZooKeeper (disconnected)"])
  })

  it("ownership is taken from the snapshot while connected and kept while disconnected", () => {
    expect(step(initialState, observed({ master: mine, health: asMaster }), settings)[0].owned).toBe(true)
    expect(step({ ...initialState, owned: true }, observed({ master: theirs }), settings)[0].owned).toBe(false)
    expect(step({ ...initialState, owned: true }, observed({ master: theirs, session: disconnected(9900) }), settings)[0].owned).toBe(true)
  })

  it("a decision is logged once: the same snapshot again logs nothing", () => {
    const [first, out1] = step(initialState, observed({ master: { _tag: "Absent" }, health: asMaster, opinion: null }), settings)
    expect(logs(out1)).toEqual(["Debug: plan: Elect"])
    const [, out2] = step(first, observed({ master: { _tag: "Absent" }, health: asMaster }), settings)
    expect(logs(out2)).toEqual([])
    const [, out3] = step(first, observed({}), settings)
    expect(logs(out3)).toEqual(["Info: master is n2 (10.0.0.2:6379)"])
  })

  it("fencing while cut off from ZooKeeper is logged once, not on every snapshot as the time away grows", () => {
    let state = mastering
    const lines: Array<string> = []
    for (let t = 9_000; t <= 27_000; t += 100) {
      const [next, out] = step(state, observed({ master: mine, health: asMaster, session: disconnected(8_000), now: t }), settings)
      state = next
      lines.push(...logs(out))
    }
    expect(lines).toEqual(["Warning: fencing: ZooKeeper disconnected for 1.0s"])
  })

  it("resigning is logged once per decision; the removal is asked for until it happens", () => {
    const [resigning, out] = step(mastering, observed({ master: mine, health: { _tag: "Loading", since: 0 } }), settings)
    expect(logs(out)).toEqual(["Warning: resigning as master: local Redis is loading"])
    expect(tags(out)).toEqual(["RemoveMaster"])
    const [, again] = step(resigning, observed({ master: mine, health: { _tag: "Loading", since: 0 } }), settings)
    expect(logs(again)).toEqual([])
    expect(find(again, "RemoveMaster")).toMatchObject({ master: mine, ours: true })
  })
  it("a slow (suspect) Redis keeps the master role: no resignation before down_after", () => {
    const [next, out] = step(mastering, observed({ master: mine, health: { _tag: "Suspect", since: 0, detail: "slow", info: masterInfo() } }), settings)
    expect(tags(out)).toEqual(["SetMinReplicas"])
    expect(next.role).toBe("master")
  })

  it("the campaign runs exactly while the plan is Elect", () => {
    const run = (e: Event) => find(step(initialState, e, settings)[1], "Campaign")?.run
    expect(run(observed({ master: { _tag: "Absent" }, health: asMaster }))).toBe(true)
    expect(run(observed({ master: { _tag: "Absent" }, health: down }))).toBe(false)
    expect(run(observed({}))).toBe(false)
    expect(run(observed({ master: mine, health: asMaster }))).toBe(false)
  })

  it("deposing names the master of the snapshot, never ours to release, and says why", () => {
    const [, out] = step(following, observed({ opinion: "500", votes: votes(true) }), settings)
    expect(find(out, "RemoveMaster")).toMatchObject({ master: theirs, ours: false })
    expect(logs(out)).toEqual(["Warning: deposing master n2 (epoch 500): unreachable for 2 of the other members (n1, n3), 2 needed"])
  })

  it("min-replicas: raising or first setting needs no proof; lowering needs proof; off the master it is forgotten", () => {
    const set = (from: ControllerState, health: HealthState) => find(step(from, observed({ master: mine, health }), settings)[1], "SetMinReplicas")
    expect(set({ ...mastering, minReplicas: null }, asMasterWithReplica)).toMatchObject({ value: 1, maxLag: 2, proof: false })
    expect(set({ ...mastering, minReplicas: 0 }, asMasterWithReplica)).toMatchObject({ value: 1, proof: false })
    expect(set({ ...mastering, minReplicas: 1 }, asMaster)).toMatchObject({ value: 0, proof: true })
    expect(set({ ...mastering, minReplicas: 0 }, asMaster)).toBeUndefined()
    // Not knowing what Redis has (after a restart, after resigning): 0 may lower it.
    expect(set({ ...mastering, minReplicas: null }, asMaster)).toMatchObject({ value: 0, proof: true })
    expect(step({ ...mastering }, observed({}), settings)[0].minReplicas).toBeNull()
  })

  it("a session timeout negotiated too short for fence_after_ms: fence at half of it, said once", () => {
    const short: SessionInfo = { ...connected, timeoutMs: 1600 }
    const [next, out] = step(mastering, observed({ master: mine, health: asMasterWithReplica, session: short }), settings)
    expect(next.fenceAfterMs).toBe(800)
    expect(logs(out)).toEqual(["Warning: fence_after_ms 1000 is not well inside the negotiated ZooKeeper session timeout of 1600 ms: fencing after 800 ms instead"])
    expect(logs(step(next, observed({ master: mine, health: asMasterWithReplica, session: short }), settings)[1])).toEqual([])
    // Away 900 ms of a 1600 ms session: fenced, though fence_after_ms is 1000.
    const [fenced] = step(next, observed({ master: mine, health: asMasterWithReplica, session: { ...disconnected(9100), timeoutMs: 1600 } }), settings)
    expect(fenced.role).toBe("fenced")
  })

  it("REPLICAOF NO ONE on the local Redis asks for proof of ownership first (invariant 9)", () => {
    expect(find(step(mastering, observed({ master: mine, health: followingThem }), settings)[1], "PromoteRedis")).toMatchObject({ proof: true })
  })

  it("unpausing as master asks for proof, as a follower it does not", () => {
    expect(find(step({ ...mastering, paused: true }, observed({ master: mine, health: asMaster }), settings)[1], "Unpause")).toMatchObject({ proof: true })
    expect(find(step({ ...following, paused: true }, observed({}), settings)[1], "Unpause")).toMatchObject({ proof: false })
  })

  it("roles follow the plan", () => {
    const role = (e: Event, from: ControllerState = initialState) => step(from, e, settings)[0].role
    expect(role(observed({ master: mine, health: asMaster }))).toBe("master")
    expect(role(observed({}))).toBe("replica")
    expect(role(observed({ health: down }))).toBe("waiting")
    expect(role(observed({ master: { _tag: "Absent" }, health: asMaster }))).toBe("candidate")
    expect(role(observed({ master: { _tag: "Absent" }, health: down }))).toBe("fenced")
    expect(role(observed({ enabled: false }))).toBe("disabled")
    expect(role(observed({ session: disconnected(9990) }))).toBe("waiting")
  })
})

describe("step: outcomes of actions", () => {
  const rows: ReadonlyArray<readonly [string, ControllerState, Event, Partial<ControllerState>]> = [
    ["an election won: the znode is ours", initialState, Event.Elected(), { owned: true }],
    ["promoted: master, our pause lifted", { ...initialState, owned: true }, Event.Promoted(), { role: "master", paused: false }],
    ["released: the znode is no longer ours", mastering, Event.Released(), { owned: false }],
    ["pausing: unknown from before the command is sent until it succeeds", mastering, Event.Pausing(), { paused: null }],
    ["paused: the PAUSE succeeded", mastering, Event.Paused(), { paused: true }],
    ["unpaused", { ...following, paused: true }, Event.Unpaused(), { paused: false }],
    ["min-replicas applied", { ...mastering, minReplicas: null }, Event.MinReplicasApplied({ value: 1 }), { minReplicas: 1 }],
    ["handover started", mastering, Event.HandoverStarted(), { role: "handing-over" }],
    ["disabled", following, Event.Disabled(), { role: "disabled" }]
  ]
  for (const [name, from, event, expected] of rows) {
    it(name, () => {
      const [next, out] = step(from, event, settings)
      expect(out).toEqual([])
      expect(next).toMatchObject(expected)
    })
  }
})

describe("step: maintenance mode (dictator pause)", () => {
  const paused = (over: Parameters<typeof observed>[0]) => {
    const e = observed(over)
    return e._tag === "Observed" ? Event.Observed({ ...e, maintenance: true }) : e
  }
  const inMaintenance = (s: ControllerState): ControllerState => ({ ...s, maintenance: true })
  const rows: ReadonlyArray<{
    readonly name: string
    readonly from: ControllerState
    readonly event: Event
    readonly actions: ReadonlyArray<Action["_tag"]>
    readonly state?: Partial<ControllerState>
    readonly campaign: boolean
  }> = [
    { name: "owning the znode with Redis down: the master keeps its role and its znode (no resignation)", from: inMaintenance(mastering), event: paused({ master: mine, health: down }), actions: [], state: { role: "master", owned: true, plan: { _tag: "BeMaster" } }, campaign: false },
    { name: "owning the znode with Redis loading: no resignation either", from: inMaintenance(mastering), event: paused({ master: mine, health: { _tag: "Loading", since: 0 } }), actions: [], state: { role: "master" }, campaign: false },
    { name: "no master: no campaign, the node waits", from: inMaintenance(following), event: paused({ master: { _tag: "Absent" }, health: followingThem }), actions: [], state: { role: "waiting", plan: { _tag: "Idle", reason: "maintenance mode: no automatic failover" } }, campaign: false },
    { name: "a majority finds the master unreachable: not deposed", from: inMaintenance(following), event: paused({ opinion: "500", votes: votes(true) }), actions: [], state: { role: "replica" }, campaign: false },
    // Its Redis still a master with no pause known in force: paused first, as outside maintenance.
    { name: "replicas keep following (REPLICAOF the master when needed)", from: inMaintenance(following), event: paused({ health: asMaster }), actions: ["PauseWrites", "ReplicateFrom", "RecheckHealth"], campaign: false },
    { name: "the master keeps its role and its min-replicas handling", from: inMaintenance(mastering), event: paused({ master: mine, health: asMaster }), actions: ["SetMinReplicas"], state: { role: "master" }, campaign: false },
    { name: "a lost ZooKeeper still fences the master (safety is not paused)", from: inMaintenance(mastering), event: paused({ master: mine, health: asMaster, session: disconnected(8000) }), actions: ["PauseWrites", "RecheckHealth"], state: { role: "fenced" }, campaign: false },
    { name: "resumed with no master: campaign again", from: inMaintenance(following), event: observed({ master: { _tag: "Absent" }, health: followingThem }), actions: [], state: { role: "candidate", maintenance: false }, campaign: true },
    { name: "resumed, owning the znode with Redis down: resign now", from: inMaintenance(mastering), event: observed({ master: mine, health: down }), actions: ["RemoveMaster"], state: { maintenance: false }, campaign: false }
  ]
  for (const row of rows) {
    it(row.name, () => {
      const [next, out] = step(row.from, row.event, settings)
      expect(tags(out)).toEqual(row.actions)
      expect(find(out, "Campaign")?.run).toBe(row.campaign)
      if (row.state) expect(next).toMatchObject(row.state)
    })
  }

  it("its start and its end are logged once each", () => {
    const [s1, out1] = step(following, paused({}), settings)
    expect(logs(out1)).toEqual([
      "Warning: maintenance mode on: no automatic failover until `dictator resume` (the master keeps its role, replicas keep following)"
    ])
    expect(s1.maintenance).toBe(true)
    const [s2, out2] = step(s1, paused({}), settings)
    expect(logs(out2)).toEqual([])
    const [s3, out3] = step(s2, observed({}), settings)
    expect(logs(out3)).toEqual(["Info: maintenance mode off: automatic failover resumes"])
    expect(logs(step(s3, observed({}), settings)[1])).toEqual([])
  })
})
