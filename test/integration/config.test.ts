/**
 * Issue 2, command line and config file, on the built binary (`npm run build` first):
 * `--version` and `--help` exit 0; a missing, unparsable or invalid config file is one message
 * on stderr and exit code 2; unknown keys are a warning; the original (seed) format runs.
 */
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, type Scope } from "effect"
import {
  dictator,
  freePort,
  httpRequest,
  readMaster,
  redisServer,
  repoRoot,
  waitUntil,
  zooKeeper
} from "../support/servers.js"

const MAIN = process.env.DICTATOR_MAIN ?? path.join(repoRoot(), "dist", "src", "main.js")
const VERSION = (JSON.parse(readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as { version: string }).version

const childEnv = () => {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  return env
}

interface Finished {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the binary to completion (≤ 30 s, then SIGKILL). */
const runBin = (args: ReadonlyArray<string>, command: { readonly file: string; readonly env?: Record<string, string> } = { file: process.execPath }): Effect.Effect<Finished> =>
  Effect.async<Finished>((resume) => {
    const argv = command.file === process.execPath ? [MAIN, ...args] : args
    const child = spawn(command.file, argv, { env: { ...childEnv(), ...command.env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

/** A temp dir for config files, removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "dictator-config-test-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

const writeConfig = (dir: string, name: string, text: string) =>
  Effect.promise(async () => {
    const file = path.join(dir, name)
    await fs.writeFile(file, text)
    return file
  })

/** Exit code 2 and exactly one line on stderr, without a stack trace; nothing on stdout. */
const expectOneMessage = (r: Finished): string => {
  expect(r.code, `exit code (stderr: ${r.stderr})`).toBe(2)
  expect(r.stdout).toBe("")
  const lines = r.stderr.split("\n").filter((l) => l.trim().length > 0)
  expect(lines, r.stderr).toHaveLength(1)
  expect(r.stderr).not.toMatch(/^\s*at /m)
  expect(r.stderr).not.toMatch(/Error:|\bFiberFailure\b|node:internal/)
  return lines[0]!
}

/**
 * The dictator run from a config file this test wrote, as a scoped process (SIGTERM, then
 * SIGKILL after 10 s, when the scope closes); its stdout + stderr collected.
 */
const runDaemon = (configFile: string): Effect.Effect<{ readonly output: () => string; readonly exited: () => boolean }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [MAIN, `--config=${configFile}`], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let exited = false
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
      child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d))
      const closed = new Promise<void>((resolve) =>
        child.on("exit", () => {
          exited = true
          resolve()
        })
      )
      return { child, closed, output: () => out, exited: () => exited }
    }),
    ({ child, closed }) =>
      Effect.promise(async () => {
        if (child.exitCode !== null || child.signalCode !== null) return
        child.kill("SIGTERM")
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
        await closed
        clearTimeout(timer)
      })
  )

describe("command line", () => {
  it.live("--version prints the package version and exits 0", () =>
    Effect.gen(function* () {
      const r = yield* runBin(["--version"])
      expect(r).toEqual({ code: 0, stdout: `dictator ${VERSION}\n`, stderr: "" })
    })
  )

  it.live("the package's `dictator` bin runs the bundle with the V8 flags of bin/node-options; DICTATOR_NODE_OPTIONS replaces them", () =>
    Effect.gen(function* () {
      const bin = { file: path.join(repoRoot(), "bin", "dictator") }
      expect(yield* runBin(["--version"], bin)).toEqual({ code: 0, stdout: `dictator ${VERSION}\n`, stderr: "" })
      // The flags reach node: one it refuses fails the start, and the default set is what node sees.
      const bogus = yield* runBin(["--version"], { ...bin, env: { DICTATOR_NODE_OPTIONS: "--no-such-v8-flag-here" } })
      expect(bogus.code).not.toBe(0)
      expect(bogus.stderr).toContain("--no-such-v8-flag-here")
    })
  )

  it.scopedLive("the `dictator` bin's daemon is node with the flags of bin/node-options (its /proc cmdline)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const port = yield* freePort
      // ZooKeeper nowhere: the daemon keeps retrying, long enough to be looked at.
      const file = yield* writeConfig(dir, "dictator.conf", JSON.stringify({ svc_name: "bin-flags", zk_hosts: ["127.0.0.1:1"], http_port: port, node: { name: "a", port: 1 } }))
      const child = spawn(path.join(repoRoot(), "bin", "dictator"), [`--config=${file}`], { env: childEnv(), stdio: "ignore" })
      yield* Effect.addFinalizer(() => Effect.sync(() => void child.kill("SIGKILL")))
      const flags = readFileSync(path.join(repoRoot(), "bin", "node-options"), "utf8").trim().split(/\s+/)
      // The shell execs node in place: same pid, node's command line once the exec happened.
      const cmdline = yield* waitUntil(
        "the bin to exec node",
        Effect.sync(() => {
          const argv = readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0")
          return argv.some((a) => a.endsWith("dictator.cjs")) ? Option.some(argv) : Option.none()
        })
      )
      expect(path.basename(cmdline[0] ?? "")).toBe("node")
      expect(cmdline.slice(1, 1 + flags.length)).toEqual(flags)
      expect(cmdline).toContain(`--config=${file}`)
    })
  )

  it.live("--help prints the usage and exits 0", () =>
    Effect.gen(function* () {
      const r = yield* runBin(["--help"])
      expect(r.code).toBe(0)
      expect(r.stderr).toBe("")
      expect(r.stdout).toMatch(/^Usage: dictator/)
      for (const option of ["--config=PATH", "--log-level", "--version", "--help"]) expect(r.stdout).toContain(option)
    })
  )

  it.live("an unknown option or a bad --log-level: one message, exit 2", () =>
    Effect.gen(function* () {
      expect(expectOneMessage(yield* runBin(["--frobnicate"]))).toContain('"--frobnicate"')
      const level = expectOneMessage(yield* runBin(["--config=/nonexistent.conf", "--log-level=LOUD"]))
      expect(level).toContain('"LOUD"')
      expect(level).toContain("DEBUG, INFO, WARN, ERROR, FATAL")
    })
  )
})

