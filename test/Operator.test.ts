import { describe, expect, it } from "@effect/vitest"
import { Either, Option } from "effect"
import { isOperatorCommand, parseArgs } from "../src/Cli.js"
import { parseSwitchoverTime, type MemberRecord, type PresentMaster } from "../src/domain/Records.js"
import { normaliseArgv, refuseTarget } from "../src/Operator.js"
import { serviceJson, type ServiceSnapshot, serviceTable } from "../src/OperatorView.js"

describe("normaliseArgv: Go-style single-dash long options for @effect/cli", () => {
  it.each([
    [["list", "-zk=h:2181", "-json"], ["list", "--zk=h:2181", "--json"]],
    [["list", "-config", "/x.conf"], ["list", "--config", "/x.conf"]],
    [["switchover", "svc", "-to=redis2", "-force"], ["switchover", "svc", "--to=redis2", "--force"]],
    [["list", "--zk=h", "--json"], ["list", "--zk=h", "--json"]],
    [["list", "-h"], ["list", "-h"]],
    [["list", "svc-1", "-"], ["list", "svc-1", "-"]],
    [["list", "--", "-json"], ["list", "--", "-json"]],
    [["status", "-config=/a=b.conf"], ["status", "--config=/a=b.conf"]]
  ])("%j -> %j", (argv, expected) => {
    expect(normaliseArgv(argv)).toEqual(expected)
  })
})

describe("isOperatorCommand: subcommands go to the CLI, everything else to the daemon's parser", () => {
  it.each([
    [["list"], true],
    [["switchover", "svc"], true],
    [["pause", "svc"], true],
    [["resume", "svc"], true],
    [["status", "--config=/x"], true],
    [[], false],
    [["--config=/x"], false],
    [["-config", "/x"], false],
    [["--help"], false],
    [["lists"], false]
  ])("%j -> %s", (argv, expected) => {
    expect(isOperatorCommand(argv)).toBe(expected)
  })

  it("the daemon's syntax is unchanged: a non-subcommand argument is still refused by its parser", () => {
    expect(parseArgs(["listing"])).toEqual(Either.left(`unexpected argument "listing"; see --help`))
  })
})

describe("parseSwitchoverTime", () => {
  const now = Date.UTC(2026, 11, 2, 0, 0, 0)
  it("accepts a future ISO time", () => {
    expect(parseSwitchoverTime("2026-12-02T03:00:00Z", now)).toEqual(Either.right(Date.UTC(2026, 11, 2, 3, 0, 0)))
  })
  it("refuses a past time in one line", () => {
    expect(parseSwitchoverTime("2026-12-01T23:00:00Z", now)).toEqual(
      Either.left('--at "2026-12-01T23:00:00Z" is in the past (now 2026-12-02T00:00:00.000Z); give a future time, or leave --at out to switch over now')
    )
  })
  it.each(["tomorrow", "", "3pm", "2026-13-45T00:00:00Z", "1700000000"])("refuses %j as not an ISO time", (text) => {
    expect(parseSwitchoverTime(text, now)).toEqual(Either.left(`--at "${text}" is not an ISO time; use e.g. --at=2026-12-02T03:00:00Z`))
  })
})

const member = (name: string, over: Partial<MemberRecord> = {}): MemberRecord => ({
  name,
  host: "127.0.0.1",
  port: name === "redis1" ? 7001 : name === "redis2" ? 7002 : 7003,
  priority: 100,
  healthy: true,
  role: "replica",
  offset: 1000,
  link_up: true,
  master_down: null,
  version: "0.2.0",
  ...over
})

const master: PresentMaster = { _tag: "Present", record: { name: "redis2", host: "127.0.0.1", port: 7002 }, version: 0, epoch: "4294967302", owner: "abc", epochVersion: 1 }

const snapshot = (over: Partial<ServiceSnapshot> = {}): ServiceSnapshot => ({
  service: "orders",
  master,
  members: [member("redis3", { offset: 900, link_up: false }), member("redis1", { offset: 1000 }), member("redis2", { role: "master", offset: 1500 })],
  maintenance: null,
  switchover: null,
  lastSwitchover: null,
  ...over
})

