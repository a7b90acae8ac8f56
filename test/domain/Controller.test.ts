import { describe, expect, it } from "@effect/vitest"
import type { HealthState } from "../../src/domain/Health.js"
import type { MasterRecord, PresentMaster } from "../../src/domain/Records.js"
import type { Plan, RedisStep, Self, Situation } from "../../src/domain/Controller.js"
import { decide, minReplicasFor, redisStep } from "../../src/domain/Controller.js"
import type { SessionInfo, SessionStatus } from "../../src/ZooKeeper.js"
import { masterInfo, replicaInfo } from "./fixtures.js"

describe("decide", () => {
  const SESSION = "1000a2b3c4d0001"
  const OTHER = "2000ffee0000002"
  const self: Self = { name: "redis1", host: "10.0.0.1", port: 6379, priority: 100 }
  const healthy: HealthState = { _tag: "Healthy", info: masterInfo(), at: 0 }
  const session = (status: SessionStatus, since = 0, sessionId: string | null = SESSION): SessionInfo => ({
    status,
    sessionId,
    generation: 1,
    since
  })
  const present = (record: MasterRecord, owner: string, version = 3): PresentMaster => ({
    _tag: "Present",
    record,
    version,
    epoch: "500",
    owner,
    epochVersion: 1
  })
  const mine = present({ name: "redis1", host: "10.0.0.1", port: 6379 }, SESSION)
  const other = { name: "redis2", host: "10.0.0.2", port: 6379 }
  const theirs = present(other, OTHER, 9)
  const mineAt12 = present(mine.record, SESSION, 12)
  const staleHere = present({ name: "redis1", host: "10.0.0.1", port: 6379 }, OTHER, 4)
  const staleElsewhere = present({ name: "redis1", host: "10.9.9.9", port: 7000 }, OTHER, 5)
  const base: Situation = {
    now: 10_000,
    self,
    enabled: true,
    session: session("connected"),
    master: theirs,
    health: healthy,
    owned: false,
    fenceAfterMs: 1000
  }

  const cases: ReadonlyArray<{ readonly name: string; readonly s: Partial<Situation>; readonly plan: Plan }> = [
    // disabled
    { name: "disabled while following", s: { enabled: false }, plan: { _tag: "Idle", reason: "disabled" } },
    { name: "disabled wins over being the master", s: { enabled: false, master: mine, owned: true }, plan: { _tag: "Idle", reason: "disabled" } },
    { name: "disabled wins over a lost session", s: { enabled: false, owned: true, session: session("disconnected", 0) }, plan: { _tag: "Idle", reason: "disabled" } },
    // not connected
    {
      name: "disconnected, owned, before fenceAfterMs: wait",
      s: { owned: true, master: mine, session: session("disconnected", 9001) },
      plan: { _tag: "Idle", reason: "waiting for ZooKeeper (disconnected)" }
    },
    {
      name: "disconnected, owned, exactly fenceAfterMs: fence",
      s: { owned: true, master: mine, session: session("disconnected", 9000) },
      plan: { _tag: "Fence", reason: "ZooKeeper disconnected for 1.0s" }
    },
    {
      name: "disconnected, owned, long after fenceAfterMs: fence",
      s: { owned: true, master: mine, session: session("disconnected", 5500) },
      plan: { _tag: "Fence", reason: "ZooKeeper disconnected for 4.5s" }
    },
    {
      name: "disconnected, not owned, long after: wait",
      s: { owned: false, session: session("disconnected", 0) },
      plan: { _tag: "Idle", reason: "waiting for ZooKeeper (disconnected)" }
    },
    {
      name: "disconnected, not owned, before: wait",
      s: { owned: false, session: session("disconnected", 9999) },
      plan: { _tag: "Idle", reason: "waiting for ZooKeeper (disconnected)" }
    },
    {
      name: "connecting, not owned: wait",
      s: { session: session("connecting", 0, null), master: { _tag: "Absent" } },
      plan: { _tag: "Idle", reason: "waiting for ZooKeeper (connecting)" }
    },
    {
      name: "expired, not owned: wait",
      s: { session: session("expired", 0) },
      plan: { _tag: "Idle", reason: "waiting for ZooKeeper (expired)" }
    },
    {
      name: "expired, owned, after fenceAfterMs: fence",
      s: { owned: true, master: mine, session: session("expired", 8000) },
      plan: { _tag: "Fence", reason: "ZooKeeper session expired" }
    },
    {
      name: "fenceAfterMs 0 fences a disconnected owner at once",
      s: { owned: true, master: mine, session: session("disconnected", 10_000), fenceAfterMs: 0 },
      plan: { _tag: "Fence", reason: "ZooKeeper disconnected for 0.0s" }
    },
    // Absent
    { name: "no master, healthy: elect", s: { master: { _tag: "Absent" } }, plan: { _tag: "Elect" } },
    {
      name: "no master, priority 0: fence",
      s: { master: { _tag: "Absent" }, self: { ...self, priority: 0 } },
      plan: { _tag: "Fence", reason: "no master elected and priority 0" }
    },
    ...(
      [
        { _tag: "Unknown" },
        { _tag: "Suspect", since: 1, detail: "timeout", info: masterInfo() },
        { _tag: "Loading", since: 1 },
        { _tag: "Down", since: 1, detail: "refused" }
      ] satisfies ReadonlyArray<HealthState>
    ).map((health) => ({
      name: `no master, local Redis ${health._tag}: fence`,
      s: { master: { _tag: "Absent" } as const, health },
      plan: { _tag: "Fence", reason: "no master elected and the local Redis is not healthy" } as const
    })),
    // Malformed
    {
      name: "malformed master znode: fence, never follow",
      s: {
        master: { _tag: "Malformed", raw: "garbage", reason: "not JSON", version: 0, owner: OTHER, epoch: "9", epochVersion: null }
      },
      plan: { _tag: "Fence", reason: "master znode is malformed (not JSON): not following it" }
    },
    // Present, owned
    { name: "owned, healthy: be master", s: { master: mine, owned: true }, plan: { _tag: "BeMaster" } },
    {
      name: "owned, suspect: still master",
      s: { master: mine, owned: true, health: { _tag: "Suspect", since: 1, detail: "t", info: null } },
      plan: { _tag: "BeMaster" }
    },
    { name: "owned, health unknown: master", s: { master: mine, health: { _tag: "Unknown" } }, plan: { _tag: "BeMaster" } },
    {
      name: "owned, Down: resign at the version seen",
      s: { master: mine, owned: true, health: { _tag: "Down", since: 1, detail: "connection refused" } },
      plan: { _tag: "Resign", master: mine, reason: "local Redis down: connection refused" }
    },
    {
      name: "owned, Loading: resign",
      s: { master: mineAt12, health: { _tag: "Loading", since: 1 } },
      plan: { _tag: "Resign", master: mineAt12, reason: "local Redis is loading" }
    },
    {
      name: "owned even with priority 0: be master (priority only matters for elections)",
      s: { master: mine, self: { ...self, priority: 0 } },
      plan: { _tag: "BeMaster" }
    },
    // Present, same name, other owner
    {
      name: "our name, other session: clear the stale znode",
      s: { master: staleHere },
      plan: { _tag: "ClearStale", master: staleHere, reason: `master znode names this node but belongs to an older session 0x${OTHER}` }
    },
    {
      // Issue 7 item 11: another node under our name (or an old address of ours, gone with its
      // session) is followed like any master, never removed.
      name: "our name at another address, other session: another node's, followed, never cleared",
      s: { master: staleElsewhere },
      plan: { _tag: "Follow", master: staleElsewhere.record }
    },
    // Present, same address, other name
    {
      name: "other name at our own address: fence, never replicate from itself",
      s: { master: present({ name: "ghost", host: "10.0.0.1", port: 6379 }, OTHER) },
      plan: {
        _tag: "Fence",
        reason: "master znode names ghost at this node's own Redis address: never replicating from itself"
      }
    },
    {
      name: "other name at our address spelled localhost vs 127.0.0.1: fence",
      s: {
        self: { ...self, host: "127.0.0.1" },
        master: present({ name: "ghost", host: "localhost", port: 6379 }, OTHER)
      },
      plan: {
        _tag: "Fence",
        reason: "master znode names ghost at this node's own Redis address: never replicating from itself"
      }
    },
    // Present, someone else
    { name: "another master: follow", s: {}, plan: { _tag: "Follow", master: other } },
    {
      name: "same host, other port: follow",
      s: { master: present({ name: "redis2", host: "10.0.0.1", port: 6380 }, OTHER) },
      plan: { _tag: "Follow", master: { name: "redis2", host: "10.0.0.1", port: 6380 } }
    },
    { name: "another master, priority 0: follow", s: { self: { ...self, priority: 0 } }, plan: { _tag: "Follow", master: other } },
    {
      name: "another master, local Redis down: follow anyway",
      s: { health: { _tag: "Down", since: 1, detail: "x" } },
      plan: { _tag: "Follow", master: other }
    },
    {
      name: "another master while we still believe we own it: follow (the view wins)",
      s: { owned: true },
      plan: { _tag: "Follow", master: other }
    }
  ]

  it.each(cases)("$name", ({ s, plan }) => {
    expect(decide({ ...base, ...s })).toEqual(plan)
  })

  // Invariant 2 (DESIGN.md §2): a dictator that sees its own session expired demotes or fences
  // its Redis at once; §5: "Expired = everything owned is gone". decide measures fenceAfterMs
  // from `session.since`, which is reset when the status becomes "expired", so an owner whose
  // session expires right after a short disconnection (a process freeze, a VM pause) keeps its
  // Redis taking writes for another fenceAfterMs while a new master may already exist.
  it("BUG: an owner whose session has just expired fences at once", () => {
    const plan = decide({ ...base, owned: true, master: mine, session: session("expired", 10_000) })
    expect(plan._tag).toBe("Fence")
  })
})