describe("bad config files: one message naming the file (and the key, the value, what is allowed), exit 2", () => {
  it.scopedLive("a missing file", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "missing.conf")
      const line = expectOneMessage(yield* runBin([`--config=${file}`]))
      expect(line).toContain(file)
      expect(line).toMatch(/ENOENT|cannot read/)
    })
  )

  it.scopedLive("a file that is not JSON", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = yield* writeConfig(dir, "broken.conf", '{ "svc_name": "default", "zk_hosts": ["127.0.0.1"\n')
      const line = expectOneMessage(yield* runBin([`--config=${file}`]))
      expect(line).toContain(file)
      expect(line).toContain("not valid JSON")
    })
  )

  it.scopedLive("a file that is not JSON: the line and column of the fault", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = yield* writeConfig(dir, "comma.conf", '{\n  "svc_name": "default"\n  "zk_hosts": ["127.0.0.1"]\n}\n')
      const line = expectOneMessage(yield* runBin([`--config=${file}`]))
      expect(line).toContain(`${file}: not valid JSON at line 3, column 3`)
      expect(line).not.toContain("position")
    })
  )

  it.scopedLive("a typo'd key: did you mean …?", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = yield* writeConfig(
        dir,
        "typo.conf",
        JSON.stringify({ svc_name: "default", zk_host: ["zk1:2181"], node: { prioirty: 0 } }, null, 2)
      )
      const line = expectOneMessage(yield* runBin([`--config=${file}`]))
      expect(line).toBe(
        `dictator: invalid configuration ${file}: unknown key "zk_host": did you mean "zk_hosts"?; unknown key "node.prioirty": did you mean "node.priority"?`
      )
    })
  )

  const badValues: ReadonlyArray<{
    readonly what: string
    readonly config: Record<string, unknown>
    readonly key: string
    readonly value: string
    readonly allowed: string
  }> = [
    { what: "http_port 70000", config: { http_port: 70000 }, key: "http_port", value: "70000", allowed: "between 1 and 65535" },
    { what: 'node.port "x"', config: { node: { port: "x" } }, key: "node.port", value: '"x"', allowed: "between 1 and 65535" },
    {
      what: 'log_level "LOUD"',
      config: { log_level: "LOUD" },
      key: "log_level",
      value: '"LOUD"',
      allowed: "DEBUG, INFO, WARN, ERROR, FATAL"
    },
    { what: "zk_hosts []", config: { zk_hosts: [] }, key: "zk_hosts", value: "[]", allowed: "non-empty array" },
    { what: 'svc_name "a/b"', config: { svc_name: "a/b" }, key: "svc_name", value: '"a/b"', allowed: "letters, digits" }
  ]
  for (const c of badValues) {
    it.scopedLive(`a bad value: ${c.what}`, () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = yield* writeConfig(
          dir,
          "dictator.conf",
          JSON.stringify({ svc_name: "default", zk_hosts: ["127.0.0.1"], ...c.config }, null, 2)
        )
        const line = expectOneMessage(yield* runBin([`--config=${file}`]))
        expect(line).toContain(file)
        expect(line).toContain(`"${c.key}"`)
        expect(line).toContain(c.value)
        expect(line).toContain(c.allowed)
      })
    )
  }
})

