/**
 * The operator's subcommands of the `dictator` bin, parsed by @effect/cli: `list`, `switchover`,
 * `pause`, `resume` (ZooKeeper directly, no daemon needed) and `status` (the local daemon's HTTP
 * API). Bad input or an unreachable server is one line on stderr and a non-zero exit.
 */
import { Args, Command, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Data, Duration, Effect, Either, Logger, LogLevel, Option, Schedule, type Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { readFileSync } from "node:fs"
import { request as httpsRequest } from "node:https"
import * as os from "node:os"
import { DEFAULT_CONFIG } from "./Cli.js"
import { type DictatorConfigData, parseConfig, resolveZkAuth } from "./Config.js"
import {
  encodeMaintenance,
  encodeSwitchoverRequest,
  parseMaintenance,
  parseMasterView,
  parseMember,
  parseSwitchoverRequest,
  parseSwitchoverResult,
  parseSwitchoverTime,
  type MemberRecord,
  type SwitchoverRequest,
  type SwitchoverResult
} from "./domain/Records.js"
import { serviceJson, type ServiceJson, type ServiceSnapshot, serviceTable } from "./OperatorView.js"
import { servicePaths } from "./Paths.js"
import { VERSION } from "./Version.js"
import type { ZooKeeperService } from "./ZooKeeper.js"
import * as ZooKeeperClient from "./ZooKeeperClient.js"
import { zooKeeperOptions } from "./ZooKeeperConfig.js"

/**
 * @effect/cli takes long options with two dashes only; the daemon always took Go's single-dash
 * forms too (`-config=PATH`). Rewrites `-name[=v]` (two letters or more) to `--name[=v]`;
 * anything after `--` is left alone.
 */
export const normaliseArgv = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const end = argv.indexOf("--")
  return argv.map((a, i) => ((end === -1 || i < end) && /^-[a-z][a-z0-9_-]+(=.*)?$/.test(a) ? `-${a}` : a))
}

export class OperatorError extends Data.TaggedError("OperatorError")<{ readonly message: string; readonly exitCode: number }> {}

const fail = (message: string, exitCode = 1) => Effect.fail(new OperatorError({ message, exitCode }))

// ---------------------------------------------------------------------------------------------
// Where ZooKeeper is

const zkOption = Options.text("zk").pipe(
  Options.withDescription("ZooKeeper hosts, comma-separated (host[:port], port 2181 by default); overrides the config's zk_hosts"),
  Options.optional
)
const configOption = Options.text("config").pipe(
  Options.withDescription(`the dictator's configuration file: its zk_* settings (default ${DEFAULT_CONFIG} when --zk is not given)`),
  Options.optional
)
const timeoutOption = Options.integer("timeout").pipe(
  Options.withDescription("seconds to wait for ZooKeeper (or the daemon) before giving up"),
  Options.withDefault(10)
)

const readConfig = (file: string) =>
  Effect.gen(function* () {
    const text = yield* Effect.try({
      try: () => readFileSync(file, "utf8"),
      catch: (e) =>
        new OperatorError({
          message: `cannot read configuration file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}; pass --config=PATH or --zk=HOSTS`,
          exitCode: 2
        })
    })
    const loaded = parseConfig(file, text)
    if (Either.isLeft(loaded)) return yield* fail(loaded.left.message, 2)
    return loaded.right.config
  })

/** The config's ZooKeeper settings (all of them: auth, chroot … flow through) with --zk's hosts over them. */
const zkSettings = (zk: Option.Option<string>, config: Option.Option<string>) =>
  Effect.gen(function* () {
    const hosts = Option.map(zk, (z) => z.split(",").map((h) => h.trim()).filter((h) => h !== ""))
    if (Option.isSome(hosts) && hosts.value.length === 0) return yield* fail(`--zk needs at least one host, e.g. --zk=127.0.0.1:2181`, 2)
    if (Option.isNone(config) && Option.isSome(hosts)) {
      const options: ZooKeeperClient.ZooKeeperOptions = { hosts: hosts.value, sessionTimeout: "10 seconds", connectTimeout: "2 seconds", requestTimeout: "5 seconds" }
      return options
    }
    const file = Option.getOrElse(config, () => DEFAULT_CONFIG)
    const data: DictatorConfigData = yield* readConfig(file)
    // zk_auth as the daemon reads it: the CLI's requests need the same ACL rights.
    const auth = resolveZkAuth(file, data, { env: process.env, readFile: (p) => readFileSync(p, "utf8") })
    if (Either.isLeft(auth)) return yield* fail(auth.left.message, 2)
    const options = zooKeeperOptions(data, Option.getOrUndefined(auth.right))
    return Option.isSome(hosts) ? { ...options, hosts: hosts.value } : options
  })

