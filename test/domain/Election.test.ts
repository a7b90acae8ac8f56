import { describe, expect, it } from "@effect/vitest"
import type { Candidate } from "../../src/domain/Election.js"
import { candidacy, countVotes, lagExclusion, quorumOf, rankCandidates, votesNeeded } from "../../src/domain/Election.js"
import type { MemberRecord } from "../../src/domain/Records.js"

describe("rankCandidates", () => {
  const c = (name: string, over: Partial<Candidate> = {}): Candidate => ({
    name,
    priority: 100,
    offset: 1000,
    healthy: true,
    reachable: true,
    syncInProgress: false,
    ...over
  })
  const names = (cs: ReadonlyArray<Candidate>) => cs.map((x) => x.name)

  const cases: ReadonlyArray<{
    readonly name: string
    readonly candidates: ReadonlyArray<Candidate>
    readonly previous: string | null
    readonly ranked: ReadonlyArray<string>
    readonly excluded: ReadonlyArray<{ name: string; reason: string }>
  }> = [
    { name: "no candidates", candidates: [], previous: null, ranked: [], excluded: [] },
    {
      name: "lower priority first, even with a lower offset",
      candidates: [c("a", { priority: 100, offset: 5000 }), c("b", { priority: 10, offset: 10 }), c("c", { priority: 50, offset: 100 })],
      previous: null,
      ranked: ["b", "c", "a"],
      excluded: []
    },
    {
      name: "priority 0 is excluded with its reason",
      candidates: [c("a", { priority: 0, offset: 9999 }), c("b", { priority: 1 })],
      previous: null,
      ranked: ["b"],
      excluded: [{ name: "a", reason: "priority 0" }]
    },
    {
      name: "unhealthy, unreachable and syncing are excluded with reasons",
      candidates: [
        c("sick", { healthy: false, offset: 9000 }),
        c("gone", { reachable: false, offset: 9000 }),
        c("sync", { syncInProgress: true, offset: 9000 }),
        c("ok", { offset: 1 })
      ],
      previous: null,
      ranked: ["ok"],
      excluded: [
        { name: "sick", reason: "unhealthy" },
        { name: "gone", reason: "Redis unreachable" },
        { name: "sync", reason: "still syncing from its master" }
      ]
    },
    {
      name: "priority 0 is the reason reported before any other",
      candidates: [c("x", { priority: 0, healthy: false, reachable: false, syncInProgress: true })],
      previous: null,
      ranked: [],
      excluded: [{ name: "x", reason: "priority 0" }]
    },
    {
      name: "unhealthy is reported before unreachable and syncing",
      candidates: [c("x", { healthy: false, reachable: false, syncInProgress: true })],
      previous: null,
      ranked: [],
      excluded: [{ name: "x", reason: "unhealthy" }]
    },
    {
      name: "unreachable is reported before syncing",
      candidates: [c("x", { reachable: false, syncInProgress: true })],
      previous: null,
      ranked: [],
      excluded: [{ name: "x", reason: "Redis unreachable" }]
    },
    {
      name: "highest offset first within a priority",
      candidates: [c("a", { offset: 10 }), c("b", { offset: 30 }), c("c", { offset: 20 })],
      previous: null,
      ranked: ["b", "c", "a"],
      excluded: []
    },
    {
      name: "previous master wins a tie on offset",
      candidates: [c("a", { offset: 50 }), c("b", { offset: 50 }), c("c", { offset: 50 })],
      previous: "c",
      ranked: ["c", "a", "b"],
      excluded: []
    },
    {
      name: "previous master does not beat a higher offset",
      candidates: [c("a", { offset: 51 }), c("prev", { offset: 50 })],
      previous: "prev",
      ranked: ["a", "prev"],
      excluded: []
    },
    {
      name: "previous master does not beat a lower priority",
      candidates: [c("a", { priority: 1, offset: 1 }), c("prev", { priority: 2, offset: 50 })],
      previous: "prev",
      ranked: ["a", "prev"],
      excluded: []
    },
    {
      name: "name breaks the last tie",
      candidates: [c("redis3"), c("redis1"), c("redis2")],
      previous: null,
      ranked: ["redis1", "redis2", "redis3"],
      excluded: []
    },
    {
      name: "name order is by code unit (uppercase before lowercase, 10 before 9)",
      candidates: [c("b"), c("B"), c("redis9"), c("redis10")],
      previous: null,
      ranked: ["B", "b", "redis10", "redis9"],
      excluded: []
    },
    {
      name: "a previous master that is not a candidate changes nothing",
      candidates: [c("b"), c("a")],
      previous: "zzz",
      ranked: ["a", "b"],
      excluded: []
    },
    {
      name: "an excluded previous master stays excluded",
      candidates: [c("prev", { healthy: false, offset: 99999 }), c("a")],
      previous: "prev",
      ranked: ["a"],
      excluded: [{ name: "prev", reason: "unhealthy" }]
    }
  ]

  it.each(cases)("$name", ({ candidates, previous, ranked, excluded }) => {
    const r = rankCandidates(candidates, previous)
    expect(names(r.ranked)).toEqual(ranked)
    expect(r.excluded).toEqual(excluded)
  })

  it("does not mutate its input", () => {
    const input = [c("b", { offset: 1 }), c("a", { offset: 2 })]
    const copy = input.map((x) => ({ ...x }))
    rankCandidates(input, null)
    expect(input).toEqual(copy)
  })

  const permutations = <A>(xs: ReadonlyArray<A>): Array<Array<A>> =>
    xs.length <= 1 ? [[...xs]] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]))

  it("gives the same order for every order of the same facts", () => {
    const pool = [
      c("r1", { priority: 100, offset: 500 }),
      c("r2", { priority: 100, offset: 700 }),
      c("r3", { priority: 100, offset: 700 }),
      c("r4", { priority: 50, offset: 100 }),
      c("r5", { priority: 100, offset: 500 }),
      c("r6", { priority: 0, offset: 9000 }),
      c("r7", { healthy: false, offset: 9000 })
    ]
    const all = permutations(pool)
    expect(all).toHaveLength(5040)
    const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1)
    for (const previous of [null, "r5", "r3"]) {
      const expected = {
        null: ["r4", "r2", "r3", "r1", "r5"],
        r5: ["r4", "r2", "r3", "r5", "r1"],
        r3: ["r4", "r3", "r2", "r1", "r5"]
      }[previous ?? "null"]
      for (const perm of all) {
        const r = rankCandidates(perm, previous)
        expect(names(r.ranked)).toEqual(expected)
        expect([...r.excluded].sort(byName)).toEqual([
          { name: "r6", reason: "priority 0" },
          { name: "r7", reason: "unhealthy" }
        ])
      }
    }
  })
})

