import { describe, expect, it } from "@effect/vitest"
import { Either, Option } from "effect"
import type {
  Candidate,
  CheckResult,
  HealthState,
  MasterRecord,
  PresentMaster,
  MemberRecord,
  Plan,
  RedisStep,
  Self,
  Situation
} from "../src/Decision.js"
import {
  countVotes,
  decide,
  minReplicasFor,
  nextHealth,
  parseMasterView,
  rankCandidates,
  redisStep,
  votesNeeded
} from "../src/Decision.js"
import type { RedisFailure, ReplicationInfo } from "../src/Redis.js"
import { RedisCommandError, RedisLoading, RedisUnavailable } from "../src/Redis.js"
import type { SessionInfo, SessionStatus, ZkNode, ZkStat } from "../src/ZooKeeper.js"

// ---------------------------------------------------------------------------------------------
// Fixtures

const enc = (s: string) => new TextEncoder().encode(s)

const stat = (over: Partial<ZkStat> = {}): ZkStat => ({
  version: 0,
  czxid: "4294967300",
  mzxid: "4294967300",
  ephemeralOwner: "1000a2b3c4d0001",
  ...over
})

const znode = (data: string, over: Partial<ZkStat> = {}): Option.Option<ZkNode> =>
  Option.some({ data: enc(data), stat: stat(over) })

const masterInfo = (over: Partial<ReplicationInfo> = {}): ReplicationInfo => ({
  role: "master",
  master: null,
  linkUp: true,
  linkDownSinceSeconds: null,
  syncInProgress: false,
  offset: 1000,
  replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  replicas: [],
  ...over
})

const replicaInfo = (host: string, port: number, over: Partial<ReplicationInfo> = {}): ReplicationInfo => ({
  role: "replica",
  master: { host, port },
  linkUp: true,
  linkDownSinceSeconds: null,
  syncInProgress: false,
  offset: 900,
  replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  replicas: [],
  ...over
})

const refused = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "refused", detail: "ECONNREFUSED" })
const closed = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "closed", detail: "Connection is closed" })
const timeout = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "timeout", detail: "PING got no answer" })
const loading = new RedisLoading({ address: "127.0.0.1:6379" })
const commandError = new RedisCommandError({ address: "127.0.0.1:6379", command: "INFO replication", detail: "NOPERM" })

const ok = (info: ReplicationInfo = masterInfo()): CheckResult => Either.right(info)
const fail = (e: RedisFailure): CheckResult => Either.left(e)

// ---------------------------------------------------------------------------------------------