const connect = (zk: Option.Option<string>, config: Option.Option<string>, timeout: number) =>
  Effect.gen(function* () {
    if (timeout <= 0) return yield* fail(`--timeout must be a positive number of seconds, not ${timeout}`, 2)
    const options = yield* zkSettings(zk, config)
    return yield* ZooKeeperClient.make(options).pipe(
      // Given up on at the bound, not once the attempt in flight gives up itself.
      Effect.disconnect,
      Effect.timeoutFail({
        duration: Duration.seconds(timeout),
        onTimeout: () =>
          new OperatorError({
            message: `ZooKeeper ${ZooKeeperClient.connectionString(options.hosts)} unreachable within ${timeout}s; check --zk/zk_hosts and that the ensemble is up`,
            exitCode: 1
          })
      })
    )
  })

/** A ZooKeeper request that failed: one line naming the server's error. */
const zkFailure = (e: { readonly message: string }) => new OperatorError({ message: `ZooKeeper: ${e.message}`, exitCode: 1 })

// ---------------------------------------------------------------------------------------------
// Reading a service

const ROOT = "/services/redis"

const knownServices = (zk: ZooKeeperService) => Effect.mapError(zk.children(ROOT), zkFailure)

const requireService = (zk: ZooKeeperService, service: string) =>
  Effect.gen(function* () {
    if (service === "" || service.includes("/")) return yield* fail(`"${service}" is not a service name`, 2)
    const node = yield* Effect.mapError(zk.get(servicePaths(service).service), zkFailure)
    if (Option.isSome(node)) return
    const known = yield* knownServices(zk)
    return yield* fail(`unknown service "${service}" under ${ROOT} (known: ${known.join(", ") || "none"})`, 2)
  })

const text = (data: Uint8Array) => new TextDecoder().decode(data)

export const readService = (zk: ZooKeeperService, service: string) =>
  Effect.gen(function* () {
    const paths = servicePaths(service)
    const masterNode = yield* zk.get(paths.master)
    const epochNode = Option.isSome(masterNode) ? yield* zk.get(paths.epoch) : Option.none()
    const names = yield* zk.children(paths.members)
    const members: Array<MemberRecord> = []
    for (const name of names) {
      const node = yield* zk.get(paths.member(name))
      const record = Option.flatMap(node, (n) => parseMember(n.data))
      if (Option.isSome(record)) members.push(record.value)
    }
    const maintenance = Option.map(yield* zk.get(paths.maintenance), (n) =>
      Option.getOrElse(parseMaintenance(n.data), () => ({ malformed: text(n.data) }))
    )
    const switchover = Option.map(yield* zk.get(paths.switchover), (n) =>
      Option.getOrElse(parseSwitchoverRequest(n.data), () => ({ malformed: text(n.data) }))
    )
    const result = Option.flatMap(yield* zk.get(paths.switchoverResult), (n) => parseSwitchoverResult(n.data))
    return {
      service,
      master: parseMasterView(masterNode, epochNode),
      members,
      maintenance: Option.getOrNull(maintenance),
      switchover: Option.getOrNull(switchover),
      lastSwitchover: Option.getOrNull(result)
    } satisfies ServiceSnapshot
  }).pipe(Effect.mapError(zkFailure))

const snapshot = (zk: ZooKeeperService, services: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const names = services.length > 0 ? services : yield* knownServices(zk)
    for (const s of services) yield* requireService(zk, s)
    return yield* Effect.forEach(names, (s) => Effect.map(readService(zk, s), serviceJson))
  })

const render = (views: ReadonlyArray<ServiceJson>, json: boolean): string =>
  json
    ? JSON.stringify({ services: views }, null, 2)
    : views.length === 0
      ? `no service under ${ROOT}`
      : views.map(serviceTable).join("\n\n")

// ---------------------------------------------------------------------------------------------
// list

