import { describe, expect, it } from "vitest"
import { diff } from "../../src/sentinel/Events.js"
import {
  type DiscoveryView,
  fromStatus,
  handOut,
  masterFlags,
  masterRecord,
  parseEndpoint,
  replicaFlags,
  replicaRecord,
  replicas,
  sentinelRecord,
  sentinels
} from "../../src/sentinel/Records.js"
import { member, status } from "./fixtures.js"

const opts = { now: 10_000, staleAfterMs: 1000 }
const view = (s: Parameters<typeof fromStatus>[0], prev: DiscoveryView | null = null, now = opts.now) =>
  fromStatus(s, prev, { ...opts, now })
const fields = (f: ReadonlyArray<readonly [string, string]>) => Object.fromEntries(f)

describe("fromStatus and the records", () => {
  it("a healthy master is handed out, with flags master and its replicas and sentinels", () => {
    const v = view(status({ self: 1 }))
    expect(handOut(v)).toEqual({ host: "127.0.0.1", port: 7001 })
    expect(masterFlags(v)).toBe("master")
    expect(replicas(v).map((m) => m.name)).toEqual(["n2", "n3"])
    // Its own endpoint is not among the "other" sentinels.
    expect(sentinels(v).map((m) => m.sentinel)).toEqual([
      { host: "127.0.0.1", port: 26002 },
      { host: "127.0.0.1", port: 26003 }
    ])
    const m = fields(masterRecord(v, v.master!, { downAfterMs: 1000 }))
    expect(m).toMatchObject({
      name: "svc",
      ip: "127.0.0.1",
      port: "7001",
      flags: "master",
      "config-epoch": "4294967296",
      "num-slaves": "2",
      "num-other-sentinels": "2",
      quorum: "2",
      "down-after-milliseconds": "1000"
    })
    expect(m["runid"]).toMatch(/^[0-9a-f]{40}$/)
    const r = fields(replicaRecord(v, replicas(v)[0]!, { downAfterMs: 1000 }))
    expect(r).toMatchObject({
      name: "127.0.0.1:7002",
      ip: "127.0.0.1",
      port: "7002",
      flags: "slave",
      "master-link-status": "ok",
      "master-host": "127.0.0.1",
      "master-port": "7001",
      "slave-priority": "100",
      "slave-repl-offset": "1000"
    })
    const s = fields(sentinelRecord(v, sentinels(v)[0]!, { downAfterMs: 1000 }))
    expect(s).toMatchObject({ ip: "127.0.0.1", port: "26002", flags: "sentinel" })
    expect(s["name"]).toBe(s["runid"])
  })

  it("a master a majority voted down is s_down,o_down, and still handed out until replaced (as Sentinel)", () => {
    const members = [member(1, { role: "master" }), member(2, { master_down: "4294967296" }), member(3, { master_down: "4294967296" })]
    const v = view(status({ self: 2, members }))
    expect(masterFlags(v)).toBe("master,s_down,o_down")
    expect(handOut(v)).toEqual({ host: "127.0.0.1", port: 7001 })
  })

  it("one vote (this node's) is s_down only: still handed out", () => {
    const members = [member(1, { role: "master" }), member(2, { master_down: "4294967296" }), member(3)]
    const v = view(status({ self: 2, members }))
    expect(masterFlags(v)).toBe("master,s_down")
    expect(handOut(v)).toEqual({ host: "127.0.0.1", port: 7001 })
    // A vote against an older epoch does not count.
    const old = view(status({ self: 2, members: [member(1, { role: "master" }), member(2, { master_down: "1" }), member(3, { master_down: "1" })] }))
    expect(masterFlags(old)).toBe("master")
  })

  it("the master's own dictator finding its Redis unhealthy is s_down", () => {
    const v = view(status({ self: 2, members: [member(1, { role: "master", healthy: false }), member(2), member(3)] }))
    expect(masterFlags(v)).toBe("master,s_down")
  })

  it("a master znode gone: the last master is kept and handed out, flagged s_down,o_down", () => {
    const before = view(status({}))
    const v = view(status({ master: null }), before)
    expect(v.master).toMatchObject({ host: "127.0.0.1", port: 7001 })
    expect(masterFlags(v)).toBe("master,s_down,o_down")
    expect(handOut(v)).toEqual({ host: "127.0.0.1", port: 7001 })
  })

  it("a session lost past staleAfterMs hands out nothing and flags the master down; a short blip does not", () => {
    const blip = view(status({ session: { status: "disconnected", since: opts.now - 500 } }))
    expect(handOut(blip)).not.toBeNull()
    const stale = view(status({ session: { status: "disconnected", since: opts.now - 1000 } }))
    expect(stale.stale).toBe(true)
    expect(handOut(stale)).toBeNull()
    expect(masterFlags(stale)).toBe("master,s_down,o_down")
  })

  it("a member that left is shown disconnected, then forgotten when it comes back", () => {
    const before = view(status({}))
    const gone = view(status({ members: [member(1, { role: "master" }), member(2)] }), before)
    const n3 = replicas(gone).find((m) => m.name === "n3")!
    expect(n3.present).toBe(false)
    expect(replicaFlags(n3)).toBe("slave,s_down,disconnected")
    expect(fields(replicaRecord(gone, n3, { downAfterMs: 1 }))["master-link-status"]).toBe("err")
    expect(sentinels(gone).map((s) => s.name)).toEqual(["n2"])
    const back = view(status({}), gone)
    expect(replicas(back).map((m) => [m.name, m.present])).toEqual([["n2", true], ["n3", true]])
  })

  it("an unhealthy replica or one not replicating is s_down", () => {
    const v = view(status({ members: [member(1, { role: "master" }), member(2, { healthy: false }), member(3, { role: "master" })] }))
    expect(replicas(v).map(replicaFlags)).toEqual(["slave,s_down", "slave,s_down"])
  })

  it("nothing read yet: no master, nothing down", () => {
    const v = fromStatus({ ...status({}), master: null }, null, opts)
    expect(v.master).toBeNull()
    expect(handOut(v)).toBeNull()
  })

  it.each([
    ["127.0.0.1:26379", { host: "127.0.0.1", port: 26379 }],
    ["[::1]:26379", { host: "::1", port: 26379 }],
    ["db-1.example:1", { host: "db-1.example", port: 1 }],
    ["127.0.0.1", null],
    ["127.0.0.1:70000", null],
    ["::1:26379", null],
    [null, null]
  ])("parseEndpoint(%s)", (s, a) => {
    expect(parseEndpoint(s)).toEqual(a)
  })
})

