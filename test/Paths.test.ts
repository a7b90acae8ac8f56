import { describe, expect, it } from "@effect/vitest"
import { parentOf, servicePaths } from "../src/Paths.js"

describe("servicePaths", () => {
  it("lays out DESIGN.md §3 for the default service", () => {
    const p = servicePaths("default")
    expect({ ...p, member: p.member("redis1") }).toEqual({
      service: "/services/redis/default",
      master: "/services/redis/default/master",
      epoch: "/services/redis/default/epoch",
      members: "/services/redis/default/members",
      member: "/services/redis/default/members/redis1",
      elections: "/elections/redis/default",
      handover: "/services/redis/default/handover",
      control: "/services/redis/default/control",
      maintenance: "/services/redis/default/control/maintenance",
      switchover: "/services/redis/default/control/switchover",
      switchoverResult: "/services/redis/default/control/switchover-result"
    })
  })

  it.each(["default", "cache-1", "eu.west_2", "A"])("keeps every path of %s under its service", (svc) => {
    const p = servicePaths(svc)
    expect(p.master).toBe(`/services/redis/${svc}/master`)
    expect(p.elections).toBe(`/elections/redis/${svc}`)
    for (const path of [p.master, p.epoch, p.members, p.member("n"), p.handover, p.control, p.maintenance, p.switchover, p.switchoverResult]) {
      expect(path.startsWith(`${p.service}/`)).toBe(true)
    }
  })

  it("keeps services apart", () => {
    const a = servicePaths("a")
    const b = servicePaths("ab")
    expect(a.master).not.toBe(b.master)
    expect(b.master.startsWith(`${a.service}/`)).toBe(false)
  })

  it("builds member paths from names", () => {
    const p = servicePaths("svc")
    expect(["r1", "redis-2", "node.3"].map(p.member)).toEqual([
      "/services/redis/svc/members/r1",
      "/services/redis/svc/members/redis-2",
      "/services/redis/svc/members/node.3"
    ])
  })

  it("nests each path in the one above it", () => {
    const p = servicePaths("svc")
    expect(parentOf(p.master)).toBe(p.service)
    expect(parentOf(p.epoch)).toBe(p.service)
    expect(parentOf(p.members)).toBe(p.service)
    expect(parentOf(p.member("x"))).toBe(p.members)
    expect(parentOf(p.control)).toBe(p.service)
    expect(parentOf(p.maintenance)).toBe(p.control)
    expect(parentOf(p.switchover)).toBe(p.control)
    expect(parentOf(p.switchoverResult)).toBe(p.control)
    expect(parentOf(p.service)).toBe("/services/redis")
    expect(parentOf(p.elections)).toBe("/elections/redis")
  })
})

describe("parentOf", () => {
  it.each([
    ["/services/redis/default/master", "/services/redis/default"],
    ["/services/redis", "/services"],
    ["/services", "/"],
    ["/", "/"],
    ["/a/b/c", "/a/b"],
    ["/elections/redis/default/n_0000000001", "/elections/redis/default"]
  ])("parentOf(%s) = %s", (path, parent) => {
    expect(parentOf(path)).toBe(parent)
  })

  it("reaches the root from any path", () => {
    let path = "/services/redis/default/members/redis1"
    const seen: Array<string> = []
    while (path !== "/") {
      path = parentOf(path)
      seen.push(path)
    }
    expect(seen).toEqual(["/services/redis/default/members", "/services/redis/default", "/services/redis", "/services", "/"])
  })
})