const list = Command.make(
  "list",
  {
    zk: zkOption,
    config: configOption,
    timeout: timeoutOption,
    json: Options.boolean("json").pipe(Options.withDescription("print JSON (schema in README \"Operating\")")),
    watch: Options.boolean("watch").pipe(Options.withDescription("redraw in place every --interval seconds until Ctrl-C")),
    interval: Options.float("interval").pipe(Options.withDescription("seconds between redraws with --watch (0.5 to 60)"), Options.withDefault(2)),
    services: Args.text({ name: "SERVICE" }).pipe(Args.repeated)
  },
  ({ config, interval, json, services, timeout, watch, zk }) =>
    Effect.gen(function* () {
      const option = services.find((s) => s.startsWith("-"))
      if (option !== undefined) return yield* fail(`unknown option "${option}"; see dictator list --help`, 2)
      if (!(interval >= 0.5 && interval <= 60)) return yield* fail(`--interval must be between 0.5 and 60 seconds, not ${interval}`, 2)
      const client = yield* connect(zk, config, timeout)
      if (!watch) return yield* Console.log(render(yield* snapshot(client, services), json))
      const draw = Effect.gen(function* () {
        const out = render(yield* snapshot(client, services), json)
        const at = new Date(yield* Clock.currentTimeMillis).toISOString()
        // Home, draw, clear what an older (longer) frame left below.
        process.stdout.write(`\x1b[H\x1b[2J${out}\n\n(${at}, every ${interval}s; Ctrl-C to quit)\n`)
      })
      return yield* Effect.repeat(draw, Schedule.spaced(Duration.seconds(interval)))
    })
).pipe(Command.withDescription("one table per service (every service under /services/redis when none is named)"))

// ---------------------------------------------------------------------------------------------
// switchover

const who = () => {
  try {
    return `${os.userInfo().username}@${os.hostname()}`
  } catch {
    return `unknown@${os.hostname()}`
  }
}

/** Why the CLI refuses `to` from what it can see (the master checks again, and the data). */
export const refuseTarget = (view: ServiceJson, to: string, maxLag: number): string | null => {
  const m = view.members.find((x) => x.name === to)
  if (m === undefined) return `${to} is not a member of service ${view.service} (members: ${view.members.map((x) => x.name).join(", ") || "none"})`
  if (m.elected) return `${to} is already the master`
  if (m.priority === 0) return `${to} has priority 0 (never master)`
  if (!m.healthy) return `${to} is not healthy`
  if (!m.link_up) return `${to} is behind: its replication link to the master is down`
  if (m.lag_bytes !== null && m.lag_bytes > maxLag) return `${to} is behind: ${m.lag_bytes} bytes behind the master (more than --max-lag ${maxLag})`
  return null
}

const waitForResult = (zk: ZooKeeperService, service: string, id: string, within: number) =>
  zk.watchData(servicePaths(service).switchoverResult).pipe(
    Stream.map(Option.flatMap((n) => parseSwitchoverResult(n.data))),
    Stream.filterMap(Option.filter((r: SwitchoverResult) => r.id === id)),
    Stream.runHead,
    Effect.timeout(Duration.seconds(within)),
    Effect.catchAll(() => Effect.succeedNone)
  )

