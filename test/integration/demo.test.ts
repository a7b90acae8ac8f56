/**
 * `npm run demo` without a terminal (CI, a pipe): it prints the roles line in words, writes the
 * dictators' logs to the files it names, keeps running, and stops everything on SIGTERM with
 * exit code 0. Runs the built demo (`npm run build` first).
 */
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { repoRoot, waitUntil } from "../support/servers.js"

const DEMO = path.join(repoRoot(), "dist", "examples", "demo.js")

describe("the demo, non-interactive", () => {
  it.scopedLive("prints the roles in words, writes logs, stops cleanly on SIGTERM", () =>
    Effect.gen(function* () {
      const logDir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(path.join(os.tmpdir(), "dictator-demo-test-"))),
        (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
      )
      const env: NodeJS.ProcessEnv = { ...process.env, DEMO_LOG_DIR: logDir }
      delete env.NODE_OPTIONS
      let out = ""
      let exit: number | null | undefined
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => {
          // stdin not a TTY: no key reading, no raw mode.
          const c = spawn(process.execPath, [DEMO], { env, stdio: ["ignore", "pipe", "pipe"] })
          c.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
          c.stderr.setEncoding("utf8").on("data", (d: string) => (out += d))
          c.on("exit", (code) => (exit = code))
          return c
        }),
        (c) => Effect.sync(() => (exit === undefined ? c.kill("SIGKILL") : undefined))
      )
      const line = yield* waitUntil(
        "the roles line with a master and two replicas",
        Effect.sync(() => Option.fromNullable(/master: redis\d 127\.0\.0\.1:\d+ \(epoch \d+\) · replicas: redis\d, redis\d$/m.exec(out)?.[0])),
        { timeout: "90 seconds", interval: "200 millis" }
      ).pipe(Effect.mapError((e) => new Error(`${e.message}\n--- demo output ---\n${out}`)))
      expect(line).not.toContain("{")
      expect(out).toContain("No terminal")
      expect(out).toContain(`log ${path.join(logDir, "redis1.log")}`)

      child.kill("SIGTERM")
      const code = yield* waitUntil("the demo to exit", Effect.sync(() => (exit === undefined ? Option.none() : Option.some(exit))), {
        timeout: "60 seconds"
      })
      expect(code, out).toBe(0)
      expect(out).toContain("All stopped.")
      for (const name of ["redis1", "redis2", "redis3"]) {
        const file = path.join(logDir, `${name}.log`)
        expect(existsSync(file)).toBe(true)
        expect(readFileSync(file, "utf8")).toMatch(/^timestamp=\S+ level=INFO message=/m)
      }
    })
  )
})
