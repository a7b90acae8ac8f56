/**
 * Failsafe mode (issue 13) in the pure step: the master's grant, the member's answer and its
 * hold out of elections, re-confirmation when ZooKeeper answers again; and the timings.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  type Action,
  answerFailsafe,
  type ControllerState,
  Event,
  type FailsafeQuestion,
  initialState,
  step
} from "../../src/domain/Controller.js"
import { failsafeTimings } from "../../src/domain/Failsafe.js"
import type { HealthState } from "../../src/domain/Health.js"
import type { MasterView } from "../../src/domain/Records.js"
import type { SessionInfo } from "../../src/ZooKeeper.js"
import { connected, disconnected, masterInfo, mine, present, replicaInfo, self, settings, theirs } from "./fixtures.js"

const asMaster: HealthState = { _tag: "Healthy", info: masterInfo({ replicas: [{ host: "10.0.0.2", port: 6379, state: "online", offset: 1000 }] }), at: 0 }
const followingThem: HealthState = { _tag: "Healthy", info: replicaInfo("10.0.0.2", 6379), at: 0 }

const observed = (over: { master?: MasterView; health?: HealthState; session?: SessionInfo; now?: number; opinion?: string | null; carried?: boolean }) =>
  Event.Observed({
    now: over.now ?? 10_000,
    self,
    enabled: true,
    session: over.session ?? connected,
    master: over.master ?? theirs,
    health: over.health ?? followingThem,
    opinion: over.opinion ?? null,
    votes: over.carried === undefined ? null : { votes: 2, needed: 2, voters: ["n1", "n3"], carried: over.carried }
  })

const mastering: ControllerState = { ...initialState, plan: { _tag: "BeMaster" }, role: "master", owned: true, paused: false, minReplicas: 1, fenceAfterMs: 1000 }
const following: ControllerState = { ...initialState, plan: { _tag: "Follow", master: theirs.record }, role: "replica", paused: false, fenceAfterMs: 1000 }
const held = (over: Partial<NonNullable<ControllerState["hold"]>> = {}): ControllerState => ({
  ...following,
  hold: { master: "n2", epoch: "500", until: 13_000, reread: false, ...over }
})
const tags = (out: ReadonlyArray<Action>) => out.map((a) => a._tag).filter((t) => t !== "Campaign" && t !== "Log")
const campaigns = (out: ReadonlyArray<Action>) => out.some((a) => a._tag === "Campaign" && a.run)

describe("failsafe, as master: the grant", () => {
  const away = disconnected(8_000) // 2 s before `now`: past fence_after_ms
  const granted = (until: number): ControllerState => ({ ...mastering, grant: { until, epoch: "500" } })

  it.each([
    ["no grant: fence (as without failsafe)", mastering, "Fence", "fenced", ["PauseWrites", "RecheckHealth"]],
    ["a grant in force: keep writing, nothing sent to Redis", granted(10_500), "Failsafe", "master", []],
    ["a grant that ran out: fence", granted(10_000), "Fence", "fenced", ["PauseWrites", "RecheckHealth"]],
    ["paused already, then granted: the pause is lifted (on the grant's word)", { ...granted(10_500), paused: true }, "Failsafe", "master", ["FailsafeUnpause"]]
  ] as const)("%s", (_, state, plan, role, actions) => {
    const [next, out] = step(state, observed({ master: mine, health: asMaster, session: away }), settings)
    expect(next.plan?._tag).toBe(plan)
    expect(next.role).toBe(role)
    expect(tags(out)).toEqual(actions)
  })

  it("an expired session fences at once, grant or not", () => {
    const [next] = step(granted(20_000), observed({ master: mine, health: asMaster, session: { ...connected, status: "expired", since: 9_000 } }), settings)
    expect(next.plan?._tag).toBe("Fence")
  })

  it("before the fence point nothing changes, grant or not", () => {
    const [next, out] = step(granted(20_000), observed({ master: mine, health: asMaster, session: disconnected(9_500) }), settings)
    expect(next.plan?._tag).toBe("Idle")
    expect(tags(out)).toEqual([])
  })

  it("a grant is taken only by the owner, dropped on revocation and once ZooKeeper answers", () => {
    expect(step(following, Event.FailsafeGranted({ until: 1, epoch: "500" }), settings)[0].grant).toBeNull()
    const [g] = step(mastering, Event.FailsafeGranted({ until: 11_000, epoch: "500" }), settings)
    expect(g.grant).toEqual({ until: 11_000, epoch: "500" })
    expect(step(g, Event.FailsafeRevoked(), settings)[0].grant).toBeNull()
    expect(step(g, observed({ master: mine, health: asMaster }), settings)[0].grant).toBeNull()
  })

  it("min-replicas is left as it is while in failsafe (the replicas still bound the writes)", () => {
    const [next, out] = step({ ...granted(10_500), minReplicas: 1 }, observed({ master: mine, health: { ...asMaster, info: masterInfo() }, session: away }), settings)
    expect(next.minReplicas).toBe(1)
    expect(tags(out)).toEqual([])
  })

  it("ZooKeeper back after failsafe: Reconfirm first, every pass until Reconfirmed; then nothing", () => {
    const [inFailsafe] = step(granted(10_500), observed({ master: mine, health: asMaster, session: away }), settings)
    expect(inFailsafe.reconfirm).toBe(true)
    const [back, out] = step(inFailsafe, observed({ master: mine, health: asMaster }), settings)
    expect(back.plan?._tag).toBe("BeMaster")
    expect(tags(out)[0]).toBe("Reconfirm")
    const [again, out2] = step(back, observed({ master: mine, health: asMaster }), settings)
    expect(tags(out2)[0]).toBe("Reconfirm")
    const [done] = step(again, Event.Reconfirmed(), settings)
    expect(tags(step(done, observed({ master: mine, health: asMaster }), settings)[1])).toEqual([])
  })

  it("ZooKeeper back and the znode is another's: no Reconfirm, the normal path (follow) and the flag cleared", () => {
    const [inFailsafe] = step(granted(10_500), observed({ master: mine, health: asMaster, session: away }), settings)
    const [next, out] = step(inFailsafe, observed({ master: theirs, health: asMaster }), settings)
    expect(next.plan?._tag).toBe("Follow")
    expect(next.reconfirm).toBe(false)
    expect(tags(out)).not.toContain("Reconfirm")
    expect(tags(out)).toContain("ReplicateFrom")
  })
})

describe("failsafe, as member: the answer", () => {
  const q = (over: Partial<FailsafeQuestion> = {}): FailsafeQuestion => ({
    now: 10_000,
    self: "n1",
    service: "svc",
    session: disconnected(9_000),
    master: theirs,
    request: { service: "svc", master: "n2", epoch: "500" },
    holdMs: 3_000,
    ...over
  })
  it.each([
    ["cut off and following that master at that epoch: yes", q(), true, "ZooKeeper unreachable from here too"],
    ["reaches ZooKeeper: no", q({ session: connected }), false, "this node reaches ZooKeeper"],
    ["session expired (a server told it): no", q({ session: { ...connected, status: "expired", since: 1 } }), false, "expired"],
    ["not connected yet: no", q({ session: { ...connected, status: "connecting", since: 1 } }), false, "connecting"],
    ["another epoch: no", q({ request: { service: "svc", master: "n2", epoch: "499" } }), false, "sees n2 (epoch 500)"],
    ["another master: no", q({ master: present("n3", "10.0.0.3", "ccc3") }), false, "sees n3"],
    ["no master seen: no", q({ master: { _tag: "Absent" } }), false, "sees no master"],
    ["nothing seen yet: no", q({ master: null }), false, "sees no master"],
    ["another service: no", q({ request: { service: "other", master: "n2", epoch: "500" } }), false, "service svc"],
    ["names this node: no", q({ request: { service: "svc", master: "n1", epoch: "500" } }), false, "names this node"]
  ] as const)("%s", (_, question, yes, reason) => {
    const [next, v] = answerFailsafe(following, question)
    expect(v.yes).toBe(yes)
    expect(v.reason).toContain(reason)
    expect(next.hold).toEqual(yes ? { master: "n2", epoch: "500", until: 13_000, reread: false } : null)
  })

  it("a renewal extends the hold and asks for a new re-read; it never shortens it", () => {
    const [a] = answerFailsafe(held({ until: 20_000, reread: true }), q())
    expect(a.hold).toEqual({ master: "n2", epoch: "500", until: 20_000, reread: false })
    const [b] = answerFailsafe(held({ until: 11_000, reread: true }), q())
    expect(b.hold?.until).toBe(13_000)
  })

  it("a no leaves the state as it was", () => {
    const s = held()
    expect(answerFailsafe(s, q({ session: connected }))[0]).toBe(s)
  })
})

describe("failsafe, as member: out of elections after a yes", () => {
  it("no master znode (the master's session expired): no campaign while held, only the re-read", () => {
    const [next, out] = step(held(), observed({ master: { _tag: "Absent" } }), settings)
    expect(next.plan?._tag).toBe("Idle")
    expect(campaigns(out)).toBe(false)
    expect(tags(out)).toEqual(["RereadMaster"])
  })

  it("still disconnected: no re-read asked (it would fail), no campaign", () => {
    const [, out] = step(held(), observed({ master: { _tag: "Absent" }, session: disconnected(9_000) }), settings)
    expect(tags(out)).toEqual([])
    expect(campaigns(out)).toBe(false)
  })

  it("no deposition while held, even with the votes carried", () => {
    const [, out] = step(held(), observed({ master: theirs, opinion: "500", carried: true }), settings)
    expect(tags(out)).not.toContain("RemoveMaster")
    const [, free] = step(following, observed({ master: theirs, opinion: "500", carried: true }), settings)
    expect(tags(free)).toContain("RemoveMaster")
  })

  it("no removal of a stale znode of this node while held", () => {
    const stale = present("n1", "10.0.0.1", "old9")
    const [, out] = step(held(), observed({ master: stale }), settings)
    expect(tags(out)).not.toContain("RemoveMaster")
  })

  it.each([
    ["re-read but the hold has not run out", held({ reread: true, until: 10_001 }), connected, true],
    ["hold ran out but not re-read since ZooKeeper answers", held({ until: 9_000 }), connected, true],
    ["hold ran out, re-read, but ZooKeeper away again", held({ reread: true, until: 9_000 }), disconnected(9_500), true],
    ["hold ran out, re-read, ZooKeeper answers: released", held({ reread: true, until: 10_000 }), connected, false]
  ] as const)("%s", (_, state, session, stillHeld) => {
    const [next, out] = step(state, observed({ master: { _tag: "Absent" }, session }), settings)
    expect(next.hold !== null).toBe(stillHeld)
    expect(campaigns(out)).toBe(!stillHeld && session.status === "connected")
  })

  it("MasterReread marks the hold re-read; without a hold it changes nothing", () => {
    expect(step(held(), Event.MasterReread(), settings)[0].hold?.reread).toBe(true)
    expect(step(following, Event.MasterReread(), settings)[0]).toBe(following)
  })
})

describe("failsafeTimings", () => {
  it.each([
    // fence, session, fencing action -> grant, renew, ask, hold
    [1000, 6000, 350, 1000, 333, 400, 3000],
    [100, 6000, 350, 300, 100, 120, 1000],
    [5000, 6000, 350, 2000, 666, 800, 6000],
    [60000, 120000, 350, 40000, 13333, 16000, 120000]
  ])("fence %i ms, session %i ms", (fence, session, action, grantMs, renewEveryMs, askWithinMs, holdMs) => {
    expect(failsafeTimings(fence, session, action)).toEqual({ grantMs, renewEveryMs, askWithinMs, holdMs })
  })

  it("the hold always outlasts the grant by more than the fencing action, and renewals come well inside the session timeout", () => {
    for (const fence of [0, 50, 300, 1000, 3000, 60000]) {
      for (const session of [1000, 4000, 6000, 40000, 120000]) {
        for (const action of [20, 350, 2000]) {
          const t = failsafeTimings(fence, session, action)
          expect(t.holdMs - t.grantMs).toBeGreaterThanOrEqual(2 * action)
          // The next round is sent and answered before this grant ends.
          expect(Math.max(t.renewEveryMs, t.askWithinMs) + t.askWithinMs).toBeLessThan(t.grantMs)
          expect(t.grantMs).toBeLessThanOrEqual(Math.max(300, session / 3))
        }
      }
    }
  })
})