describe("serviceJson / serviceTable", () => {
  it("puts the master first, computes each replica's lag from the master's offset", () => {
    const j = serviceJson(snapshot())
    expect(j.master).toEqual({ name: "redis2", host: "127.0.0.1", port: 7002, epoch: "4294967302" })
    expect(j.members.map((m) => [m.name, m.role, m.elected, m.lag_bytes])).toEqual([
      ["redis2", "master", true, null],
      ["redis1", "replica", false, 500],
      ["redis3", "replica", false, 600]
    ])
  })

  it("prints one table with a header naming the master, and flags", () => {
    expect(serviceTable(serviceJson(snapshot()))).toBe(
      [
        "service orders: master redis2 (127.0.0.1:7002, epoch 4294967302)",
        "MEMBER  ADDRESS         ROLE     HEALTH   OFFSET  LAG    PRIORITY  EPOCH       FLAGS",
        "redis2  127.0.0.1:7002  master   healthy  1500    -      100       4294967302  -",
        "redis1  127.0.0.1:7001  replica  healthy  1000    500 B  100       -           -",
        "redis3  127.0.0.1:7003  replica  healthy  900     600 B  100       -           link-down"
      ].join("\n")
    )
  })

  it("shows maintenance and a pending switchover in the header and the flags", () => {
    const j = serviceJson(
      snapshot({
        maintenance: { since: "2026-12-02T00:00:00.000Z", by: "ops@host" },
        switchover: { id: "x", to: "redis1", at: "2026-12-02T03:00:00.000Z", requested_at: "2026-12-02T00:00:00.000Z", by: "ops@host" }
      })
    )
    expect(j.maintenance).toBe(true)
    const table = serviceTable(j)
    expect(table).toContain("\n  MAINTENANCE (paused since 2026-12-02T00:00:00.000Z by ops@host): no automatic failover\n")
    expect(table).toContain("\n  switchover pending to redis1 at 2026-12-02T03:00:00.000Z (asked by ops@host)\n")
    expect(table.split("\n").filter((l) => l.startsWith("redis")).every((l) => l.includes("paused"))).toBe(true)
  })

  it("without a master: no lag, 'no master' in the header", () => {
    const j = serviceJson(snapshot({ master: { _tag: "Absent" } }))
    expect(j.master).toBeNull()
    expect(j.members.every((m) => m.lag_bytes === null && !m.elected)).toBe(true)
    expect(serviceTable(j).split("\n")[0]).toBe("service orders: no master")
  })
})

describe("refuseTarget: what the CLI can see before asking the master", () => {
  const j = serviceJson(
    snapshot({
      members: [member("redis2", { role: "master", offset: 100_000 }), member("redis1", { offset: 99_000 }), member("redis3", { healthy: false }), member("redis4", { priority: 0 })]
    })
  )
  it.each([
    ["redis1", 16 * 1024 * 1024, null],
    ["redis1", 500, "redis1 is behind: 1000 bytes behind the master (more than --max-lag 500)"],
    ["redis2", 1000, "redis2 is already the master"],
    ["redis3", 1000, "redis3 is not healthy"],
    ["redis4", 1000, "redis4 has priority 0 (never master)"],
    ["nosuch", 1000, "nosuch is not a member of service orders (members: redis2, redis1, redis3, redis4)"]
  ])("%s (max lag %d): %s", (to, maxLag, reason) => {
    expect(refuseTarget(j, to, maxLag)).toBe(reason)
  })

  it("a replica whose link is down is behind", () => {
    const k = serviceJson(snapshot())
    expect(refuseTarget(k, "redis3", 1 << 30)).toBe("redis3 is behind: its replication link to the master is down")
    expect(Option.isSome(Option.fromNullable(refuseTarget(k, "redis1", 1 << 30)))).toBe(false)
  })
})