const switchover = Command.make(
  "switchover",
  {
    zk: zkOption,
    config: configOption,
    timeout: timeoutOption,
    to: Options.text("to").pipe(Options.withDescription("the member to hand over to (default: the freshest caught-up replica)"), Options.optional),
    at: Options.text("at").pipe(Options.withDescription("ISO time to switch over at (e.g. 2026-12-02T03:00:00Z); now when absent"), Options.optional),
    force: Options.boolean("force").pipe(Options.withDescription("skip the CLI's own checks of the target (the master still never hands over to a lagging replica)")),
    maxLag: Options.integer("max-lag").pipe(Options.withDescription("bytes a named target may be behind in its published record"), Options.withDefault(16 * 1024 * 1024)),
    wait: Options.integer("wait").pipe(Options.withDescription("seconds to wait for the master's answer"), Options.withDefault(60)),
    service: Args.text({ name: "SERVICE" })
  },
  ({ at, config, force, maxLag, service, timeout, to, wait, zk }) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const when = Option.isSome(at) ? parseSwitchoverTime(at.value, now) : Either.right(null)
      if (Either.isLeft(when)) return yield* fail(when.left, 2)
      if (wait <= 0) return yield* fail(`--wait must be a positive number of seconds, not ${wait}`, 2)
      const client = yield* connect(zk, config, timeout)
      yield* requireService(client, service)
      const view = serviceJson(yield* readService(client, service))
      if (view.master === null) return yield* fail(`service ${service} has no master: nothing to switch over from`)
      if (view.maintenance) return yield* fail(`service ${service} is in maintenance mode (dictator pause): resume it first`)
      if (view.switchover_pending !== null) {
        return yield* fail(`a switchover of ${service} is already pending (request ${view.switchover_pending.id} by ${view.switchover_pending.by}${view.switchover_pending.at === null ? "" : `, at ${view.switchover_pending.at}`})`)
      }
      const target = Option.getOrNull(to)
      if (target !== null && !force) {
        const reason = refuseTarget(view, target, maxLag)
        if (reason !== null) return yield* fail(`switchover of ${service} refused: ${reason}`)
      }
      if (target === null && !force && !view.members.some((m) => !m.elected && m.healthy && m.priority > 0)) {
        return yield* fail(`switchover of ${service} refused: no healthy replica to switch over to`)
      }
      const request: SwitchoverRequest = {
        id: randomUUID(),
        to: target,
        at: when.right === null ? null : new Date(when.right).toISOString(),
        requested_at: new Date(now).toISOString(),
        by: who()
      }
      const paths = servicePaths(service)
      yield* client.ensurePath(paths.control).pipe(Effect.mapError(zkFailure))
      yield* client.create(paths.switchover, encodeSwitchoverRequest(request), "persistent").pipe(
        Effect.catchTag("ZkNodeExists", () => fail(`a switchover of ${service} is already pending; see dictator list ${service}`)),
        Effect.catchTag("ZkNoNode", (e) => Effect.fail(zkFailure(e))),
        Effect.mapError((e) => (e._tag === "OperatorError" ? e : zkFailure(e)))
      )
      if (request.at !== null) {
        return yield* Console.log(`switchover of ${service} from ${view.master.name}${target === null ? "" : ` to ${target}`} scheduled at ${request.at} (request ${request.id}); see dictator list ${service}`)
      }
      const started = yield* Clock.currentTimeMillis
      const result = yield* waitForResult(client, service, request.id, wait)
      if (Option.isNone(result)) {
        // Withdrawn unless the master took it meanwhile: never left to fire later, unexpected.
        const left = yield* client.get(paths.switchover).pipe(Effect.orElseSucceed(() => Option.none()))
        if (Option.isSome(left) && Option.exists(parseSwitchoverRequest(left.value.data), (r) => r.id === request.id)) {
          yield* client.remove(paths.switchover, left.value.stat.version).pipe(Effect.ignore)
        }
        return yield* fail(`no answer from the master's dictator (${view.master.name}) within ${wait}s; the request was withdrawn. Is it running and at version ${VERSION} or later?`)
      }
      const took = (yield* Clock.currentTimeMillis) - started
      const r = result.value
      if (!r.ok) return yield* fail(`switchover of ${service} refused by ${r.from}: ${r.message}`)
      yield* Console.log(`switchover of ${service} done in ${took} ms: ${r.from} -> ${r.to ?? "?"} (${r.message})`)
    })
).pipe(Command.withDescription("planned switchover: the master's dictator hands over to a caught-up replica, losing no acknowledged write"))

// ---------------------------------------------------------------------------------------------
// pause / resume

const pause = Command.make(
  "pause",
  { zk: zkOption, config: configOption, timeout: timeoutOption, service: Args.text({ name: "SERVICE" }) },
  ({ config, service, timeout, zk }) =>
    Effect.gen(function* () {
      const client = yield* connect(zk, config, timeout)
      yield* requireService(client, service)
      const paths = servicePaths(service)
      const record = { since: new Date(yield* Clock.currentTimeMillis).toISOString(), by: who() }
      yield* client.ensurePath(paths.control).pipe(Effect.mapError(zkFailure))
      const created = yield* client.create(paths.maintenance, encodeMaintenance(record), "persistent").pipe(
        Effect.as(true),
        Effect.catchTag("ZkNodeExists", () => Effect.succeed(false)),
        Effect.mapError(zkFailure)
      )
      if (!created) {
        const existing = yield* client.get(paths.maintenance).pipe(Effect.mapError(zkFailure))
        const since = Option.flatMap(existing, (n) => parseMaintenance(n.data))
        return yield* Console.log(
          `service ${service} is already in maintenance mode${Option.match(since, { onNone: () => "", onSome: (m) => ` (since ${m.since} by ${m.by})` })}`
        )
      }
      yield* Console.log(`service ${service} paused: no automatic failover until dictator resume ${service}`)
    })
).pipe(Command.withDescription("maintenance mode: no automatic failover (the master keeps its role, replicas keep following)"))

