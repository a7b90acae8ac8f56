/**
 * The deployable files in examples/: the systemd unit passes `systemd-analyze verify` (Debian's
 * `systemd`, installed by test/run.sh) and keeps the settings README promises.
 */
import { spawnSync } from "node:child_process"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "@effect/vitest"

const here = path.dirname(fileURLToPath(import.meta.url))
const UNIT = readFileSync(path.join(here, "..", "examples", "dictator.service"), "utf8")
const EXEC = "/usr/local/bin/dictator"

const analyze = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" })
const haveAnalyze = analyze.error === undefined && analyze.status === 0
// CI installs systemd (test/run.sh): there a missing systemd-analyze is a failure, not a skip.
const mustRun = process.env.CI === "true" || process.env.CI === "1"
if (!haveAnalyze && !mustRun) {
  console.warn("examples.test.ts: systemd-analyze not installed: skipping the systemd-analyze verify test (apt-get install systemd)")
}

/** `Key=value` lines of a section, last one wins (as systemd reads them). */
const directives = (unit: string, section: string): Map<string, string> => {
  const out = new Map<string, string>()
  let current = ""
  for (const raw of unit.split("\n")) {
    const line = raw.trim()
    if (line.startsWith("#") || line === "") continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header) current = header[1]!
    else if (current === section) {
      const i = line.indexOf("=")
      out.set(line.slice(0, i), line.slice(i + 1))
    }
  }
  return out
}

const seconds = (v: string): number => {
  const m = /^(\d+)(s|min)?$/.exec(v)
  if (m === null) throw new Error(`not a duration: ${v}`)
  return Number(m[1]) * (m[2] === "min" ? 60 : 1)
}

describe("examples/dictator.service", () => {
  const service = directives(UNIT, "Service")

  it("restarts on failure after a delay, but not on a bad config (exit 2)", () => {
    expect(service.get("Restart")).toBe("on-failure")
    expect(seconds(service.get("RestartSec") ?? "0")).toBeGreaterThanOrEqual(1)
    expect(service.get("RestartPreventExitStatus")).toBe("2")
  })

  it("gives SIGTERM more time than the longest handover (2 × 60 s + 2 s)", () => {
    expect(service.get("KillSignal") ?? "SIGTERM").toBe("SIGTERM")
    expect(seconds(service.get("TimeoutStopSec") ?? "0")).toBeGreaterThan(2 * 60 + 2)
  })

  it("runs as the unprivileged user dictator with the default config path", () => {
    expect(service.get("User")).toBe("dictator")
    expect(service.get("ExecStart")).toBe(`${EXEC} --config=/etc/dictator/dictator.conf`)
    expect(service.get("NoNewPrivileges")).toBe("yes")
    expect(service.get("CapabilityBoundingSet")).toBe("")
    // Node's JIT needs writable executable memory.
    expect(service.has("MemoryDenyWriteExecute")).toBe(false)
  })

  describe.skipIf(!haveAnalyze && !mustRun)("systemd-analyze verify", () => {
    let made: string | undefined
    const tempDir = () => (made ??= mkdtempSync(path.join(os.tmpdir(), "dictator-unit-")))
    afterAll(() => {
      if (made !== undefined) rmSync(made, { recursive: true, force: true })
    })

    /**
     * Verifies `unit` as dictator.service; verify also wants ExecStart's binary to exist, so it
     * points at an executable stand-in. Returns every line it printed: warnings keep exit code 0.
     */
    const verify = (unit: string, name: string) => {
      const dir = tempDir()
      const bin = path.join(dir, "dictator")
      writeFileSync(bin, "#!/bin/sh\n")
      chmodSync(bin, 0o755)
      expect(unit).toContain(`ExecStart=${EXEC} `)
      const file = path.join(dir, name)
      writeFileSync(file, unit.replace(`ExecStart=${EXEC} `, `ExecStart=${bin} `))
      const r = spawnSync("systemd-analyze", ["verify", file], { encoding: "utf8", cwd: dir, timeout: 60_000 })
      if (r.error !== undefined) throw new Error(`systemd-analyze: ${r.error.message} (apt-get install systemd)`)
      return { status: r.status, lines: `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.includes(name)) }
    }

    it("passes without a warning", () => {
      expect(verify(UNIT, "dictator.service")).toEqual({ status: 0, lines: [] })
    }, 60_000)

    it("would catch a misspelt directive (the check can fail)", () => {
      const r = verify(UNIT.replace("\nRestart=on-failure", "\nRestrt=on-failure"), "typo.service")
      expect(r.lines.join("\n")).toContain("Unknown key 'Restrt'")
    }, 60_000)
  })
})