describe("parseMasterView", () => {
  it("is Absent when there is no znode", () => {
    expect(parseMasterView(Option.none())).toEqual({ _tag: "Absent" })
    expect(parseMasterView(Option.none(), znode("", { version: 3 }))).toEqual({ _tag: "Absent" })
  })

  const present: ReadonlyArray<{ readonly name: string; readonly data: string; readonly record: MasterRecord }> = [
    {
      name: "COMPAT record with the port as a string",
      data: `{"host": "10.0.0.1", "port": "6379", "name": "redis1"}`,
      record: { host: "10.0.0.1", port: 6379, name: "redis1" }
    },
    {
      name: "port as a number",
      data: `{"host":"10.0.0.2","port":6380,"name":"redis2"}`,
      record: { host: "10.0.0.2", port: 6380, name: "redis2" }
    },
    {
      name: "extra fields are ignored",
      data: `{"host":"db3.example","port":"7000","name":"redis3","version":"0.2.0","since":12345,"nested":{"a":1}}`,
      record: { host: "db3.example", port: 7000, name: "redis3" }
    },
    {
      name: "lowest and highest ports",
      data: `{"host":"h","port":"1","name":"n"}`,
      record: { host: "h", port: 1, name: "n" }
    },
    {
      name: "highest port as a number",
      data: `{"host":"h","port":65535,"name":"n"}`,
      record: { host: "h", port: 65535, name: "n" }
    },
    {
      name: "IPv6 host",
      data: `{"host":"::1","port":"6379","name":"v6"}`,
      record: { host: "::1", port: 6379, name: "v6" }
    }
  ]

  it.each(present)("Present: $name", ({ data, record }) => {
    const view = parseMasterView(znode(data, { version: 2, czxid: "77", mzxid: "79", ephemeralOwner: "abc123" }))
    expect(view).toEqual({
      _tag: "Present",
      record,
      version: 2,
      epoch: "77",
      owner: "abc123",
      epochVersion: null
    })
  })

  const malformed: ReadonlyArray<{ readonly name: string; readonly data: string; readonly reason: RegExp }> = [
    { name: "not JSON", data: `{"host": "10.0.0.1", "port": `, reason: /^not JSON$/ },
    { name: "empty data", data: ``, reason: /^not JSON$/ },
    { name: "JSON null", data: `null`, reason: /actual null/ },
    { name: "JSON array", data: `["10.0.0.1", "6379", "redis1"]`, reason: /Expected/ },
    { name: "a bare string", data: `"10.0.0.1:6379"`, reason: /Expected/ },
    { name: "missing name", data: `{"host":"10.0.0.1","port":"6379"}`, reason: /missing/ },
    { name: "missing host", data: `{"port":"6379","name":"redis1"}`, reason: /missing/ },
    { name: "missing port", data: `{"host":"10.0.0.1","name":"redis1"}`, reason: /missing/ },
    { name: "empty name", data: `{"host":"10.0.0.1","port":"6379","name":""}`, reason: /at least 1 character/ },
    { name: "empty host", data: `{"host":"","port":"6379","name":"redis1"}`, reason: /at least 1 character/ },
    { name: "port not digits", data: `{"host":"10.0.0.1","port":"redis","name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port with a sign", data: `{"host":"10.0.0.1","port":"-1","name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port as a float", data: `{"host":"10.0.0.1","port":6379.5,"name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port as boolean", data: `{"host":"10.0.0.1","port":true,"name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port string 0", data: `{"host":"10.0.0.1","port":"0","name":"redis1"}`, reason: /^port 0 out of range$/ },
    { name: "port string 70000", data: `{"host":"10.0.0.1","port":"70000","name":"redis1"}`, reason: /^port 70000 out of range$/ },
    { name: "port string 65536", data: `{"host":"10.0.0.1","port":"65536","name":"redis1"}`, reason: /^port 65536 out of range$/ },
    { name: "port number 0", data: `{"host":"10.0.0.1","port":0,"name":"redis1"}`, reason: /between 1 and 65535/ },
    { name: "port number 70000", data: `{"host":"10.0.0.1","port":70000,"name":"redis1"}`, reason: /between 1 and 65535/ },
    { name: "name as a number", data: `{"host":"10.0.0.1","port":"6379","name":1}`, reason: /Expected string/ }
  ]

  it.each(malformed)("Malformed: $name", ({ data, reason }) => {
    const view = parseMasterView(znode(data, { version: 5, czxid: "100", mzxid: "101", ephemeralOwner: "feed" }))
    expect(view._tag).toBe("Malformed")
    if (view._tag !== "Malformed") return
    expect(view.raw).toBe(data)
    expect(view.reason).toMatch(reason)
    expect(view).toMatchObject({ version: 5, epoch: "100", owner: "feed", epochVersion: null })
  })

  const epochCases: ReadonlyArray<{
    readonly name: string
    readonly epochNode: Option.Option<ZkNode>
    readonly expected: number | null
  }> = [
    { name: "no epoch node", epochNode: Option.none(), expected: null },
    { name: "epoch node last changed by the master's creation", epochNode: znode("", { version: 7, czxid: "3", mzxid: "500", ephemeralOwner: "0" }), expected: 7 },
    { name: "epoch node at version 0 changed by the creation", epochNode: znode("", { version: 0, czxid: "500", mzxid: "500", ephemeralOwner: "0" }), expected: 0 },
    { name: "epoch node changed after the master (a newer election)", epochNode: znode("", { version: 8, czxid: "3", mzxid: "501", ephemeralOwner: "0" }), expected: null },
    { name: "epoch node changed before the master (created without it)", epochNode: znode("", { version: 6, czxid: "3", mzxid: "499", ephemeralOwner: "0" }), expected: null },
    { name: "epoch czxid equal to the master's czxid does not count", epochNode: znode("", { version: 4, czxid: "500", mzxid: "600", ephemeralOwner: "0" }), expected: null }
  ]

  it.each(epochCases)("epochVersion: $name", ({ epochNode, expected }) => {
    const good = parseMasterView(znode(`{"host":"h","port":"6379","name":"n"}`, { czxid: "500", mzxid: "500" }), epochNode)
    expect(good._tag).toBe("Present")
    expect(good).toMatchObject({ epoch: "500", epochVersion: expected })
    // Malformed records carry it too, so they can be removed at the epoch they were seen.
    const bad = parseMasterView(znode(`garbage`, { czxid: "500", mzxid: "500" }), epochNode)
    expect(bad._tag).toBe("Malformed")
    expect(bad).toMatchObject({ epoch: "500", epochVersion: expected })
  })

  it("compares the epoch with the master's czxid, not its mzxid", () => {
    // The master znode's data was rewritten (mzxid 900) after its creation (czxid 500).
    const node = znode(`{"host":"h","port":"6379","name":"n"}`, { czxid: "500", mzxid: "900", version: 1 })
    expect(parseMasterView(node, znode("", { version: 3, mzxid: "500" }))).toMatchObject({ epochVersion: 3, version: 1 })
    expect(parseMasterView(node, znode("", { version: 3, mzxid: "900" }))).toMatchObject({ epochVersion: null })
  })
})

// ---------------------------------------------------------------------------------------------

describe("nextHealth", () => {
  const opts = { downAfterMs: 1000 }
  type Step = { readonly at: number; readonly result: CheckResult; readonly expect: Partial<Record<string, unknown>> & { _tag: HealthState["_tag"] } }

  const run = (steps: ReadonlyArray<Step>, start: HealthState = { _tag: "Unknown" }) => {
    let h = start
    steps.forEach((step, i) => {
      h = nextHealth(h, step.result, step.at, opts)
      expect({ step: i, ...h }).toMatchObject({ step: i, ...step.expect })
    })
    return h
  }

  const info = masterInfo({ offset: 4242 })
  const healthy: HealthState = { _tag: "Healthy", info, at: 0 }

  const scenarios: ReadonlyArray<{ readonly name: string; readonly start?: HealthState; readonly steps: ReadonlyArray<Step> }> = [
    {
      name: "refused from Healthy is Down at once",
      start: healthy,
      steps: [{ at: 100, result: fail(refused), expect: { _tag: "Down", since: 100, detail: refused.message } }]
    },
    {
      name: "refused from Unknown is Down at once",
      steps: [{ at: 5, result: fail(refused), expect: { _tag: "Down", since: 5 } }]
    },
    {
      name: "refused after a Suspect keeps the Suspect's since",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 200, result: fail(refused), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "closed is Suspect (keeping the last info), then Down on the second",
      start: healthy,
      steps: [
        { at: 100, result: fail(closed), expect: { _tag: "Suspect", since: 100, detail: closed.message, info } },
        { at: 200, result: fail(closed), expect: { _tag: "Down", since: 100, detail: closed.message } },
        { at: 300, result: fail(closed), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "closed from Unknown is Suspect without info",
      steps: [{ at: 10, result: fail(closed), expect: { _tag: "Suspect", since: 10, info: null } }]
    },
    {
      name: "closed after a timeout Suspect is Down",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 150, result: fail(closed), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "timeouts are Suspect until downAfterMs, then Down, since kept across",
      start: healthy,
      steps: [
        { at: 1000, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info, detail: timeout.message } },
        { at: 1250, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info } },
        { at: 1999, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info } },
        { at: 2000, result: fail(timeout), expect: { _tag: "Down", since: 1000, detail: `${timeout.message} for 1000 ms` } },
        { at: 2500, result: fail(timeout), expect: { _tag: "Down", since: 1000, detail: timeout.message } }
      ]
    },
    {
      name: "timeouts from Unknown are Suspect without info",
      steps: [
        { at: 0, result: fail(timeout), expect: { _tag: "Suspect", since: 0, info: null } },
        { at: 999, result: fail(timeout), expect: { _tag: "Suspect", since: 0, info: null } },
        { at: 1000, result: fail(timeout), expect: { _tag: "Down", since: 0 } }
      ]
    },
    {
      name: "a success in between restarts the timeout clock",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 900, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 1000, result: ok(info), expect: { _tag: "Healthy", at: 1000, info } },
        { at: 1100, result: fail(timeout), expect: { _tag: "Suspect", since: 1100 } },
        { at: 2099, result: fail(timeout), expect: { _tag: "Suspect", since: 1100 } },
        { at: 2100, result: fail(timeout), expect: { _tag: "Down", since: 1100 } }
      ]
    },
    {
      name: "Loading keeps its since while it lasts, success ends it",
      start: healthy,
      steps: [
        { at: 100, result: fail(loading), expect: { _tag: "Loading", since: 100 } },
        { at: 5000, result: fail(loading), expect: { _tag: "Loading", since: 100 } },
        { at: 6000, result: ok(info), expect: { _tag: "Healthy", at: 6000 } }
      ]
    },
    {
      name: "Loading after Down starts a new since",
      start: { _tag: "Down", since: 10, detail: "x" },
      steps: [{ at: 500, result: fail(loading), expect: { _tag: "Loading", since: 500 } }]
    },
    {
      name: "a success resets Down to Healthy",
      start: { _tag: "Down", since: 10, detail: "x" },
      steps: [
        { at: 500, result: ok(info), expect: { _tag: "Healthy", at: 500, info } },
        { at: 600, result: fail(closed), expect: { _tag: "Suspect", since: 600, info } }
      ]
    },
    {
      name: "a success resets Suspect to Healthy",
      start: { _tag: "Suspect", since: 10, detail: "x", info: null },
      steps: [{ at: 20, result: ok(info), expect: { _tag: "Healthy", at: 20, info } }]
    },
    {
      name: "a command error is Down at once",
      start: healthy,
      steps: [{ at: 100, result: fail(commandError), expect: { _tag: "Down", since: 100, detail: commandError.message } }]
    },
    {
      name: "a command error keeps a Suspect's since",
      start: { _tag: "Suspect", since: 42, detail: "x", info: null },
      steps: [{ at: 100, result: fail(commandError), expect: { _tag: "Down", since: 42 } }]
    },
    {
      name: "Down stays Down on timeouts with its first since",
      start: { _tag: "Down", since: 7, detail: "refused" },
      steps: [{ at: 100, result: fail(timeout), expect: { _tag: "Down", since: 7, detail: timeout.message } }]
    }
  ]

  it.each(scenarios)("$name", ({ start, steps }) => {
    run(steps, start)
  })

  it("downAfterMs 0 makes the first timeout Down", () => {
    expect(nextHealth(healthy, fail(timeout), 50, { downAfterMs: 0 })).toMatchObject({ _tag: "Down", since: 50 })
  })

  it("Healthy carries the latest info", () => {
    const other = replicaInfo("10.0.0.1", 6379, { offset: 99 })
    expect(nextHealth(healthy, ok(other), 123, opts)).toEqual({ _tag: "Healthy", info: other, at: 123 })
  })
})

// ---------------------------------------------------------------------------------------------

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
      name: "our name at another address, other session: still ours to clear",
      s: { master: staleElsewhere },
      plan: { _tag: "ClearStale", master: staleElsewhere, reason: `master znode names this node but belongs to an older session 0x${OTHER}` }
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
    ClearStale: { _tag: "ClearStale", master: znode, reason: "c" }
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
    expect(table).toHaveLength(7 * 7 * 2)
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
