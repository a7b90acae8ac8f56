import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import type { Command } from "../src/Cli.js"
import type { LogLevelName } from "../src/Config.js"
import { DEFAULT_CONFIG, parseArgs, usage } from "../src/Cli.js"

const run = (config: string, logLevel: LogLevelName | null = null): Command => ({
  _tag: "Run",
  config,
  logLevel
})

describe("parseArgs", () => {
  it("defaults to /etc/dictator/dictator.conf", () => {
    expect(DEFAULT_CONFIG).toBe("/etc/dictator/dictator.conf")
    expect(parseArgs([])).toEqual(Either.right(run("/etc/dictator/dictator.conf")))
  })

  const valid: ReadonlyArray<{ readonly name: string; readonly argv: ReadonlyArray<string>; readonly command: Command }> = [
    { name: "--config=PATH", argv: ["--config=/srv/d.conf"], command: run("/srv/d.conf") },
    { name: "--config PATH", argv: ["--config", "/srv/d.conf"], command: run("/srv/d.conf") },
    { name: "-config=PATH (Go style)", argv: ["-config=/srv/d.conf"], command: run("/srv/d.conf") },
    { name: "-config PATH (Go style)", argv: ["-config", "/srv/d.conf"], command: run("/srv/d.conf") },
    { name: "a relative path", argv: ["--config=conf/dictator.json"], command: run("conf/dictator.json") },
    { name: "a path with = in it", argv: ["--config=/srv/a=b.conf"], command: run("/srv/a=b.conf") },
    { name: "a path with spaces", argv: ["--config", "/srv/my dir/d.conf"], command: run("/srv/my dir/d.conf") },
    { name: "the last --config wins", argv: ["--config=/a.conf", "--config=/b.conf"], command: run("/b.conf") },
    { name: "--log-level=debug is normalised", argv: ["--log-level=debug"], command: run(DEFAULT_CONFIG, "DEBUG") },
    { name: "--log-level INFO", argv: ["--log-level", "INFO"], command: run(DEFAULT_CONFIG, "INFO") },
    { name: "--log-level=warning is WARN", argv: ["--log-level=warning"], command: run(DEFAULT_CONFIG, "WARN") },
    { name: "--log-level=Error", argv: ["--log-level=Error"], command: run(DEFAULT_CONFIG, "ERROR") },
    { name: "--log-level=fatal", argv: ["--log-level=fatal"], command: run(DEFAULT_CONFIG, "FATAL") },
    { name: "-log-level=debug (Go style)", argv: ["-log-level=debug"], command: run(DEFAULT_CONFIG, "DEBUG") },
    {
      name: "--config and --log-level together, either order",
      argv: ["--log-level", "error", "--config", "/x.conf"],
      command: run("/x.conf", "ERROR")
    },
    { name: "--config=PATH --log-level=info", argv: ["--config=/x.conf", "--log-level=info"], command: run("/x.conf", "INFO") },
    { name: "--help", argv: ["--help"], command: { _tag: "Help" } },
    { name: "-help", argv: ["-help"], command: { _tag: "Help" } },
    { name: "-h", argv: ["-h"], command: { _tag: "Help" } },
    { name: "--help after other options", argv: ["--config=/x.conf", "--help"], command: { _tag: "Help" } },
    { name: "--version", argv: ["--version"], command: { _tag: "Version" } },
    { name: "-version", argv: ["-version"], command: { _tag: "Version" } },
    { name: "--version after --log-level", argv: ["--log-level=info", "--version"], command: { _tag: "Version" } }
  ]

  it.each(valid)("$name", ({ argv, command }) => {
    expect(parseArgs(argv)).toEqual(Either.right(command))
  })

  const invalid: ReadonlyArray<{ readonly name: string; readonly argv: ReadonlyArray<string>; readonly error: string }> = [
    {
      name: "bad level",
      argv: ["--log-level=loud"],
      error: `--log-level "loud" must be one of DEBUG, INFO, WARN, ERROR, FATAL`
    },
    {
      name: "bad level as a separate value",
      argv: ["--log-level", "trace"],
      error: `--log-level "trace" must be one of DEBUG, INFO, WARN, ERROR, FATAL`
    },
    { name: "empty level", argv: ["--log-level="], error: `--log-level "" must be one of DEBUG, INFO, WARN, ERROR, FATAL` },
    { name: "unknown option", argv: ["--port=6379"], error: `unknown option "--port=6379"; see --help` },
    { name: "unknown single-dash option", argv: ["-v"], error: `unknown option "-v"; see --help` },
    { name: "unknown option after a good one", argv: ["--config=/x", "--verbose"], error: `unknown option "--verbose"; see --help` },
    { name: "a positional argument", argv: ["dictator.conf"], error: `unexpected argument "dictator.conf"; see --help` },
    { name: "an upper-case option", argv: ["--CONFIG=/x"], error: `unexpected argument "--CONFIG=/x"; see --help` },
    { name: "a bare dash", argv: ["-"], error: `unexpected argument "-"; see --help` },
    { name: "missing value at the end", argv: ["--config"], error: "--config needs a value, e.g. --config=..." },
    {
      name: "missing value before another option",
      argv: ["--config", "--log-level=info"],
      error: "--config needs a value, e.g. --config=..."
    },
    { name: "missing level at the end", argv: ["--log-level"], error: "--log-level needs a value, e.g. --log-level=..." },
    {
      name: "empty path",
      argv: ["--config="],
      error: "--config needs a file path, e.g. --config=/etc/dictator/dictator.conf"
    },
    {
      name: "an error before --help is reported",
      argv: ["--bogus", "--help"],
      error: `unknown option "--bogus"; see --help`
    }
  ]

  it.each(invalid)("rejects $name", ({ argv, error }) => {
    expect(parseArgs(argv)).toEqual(Either.left(error))
  })

  it("documents every option it accepts in the usage text", () => {
    for (const option of ["--config=PATH", "--log-level=LEVEL", "--version", "--help", DEFAULT_CONFIG]) {
      expect(usage).toContain(option)
    }
  })
})