describe("diff: the events between two views", () => {
  const channels = (events: ReadonlyArray<{ channel: string; payload: string }>) => events.map((e) => `${e.channel} ${e.payload}`)

  it("no events for the first view or an unchanged one", () => {
    const v = view(status({}))
    expect(diff(null, v)).toEqual([])
    expect(diff(v, view(status({}), v))).toEqual([])
  })

  it("a lost master: +sdown then +odown; a failover: +switch-master with five fields, then +slave per replica", () => {
    const v1 = view(status({ self: 2 }))
    const voted = [member(1, { role: "master" }), member(2, { master_down: "4294967296" }), member(3, { master_down: "4294967296" })]
    const v2 = view(status({ self: 2, members: voted }), v1)
    expect(channels(diff(v1, v2))).toEqual(["+sdown master svc 127.0.0.1 7001", "+odown master svc 127.0.0.1 7001 #quorum 2/2"])
    const v3 = view(status({ self: 2, master: null, members: [member(2), member(3)] }), v2)
    // Lost, not replaced: the last master is still the master entry, already announced down.
    expect(channels(diff(v2, v3))).toEqual([])
    const promoted = [member(2, { role: "master" }), member(3)]
    const v4 = view(status({ self: 2, master: 2, epoch: "8589934592", members: promoted }), v3)
    const events = diff(v3, v4)
    expect(channels(events)).toEqual([
      "+switch-master svc 127.0.0.1 7001 127.0.0.1 7002",
      "+slave slave 127.0.0.1:7003 127.0.0.1 7003 @ svc 127.0.0.1 7002",
      // The old master, whose dictator left, is now a replica entry: down and disconnected.
      "+sdown slave 127.0.0.1:7001 127.0.0.1 7001 @ svc 127.0.0.1 7002"
    ])
    expect(events[0]!.payload.split(" ")).toHaveLength(5)
    expect(handOut(v4)).toEqual({ host: "127.0.0.1", port: 7002 })
    expect(fields(masterRecord(v4, v4.master!, { downAfterMs: 1 }))["config-epoch"]).toBe("8589934592")
  })

  it("a direct switch announces the old master's +sdown first", () => {
    const v1 = view(status({}))
    const v2 = view(status({ master: 2, members: [member(1, { healthy: false, role: "unknown" }), member(2, { role: "master" }), member(3)] }), v1)
    expect(channels(diff(v1, v2))).toEqual([
      "+sdown master svc 127.0.0.1 7001",
      "+switch-master svc 127.0.0.1 7001 127.0.0.1 7002",
      "+slave slave 127.0.0.1:7001 127.0.0.1 7001 @ svc 127.0.0.1 7002",
      "+slave slave 127.0.0.1:7003 127.0.0.1 7003 @ svc 127.0.0.1 7002",
      "+sdown slave 127.0.0.1:7001 127.0.0.1 7001 @ svc 127.0.0.1 7002"
    ])
  })

  it("replicas: ±sdown as they fail and recover, +slave and +sentinel as they join", () => {
    const v1 = view(status({ members: [member(1, { role: "master" }), member(2)] }))
    const v2 = view(status({ members: [member(1, { role: "master" }), member(2, { healthy: false }), member(3)] }), v1)
    expect(channels(diff(v1, v2))).toEqual([
      "+slave slave 127.0.0.1:7003 127.0.0.1 7003 @ svc 127.0.0.1 7001",
      "+sdown slave 127.0.0.1:7002 127.0.0.1 7002 @ svc 127.0.0.1 7001",
      expect.stringMatching(/^\+sentinel sentinel [0-9a-f]{40} 127\.0\.0\.1 26003 @ svc 127\.0\.0\.1 7001$/)
    ])
    const v3 = view(status({}), v2)
    expect(channels(diff(v2, v3))).toEqual(["-sdown slave 127.0.0.1:7002 127.0.0.1 7002 @ svc 127.0.0.1 7001"])
  })

  it("a master recovering before it is replaced: -odown, -sdown", () => {
    const v1 = view(status({ master: null }), view(status({})))
    const v2 = view(status({}), v1)
    expect(channels(diff(v1, v2))).toEqual(["-odown master svc 127.0.0.1 7001", "-sdown master svc 127.0.0.1 7001"])
  })
})