// ---------------------------------------------------------------------------------------------

describe("votesNeeded / countVotes", () => {
  it.each([
    [0, 1],
    [1, 1],
    [2, 2],
    [3, 2],
    [4, 3],
    [5, 3],
    [6, 4]
  ])("votesNeeded(%i) = %i", (others, needed) => {
    expect(votesNeeded(others)).toBe(needed)
  })

  const member = (name: string, master_down: string | null): MemberRecord => ({
    name,
    host: `10.0.0.${name.length}`,
    port: 6379,
    priority: 100,
    healthy: true,
    role: "replica",
    offset: 100,
    link_up: master_down === null,
    master_down,
    version: "0.2.0"
  })
  const members = (...ms: ReadonlyArray<MemberRecord>): ReadonlyMap<string, MemberRecord> => new Map(ms.map((m) => [m.name, m]))

  const cases: ReadonlyArray<{
    readonly name: string
    readonly members: ReadonlyMap<string, MemberRecord>
    readonly votes: number
    readonly needed: number
    readonly voters: ReadonlyArray<string>
  }> = [
    {
      name: "the master's own opinion does not count, one other member",
      members: members(member("m", "E1"), member("a", null)),
      votes: 0,
      needed: 1,
      voters: []
    },
    {
      name: "one other member voting is a majority of one",
      members: members(member("m", null), member("a", "E1")),
      votes: 1,
      needed: 1,
      voters: ["a"]
    },
    {
      name: "two others: both needed",
      members: members(member("m", null), member("a", "E1"), member("b", null)),
      votes: 1,
      needed: 2,
      voters: ["a"]
    },
    {
      name: "three others: two needed",
      members: members(member("m", "E1"), member("a", "E1"), member("b", "E1"), member("c", null)),
      votes: 2,
      needed: 2,
      voters: ["a", "b"]
    },
    {
      name: "four others: three needed",
      members: members(member("m", null), member("a", "E1"), member("b", "E1"), member("c", "E1"), member("d", "E1")),
      votes: 4,
      needed: 3,
      voters: ["a", "b", "c", "d"]
    },
    {
      name: "votes against other epochs are ignored",
      members: members(member("m", null), member("a", "E0"), member("b", "E2"), member("c", "E1")),
      votes: 1,
      needed: 2,
      voters: ["c"]
    },
    {
      name: "the master absent from the members: everyone else counts",
      members: members(member("a", "E1"), member("b", "E1")),
      votes: 2,
      needed: 2,
      voters: ["a", "b"]
    },
    {
      name: "no members at all",
      members: members(),
      votes: 0,
      needed: 1,
      voters: []
    }
  ]

  it.each(cases)("$name", ({ members: ms, votes, needed, voters }) => {
    const r = countVotes(ms, "m", "E1")
    expect(r.votes).toBe(votes)
    expect(r.needed).toBe(needed)
    expect([...r.voters].sort()).toEqual(voters)
    expect(r.carried).toBe(votes >= needed)
  })
})

// ---------------------------------------------------------------------------------------------


