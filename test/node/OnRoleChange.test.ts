import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { HOOK_OUTPUT_LIMIT, hookArgs, hookEnv, runHook } from "../../src/node/OnRoleChange.js"
import type { RoleChange } from "../../src/node/RoleEvents.js"
import { clientsToClose } from "../../src/Redis.js"

const change: RoleChange = {
  role: "replica",
  service: "orders",
  node: "redis2",
  master: { name: "redis1", host: "10.0.0.1", port: 6380 },
  epoch: "4294967301",
  cause: "following",
  at: 0
}

describe("the on_role_change hook", () => {
  it("gets role, service, node, master host, port and epoch as its last arguments and in DICTATOR_* variables", () => {
    expect(hookArgs(["/bin/hook", "--quiet"], change)).toEqual(["/bin/hook", "--quiet", "replica", "orders", "redis2", "10.0.0.1", "6380", "4294967301"])
    expect(hookEnv(change)).toMatchObject({
      DICTATOR_ROLE: "replica",
      DICTATOR_SERVICE: "orders",
      DICTATOR_NODE: "redis2",
      DICTATOR_MASTER_NAME: "redis1",
      DICTATOR_MASTER_HOST: "10.0.0.1",
      DICTATOR_MASTER_PORT: "6380",
      DICTATOR_EPOCH: "4294967301"
    })
  })

  it.live("runs without a shell: exit code and output are reported", () =>
    Effect.gen(function* () {
      const ok = yield* runHook(["node", "-e", "console.log(process.argv.slice(1).join(','), process.env.DICTATOR_ROLE)", "a b", "$HOME"], { DICTATOR_ROLE: "master" }, 10000)
      expect(ok).toMatchObject({ outcome: "ok", detail: "exit 0", output: "a b,$HOME master\n" })
      const failed = yield* runHook(["node", "-e", "process.exit(3)"], {}, 10000)
      expect(failed).toMatchObject({ outcome: "failed", detail: "exit 3" })
      const missing = yield* runHook(["/nonexistent/hook"], {}, 10000)
      expect(missing.outcome).toBe("error")
      expect(missing.detail).toContain("ENOENT")
    })
  )

  it.live("keeps at most HOOK_OUTPUT_LIMIT characters of output", () =>
    Effect.gen(function* () {
      const r = yield* runHook(["node", "-e", `process.stdout.write("x".repeat(${HOOK_OUTPUT_LIMIT * 4}))`], {}, 10000)
      expect(r.outcome).toBe("ok")
      expect(r.output.length).toBeLessThanOrEqual(HOOK_OUTPUT_LIMIT + 20)
      expect(r.output.endsWith("(truncated)")).toBe(true)
    })
  )

  it.live("a hook past its timeout is killed with the processes it started", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(path.join(tmpdir(), "hook-"))
      const marker = path.join(dir, "late")
      // The child it spawns would write the marker after 1.5 s, if it were not killed with the group.
      const script = `require("child_process").spawn("sh", ["-c", "sleep 1.5; echo late > ${marker}"], { stdio: "inherit" }); setTimeout(() => {}, 30000)`
      const r = yield* runHook(["node", "-e", script], {}, 300)
      expect(r).toMatchObject({ outcome: "timeout", detail: "killed after 300 ms" })
      expect(r.ms).toBeLessThan(5000)
      yield* Effect.sleep("2 seconds")
      expect(existsSync(marker)).toBe(false)
      rmSync(dir, { recursive: true, force: true })
    })
  )

  it.live("interrupting a running hook kills it", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(path.join(tmpdir(), "hook-"))
      const marker = path.join(dir, "late")
      const fiber = yield* Effect.fork(runHook(["sh", "-c", `sleep 1; echo late > ${marker}`], {}, 30000))
      yield* Effect.sleep("200 millis")
      yield* Fiber.interrupt(fiber)
      yield* Effect.sleep("1500 millis")
      expect(existsSync(marker) ? readFileSync(marker, "utf8") : "").toBe("")
      rmSync(dir, { recursive: true, force: true })
    })
  )
})

describe("clients closed on a role change", () => {
  const list = [
    "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=dictator age=9 idle=0 flags=N db=0 user=default cmd=info",
    "id=4 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=9 name= age=9 idle=0 flags=N db=0 user=default cmd=set",
    "id=5 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=10 name=app age=9 idle=0 flags=P db=0 user=app cmd=subscribe",
    "id=6 addr=10.0.0.2:5003 laddr=127.0.0.1:6379 fd=11 name= age=9 idle=0 flags=N db=0 user=dictator cmd=ping",
    ""
  ].join("\n")

  it("closes the applications' connections, never the dictators' (named dictator, or its ACL user)", () => {
    expect(clientsToClose(list, undefined)).toEqual(["4", "5", "6"])
    expect(clientsToClose(list, "dictator")).toEqual(["4", "5"])
    // `default` is everyone's user without ACLs: not a way to tell the dictator apart.
    expect(clientsToClose(list, "default")).toEqual(["4", "5", "6"])
    expect(clientsToClose("garbage\nid=x name=y", undefined)).toEqual([])
  })
})
