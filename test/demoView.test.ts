import { describe, expect, it } from "@effect/vitest"
import { MENU, type NodeView, rolesLine } from "../examples/demoView.js"

const elected = { state: "elected", name: "redis1", host: "127.0.0.1", port: 7001, epoch: "12", owner: "0x1" }
const node = (name: string, role: string, extra: Record<string, unknown> = {}): NodeView => ({
  name,
  state: "status",
  status: { name, role, master: elected, redis: { state: "healthy", role: role === "master" ? "master" : "replica" }, ...extra }
})

describe("demo roles line", () => {
  it("names the master with its address and epoch, then the replicas", () => {
    expect(rolesLine([node("redis1", "master"), node("redis2", "replica"), node("redis3", "replica")])).toBe(
      "master: redis1 127.0.0.1:7001 (epoch 12) · replicas: redis2, redis3"
    )
  })

  it("says why a node is neither, and which are stopped or frozen", () => {
    const down = node("redis1", "waiting", { redis: { state: "down", detail: "connection refused" } })
    expect(
      rolesLine([down, node("redis2", "replica"), { name: "redis3", state: "frozen" }])
    ).toBe("master: redis1 127.0.0.1:7001 (epoch 12) · replicas: redis2 · other: redis1 waiting, Redis down: connection refused; redis3 frozen")
  })

  it("no master elected; the master named by most dictators wins", () => {
    expect(rolesLine([{ name: "redis1", state: "stopped" }, node("redis2", "candidate", { master: { state: "none" } })])).toBe(
      "master: none · replicas: none · other: redis1 stopped; redis2 candidate"
    )
    const stale = { ...elected, name: "redis9", epoch: "3" }
    expect(
      rolesLine([node("redis1", "master"), node("redis2", "replica"), node("redis3", "replica", { master: stale })])
    ).toMatch(/^master: redis1 127\.0\.0\.1:7001 \(epoch 12\)/)
  })

  it("the menu lists every action", () => {
    for (const words of ["kill -9 the master's Redis", "restart", "SIGSTOP", "SIGCONT", "stop (SIGTERM", "/disable", "/enable", "quit"]) {
      expect(MENU).toContain(words)
    }
  })
})