describe("quorumOf", () => {
  it.each([
    [null, 3, 2],
    [null, 2, 1],
    [null, 5, 3],
    [null, 1, 1],
    [1, 3, 1],
    [3, 3, 3]
  ])("quorum %j with a largest membership of %i: %i votes", (configured, largest, needed) => {
    expect(quorumOf(configured, largest)).toBe(needed)
  })
})

describe("candidacy", () => {
  const c = (name: string, priority = 100, offset = 100): Candidate => ({ name, priority, offset, healthy: true, reachable: true, syncInProgress: false })
  const ranking = rankCandidates([c("a", 1, 50), c("b", 100, 100), c("c", 100, 90)], null)
  it("the best candidate stands at once, the next after one step each", () => {
    expect(candidacy(ranking, "a", 150)).toMatchObject({ _tag: "Candidate", rank: 0, waitMs: 0, best: "a" })
    expect(candidacy(ranking, "c", 150)).toMatchObject({ _tag: "Candidate", rank: 2, waitMs: 300 })
  })
  it("a replica named by a graceful handover stands first; the others wait the grace on top of their steps", () => {
    const named = { name: "b", from: "m", graceMs: 3000 }
    expect(candidacy(ranking, "b", 150, named)).toMatchObject({ rank: 0, waitMs: 0, reason: expect.stringContaining("named by m's graceful handover") })
    expect(candidacy(ranking, "a", 150, named)).toMatchObject({ rank: 1, waitMs: 3150, best: "b" })
  })
  it("a named replica that is not eligible changes nothing", () => {
    expect(candidacy(ranking, "a", 150, { name: "gone", from: "m", graceMs: 3000 })).toMatchObject({ rank: 0, waitMs: 0 })
  })
  it("not ranked: excluded with the reason", () => {
    const r = rankCandidates([c("a"), { ...c("z"), healthy: false }], null)
    expect(candidacy(r, "z", 150)).toEqual({ _tag: "Excluded", why: "unhealthy" })
    expect(candidacy(r, "nobody", 150)).toEqual({ _tag: "Excluded", why: "not a member yet" })
  })
})

describe("the lag guard (issue 7 item 10: max_lag_on_failover)", () => {
  const c = (name: string, offset: number, priority = 100): Candidate => ({ name, priority, offset, healthy: true, reachable: true, syncInProgress: false })
  const MiB = 1048576
  const guard = (recordedOffset: number | null, maxLag = MiB) => ({ recordedOffset, recordedBy: "old", maxLag })
  const rows: ReadonlyArray<readonly [string, Candidate, ReturnType<typeof guard> | null, RegExp | null]> = [
    ["no guard (no previous master known): anything goes", c("a", 0), null, null],
    ["nothing recorded for the old master: anything goes", c("a", 0), guard(null), null],
    ["the old master had no data: an empty Redis is as good", c("a", 0), guard(0), null],
    ["caught up", c("a", 5 * MiB), guard(5 * MiB), null],
    ["ahead of the record (it was rewritten a while ago)", c("a", 6 * MiB), guard(5 * MiB), null],
    ["exactly max_lag behind: still a candidate", c("a", 4 * MiB), guard(5 * MiB), null],
    ["one byte more than max_lag behind: excluded", c("a", 4 * MiB - 1), guard(5 * MiB), /1048577 bytes behind the last recorded master offset 5242880 of old, more than max_lag_on_failover 1048576/],
    ["restarted empty while the master had data: excluded even within max_lag", c("a", 0), guard(1000), /empty \(offset 0\) while master old had offset 1000/],
    ["max_lag 0: only a fully caught-up replica", c("a", 999), guard(1000, 0), /1 bytes behind/],
    ["max_lag -1: the operator allows anything, even empty", c("a", 0), guard(5 * MiB, -1), null],
    ["max_lag -1: far behind allowed", c("a", 1), guard(5 * MiB, -1), null]
  ]
  for (const [name, cand, g, reason] of rows) {
    it(name, () => {
      const r = lagExclusion(cand, g)
      if (reason === null) expect(r).toBeNull()
      else {
        expect(r).toMatch(reason)
        expect(r).toContain("max_lag_on_failover to -1")
      }
    })
  }

  it("a preferred (priority 1) but empty Redis loses to a caught-up one; with nobody qualifying there is no candidate at all", () => {
    const r = rankCandidates([c("empty", 0, 1), c("fresh", 5 * MiB)], null, guard(5 * MiB))
    expect(r.ranked.map((x) => x.name)).toEqual(["fresh"])
    expect(r.excluded).toEqual([{ name: "empty", reason: expect.stringContaining("empty (offset 0)") }])
    const none = rankCandidates([c("empty", 0, 1), c("behind", 2 * MiB)], null, guard(5 * MiB))
    expect(none.ranked).toEqual([])
    expect(candidacy(none, "behind", 150)).toMatchObject({ _tag: "Excluded", why: expect.stringContaining("behind the last recorded master offset") })
  })
})