// ---------------------------------------------------------------------------------------------

describe("redisStep", () => {
  const M: MasterRecord = { name: "redis2", host: "10.0.0.2", port: 6379 }
  const znode: PresentMaster = { _tag: "Present", record: M, version: 1, epoch: "7", owner: "abc", epochVersion: 1 }
  const plans: Record<Plan["_tag"], Plan> = {
    Idle: { _tag: "Idle", reason: "disabled" },
    Elect: { _tag: "Elect" },
    BeMaster: { _tag: "BeMaster" },
    Resign: { _tag: "Resign", master: znode, reason: "r" },
    Follow: { _tag: "Follow", master: M },
    Fence: { _tag: "Fence", reason: "f" },
    ClearStale: { _tag: "ClearStale", master: znode, reason: "c" },
    Failsafe: { _tag: "Failsafe", reason: "s" }
  }
  const infos = {
    none: null,
    master: masterInfo(),
    replicaOfM: replicaInfo("10.0.0.2", 6379),
    replicaOfMDown: replicaInfo("10.0.0.2", 6379, { linkUp: false, linkDownSinceSeconds: 5 }),
    replicaOfOther: replicaInfo("10.0.0.3", 6379),
    replicaOfOtherPort: replicaInfo("10.0.0.2", 6380),
    replicaOfNull: { ...replicaInfo("x", 1), master: null }
  } as const
  type InfoKey = keyof typeof infos

  const None: RedisStep = { _tag: "None" }
  const Promote: RedisStep = { _tag: "PromoteRedis" }
  const Replicate: RedisStep = { _tag: "ReplicateFrom", master: M }
  const Pause: RedisStep = { _tag: "PauseWrites" }

  const expected = (plan: Plan["_tag"], info: InfoKey, paused: boolean): RedisStep => {
    if (info === "none") return None
    const isMaster = info === "master"
    switch (plan) {
      case "Idle":
      case "Failsafe":
        return None
      case "BeMaster":
        return isMaster ? None : Promote
      case "Follow":
        return info === "replicaOfM" || info === "replicaOfMDown" ? None : Replicate
      case "Elect":
      case "Fence":
      case "Resign":
      case "ClearStale":
        return isMaster && !paused ? Pause : None
    }
  }

  const table = (Object.keys(plans) as Array<Plan["_tag"]>).flatMap((plan) =>
    (Object.keys(infos) as Array<InfoKey>).flatMap((info) =>
      [false, true].map((paused) => ({ plan, info, paused, step: expected(plan, info, paused) }))
    )
  )

  it("covers every plan × role × pausedByUs", () => {
    expect(table).toHaveLength(8 * 7 * 2)
  })

  it.each(table)("$plan with $info, pausedByUs=$paused → $step._tag", ({ plan, info, paused, step }) => {
    expect(redisStep(plans[plan], infos[info], paused)).toEqual(step)
  })

  // Spot checks of the table, written out, so a mistake in `expected` cannot hide one in redisStep.
  it.each([
    ["Fence", "master", false, Pause],
    ["Fence", "master", true, None],
    ["Elect", "master", false, Pause],
    ["Resign", "replicaOfM", false, None],
    ["BeMaster", "replicaOfOther", true, Promote],
    ["BeMaster", "master", true, None],
    ["Follow", "master", true, Replicate],
    ["Follow", "replicaOfOtherPort", false, Replicate],
    ["Follow", "replicaOfM", true, None],
    ["Idle", "master", false, None]
  ] as const)("%s / %s / paused=%s", (plan, info, paused, step) => {
    expect(redisStep(plans[plan], infos[info], paused)).toEqual(step)
  })

  it("follows a master named by an alias of the address it already replicates from", () => {
    const local: MasterRecord = { name: "redis2", host: "localhost", port: 6379 }
    expect(redisStep({ _tag: "Follow", master: local }, replicaInfo("127.0.0.1", 6379), false)).toEqual(None)
    expect(redisStep({ _tag: "Follow", master: local }, replicaInfo("127.0.0.1", 6380), false)).toEqual({
      _tag: "ReplicateFrom",
      master: local
    })
  })
})

// ---------------------------------------------------------------------------------------------

describe("minReplicasFor", () => {
  it.each([
    [0, 0, 0],
    [0, 3, 0],
    [1, 0, 0],
    [1, 1, 1],
    [1, 4, 1],
    [2, 1, 0],
    [2, 2, 2],
    [2, 5, 2],
    [3, 2, 0]
  ])("configured %i with %i linked replicas → %i", (configured, linked, wanted) => {
    expect(minReplicasFor(configured, linked)).toBe(wanted)
  })
})