describe("config files that run", () => {
  it.scopedLive("unknown keys are a warning in the log; the daemon runs", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const redis = yield* redisServer()
      const d = yield* dictator({
        name: "extra-keys",
        svc: "it-config-unknown",
        zkHosts: [zk.connectString],
        redisPort: redis.port,
        extra: { handover_timeout_ms: 0, colour: "blue" },
        node: { rack: "r1" }
      })
      yield* waitUntil(
        "the warnings in the log",
        Effect.sync(() => (/unknown key \\?"node\.rack/.test(d.output()) ? Option.some(true) : Option.none()))
      )
      expect(d.output()).toMatch(/level=WARN.*unknown key \\?"colour\\?" in .*dictator\.conf is ignored/)
      expect(d.output()).toMatch(/level=WARN.*unknown key \\?"node\.rack\\?" in .*dictator\.conf is ignored/)
      const m = yield* waitUntil("the dictator to become master", readMaster([zk.connectString], "it-config-unknown"))
      expect(m).toMatchObject({ name: "extra-keys", port: redis.port })
      expect(yield* d.running).toBe(true)
    })
  )

  it.scopedLive("the original (seed) config format is accepted", () =>
    Effect.gen(function* () {
      const zk = yield* zooKeeper({ tickTime: 2000 })
      const redis = yield* redisServer()
      const httpPort = yield* freePort
      const dir = yield* tempDir
      // The seed README's file, tabs and all, with a ZooKeeper "host:port" on a free port; plus
      // http_port (a key of the original too) and http_host so that the test listens on loopback
      // only and not on the original's default 0.0.0.0:8000.
      const file = yield* writeConfig(
        dir,
        "dictator.conf",
        `{
\t\t"svc_name" : "default",
\t\t"log_level" : "INFO",
\t\t"http_port" : ${httpPort},
\t\t"http_host" : "127.0.0.1",
\t\t"zk_hosts": ["${zk.connectString}"],
\t\t"node" : {
\t\t\t"name" : "local",
\t\t\t"host" : "127.0.0.1",
\t\t\t"port" : ${redis.port}
\t\t} 
\t}
`
      )
      const daemon = yield* runDaemon(file)
      yield* waitUntil(
        "/ping",
        Effect.map(httpRequest(httpPort, "/ping", "GET", 1000), (r) => (r.status === 200 ? Option.some(r) : Option.none()))
      )
      const m = yield* waitUntil("the seed-configured dictator to become master", readMaster([zk.connectString], "default"))
      expect(m).toMatchObject({ name: "local", host: "127.0.0.1", port: redis.port })
      const status = yield* waitUntil(
        "/status to say master",
        Effect.map(httpRequest(httpPort, "/status?format=json"), (r) => {
          const s = r.status === 200 ? (JSON.parse(r.body) as { role?: string }) : {}
          return s.role === "master" ? Option.some(s) : Option.none()
        })
      )
      expect(status).toMatchObject({ name: "local", service: "default", enabled: true })
      expect(daemon.exited()).toBe(false)
      expect(daemon.output()).toContain("node local (127.0.0.1:")
      expect(daemon.output()).not.toMatch(/unknown key|level=(ERROR|FATAL)/)
    })
  )
})