const resume = Command.make(
  "resume",
  { zk: zkOption, config: configOption, timeout: timeoutOption, service: Args.text({ name: "SERVICE" }) },
  ({ config, service, timeout, zk }) =>
    Effect.gen(function* () {
      const client = yield* connect(zk, config, timeout)
      yield* requireService(client, service)
      const removed = yield* client.remove(servicePaths(service).maintenance, -1).pipe(
        Effect.as(true),
        Effect.catchTag("ZkNoNode", () => Effect.succeed(false)),
        Effect.mapError(zkFailure)
      )
      yield* Console.log(removed ? `service ${service} resumed: automatic failover is back` : `service ${service} was not paused`)
    })
).pipe(Command.withDescription("ends maintenance mode"))

// ---------------------------------------------------------------------------------------------
// status

/**
 * GET over HTTPS from the local daemon (http_tls), certificate not verified: its certificate is
 * issued for the names other hosts use, not for loopback, and this read sends no credential
 * (GET /status is open) to a listener of this very host.
 */
const httpsGet = (url: string, signal: AbortSignal): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const req = httpsRequest(url, { rejectUnauthorized: false, signal }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        if (body.length < 1_000_000) body += chunk
      })
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end()
  })

const status = Command.make(
  "status",
  {
    config: configOption,
    timeout: timeoutOption,
    json: Options.boolean("json").pipe(Options.withDescription("print the daemon's JSON status"))
  },
  ({ config, json, timeout }) =>
    Effect.gen(function* () {
      const data = yield* readConfig(Option.getOrElse(config, () => DEFAULT_CONFIG))
      const host = data.http_host === "0.0.0.0" ? "127.0.0.1" : data.http_host === "::" ? "::1" : data.http_host
      const tls = data.http_tls
      const url = `${tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${data.http_port}/status${json ? "?format=json" : ""}`
      const response = yield* Effect.tryPromise({
        try: (signal) =>
          tls === undefined
            ? fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeout * 1000)]) }).then(async (r) => ({ status: r.status, body: await r.text() }))
            : httpsGet(url, AbortSignal.any([signal, AbortSignal.timeout(timeout * 1000)])),
        catch: (e) => new OperatorError({ message: `the dictator at ${url} is unreachable (${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}); is it running?`, exitCode: 1 })
      })
      if (response.status !== 200) return yield* fail(`the dictator at ${url} answered ${response.status}: ${response.body.trim()}`)
      process.stdout.write(response.body.endsWith("\n") ? response.body : `${response.body}\n`)
    })
).pipe(Command.withDescription("the local daemon's status, from its HTTP API (GET /status)"))

// ---------------------------------------------------------------------------------------------
// The command and its runner

export const command = Command.make("dictator").pipe(
  Command.withDescription("Redis Dictator: without a subcommand, runs the daemon (dictator --config=PATH; see dictator --help)"),
  Command.withSubcommands([list, switchover, pause, resume, status])
)

const cli = Command.run(command, { name: "dictator", version: VERSION })

/** Runs a subcommand; resolves with the exit code (the message already printed). */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<number, never, Scope.Scope> =>
  cli(["node", "dictator", ...normaliseArgv(argv)]).pipe(
    Effect.as(0),
    Effect.catchAll((e) =>
      ValidationError.isValidationError(e)
        ? Effect.succeed(2) // @effect/cli printed the problem and the usage
        : Effect.as(Effect.sync(() => process.stderr.write(`dictator: ${e.message}\n`)), e.exitCode)
    ),
    Effect.catchAllDefect((d) => Effect.as(Effect.sync(() => process.stderr.write(`dictator: unexpected error: ${String(d)}\n`)), 1)),
    Effect.provide(NodeContext.layer),
    Effect.provide(Logger.minimumLogLevel(LogLevel.None))
  )

export const main = (argv: ReadonlyArray<string>): void => {
  let code = 0
  NodeRuntime.runMain(
    Effect.scoped(Effect.map(run(argv), (c) => void (code = c))),
    { disablePrettyLogger: true, disableErrorReporting: true, teardown: (_exit, onExit) => onExit(code) }
  )
}
