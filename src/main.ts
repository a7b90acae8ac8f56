#!/usr/bin/env node
/**
 * The `dictator` executable: parse the command line and the config file (exit 2 with one clear
 * message when either is wrong), then run the node until SIGTERM/SIGINT.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Either, Layer, Option } from "effect"
import { readFileSync } from "node:fs"
import { isOperatorCommand, parseArgs, usage } from "./Cli.js"
import { DictatorConfig, localNodes, nodeConfig, parseConfig, resolveHttpSecrets, resolveRedisSecrets, resolveZkAuth } from "./Config.js"
import * as Http from "./Http.js"
import * as Log from "./Log.js"
import * as Node from "./Node.js"
import { HttpToken } from "./node/Failsafe.js"
import * as Redis from "./Redis.js"
import * as Sentinel from "./sentinel/Server.js"
import { VERSION } from "./Version.js"
import * as ZooKeeperClient from "./ZooKeeperClient.js"
import { zooKeeperOptions } from "./ZooKeeperConfig.js"

const fail = (message: string): never => {
  process.stderr.write(`dictator: ${message}\n`)
  process.exit(2)
}

const argv = process.argv.slice(2)
// `dictator list|switchover|pause|resume|status …`: the operator's CLI (Operator.ts), not the daemon.
// Loaded only then: the daemon does not pay for the CLI's modules.
if (isOperatorCommand(argv)) {
  void import("./Operator.js").then((Operator) => Operator.main(argv))
} else {
  runDaemon(argv)
}

function runDaemon(argv: ReadonlyArray<string>): void {
  const command = parseArgs(argv)
  if (Either.isLeft(command)) fail(command.left)
  const cmd = Either.getOrThrow(command)
  if (cmd._tag === "Help") {
    process.stdout.write(usage)
    process.exit(0)
  }
  if (cmd._tag === "Version") {
    process.stdout.write(`dictator ${VERSION}\n`)
    process.exit(0)
  }

  let text = ""
  try {
    text = readFileSync(cmd.config, "utf8")
  } catch (e) {
    fail(`cannot read configuration file ${cmd.config}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; pass an existing file with --config=PATH`)
  }
  const loaded = parseConfig(cmd.config, text)
  if (Either.isLeft(loaded)) fail(loaded.left.message)
  const { config, warnings } = Either.getOrThrow(loaded)
  // Read now, once: a password or certificate that cannot be read stops the start (exit 2).
  const redisSecrets = resolveRedisSecrets(cmd.config, config, { env: process.env, readFile: (p) => readFileSync(p, "utf8") })
  if (Either.isLeft(redisSecrets)) fail(redisSecrets.left.message)
  const secretSources = { env: process.env, readFile: (p: string) => readFileSync(p, "utf8") }
  const zkAuth = resolveZkAuth(cmd.config, config, secretSources)
  if (Either.isLeft(zkAuth)) fail(zkAuth.left.message)
  const httpSecrets = resolveHttpSecrets(cmd.config, config, secretSources)
  if (Either.isLeft(httpSecrets)) fail(httpSecrets.left.message)
  const zkCredentials = Option.getOrUndefined(Either.getOrThrow(zkAuth))
  const { token: httpToken, tls: httpTls } = Either.getOrThrow(httpSecrets)

  const listener: Http.ListenerOptions = {
    host: config.http_host,
    port: config.http_port,
    guard: { token: httpToken, legacyGet: config.http_legacy_get },
    ...(Option.isSome(httpTls) ? { tls: httpTls.value } : {})
  }

  const zooKeeper = ZooKeeperClient.layer(zooKeeperOptions(config, zkCredentials))

  const redis = Redis.layerWith(Either.getOrThrow(redisSecrets))

  // The token of http_token_file also goes out with this node's own calls to the other dictators (failsafe).
  const peerToken = Option.match(httpToken, { onNone: () => Layer.empty, onSome: (t) => Layer.succeed(HttpToken, t) })

  const node = Node.layer.pipe(
    Layer.provide(Layer.mergeAll(DictatorConfig.layerValue(config, cmd.config), zooKeeper, redis, peerToken))
  )

  /**
   * `nodes: [...]`: one node per entry, each with the config as the single form would give it,
   * all on the same ZooKeeper client (one session) and Redis layer; log lines name the node.
   */
  const manyNodes = () =>
    Http.layerMany(
      listener,
      localNodes(config).map((local) => ({
        service: local.service,
        name: local.node.name,
        // Fresh: layers are shared by reference within one build, and each entry is its own node.
        layer: Layer.fresh(Node.layer).pipe(
          Layer.provide(DictatorConfig.layerValue(nodeConfig(config, local), cmd.config)),
          Layer.annotateLogs({ service: local.service, node: local.node.name })
        )
      })),
      Layer.mergeAll(zooKeeper, redis)
    )

  /** The first line of sentinel_password_file: the password never sits in the JSON file. */
  const readSentinelPassword = (file: string): string => {
    let content = ""
    try {
      content = readFileSync(file, "utf8")
    } catch (e) {
      fail(`cannot read sentinel_password_file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; point it at a readable file holding the password`)
    }
    const password = content.split(/\r?\n/)[0] ?? ""
    if (password === "") fail(`sentinel_password_file ${file} is empty: write the password on its first line`)
    return password
  }

  const sentinelHost = config.sentinel_host ?? config.http_host
  const withSentinel =
    config.sentinel_port === undefined
      ? node
      : Sentinel.layer(
          {
            host: sentinelHost,
            port: config.sentinel_port,
            password: config.sentinel_password_file === undefined ? null : readSentinelPassword(config.sentinel_password_file),
            service: config.svc_name,
            checkIntervalMs: config.check_interval_ms,
            downAfterMs: config.down_after_ms,
            // As long as a master waits before fencing itself: past it, nothing this node knows is vouched for.
            staleAfterMs: config.fence_after_ms
          },
          node
        )

  const program = Effect.gen(function* () {
    for (const w of warnings) yield* Effect.logWarning(w)
    if (config.failsafe && Option.isNone(httpToken)) {
      yield* Effect.logWarning(
        "failsafe is on without http_token_file: POST /failsafe then answers only loopback, so members on other hosts cannot vouch for a master and it fences as without failsafe; give every node the same http_token_file"
      )
    }
    if (config.http_legacy_get) {
      yield* Effect.logWarning(
        `http_legacy_get is on: GET /enable and /disable work${Option.isNone(httpToken) ? " from any address, without a token" : ""}; any web page a browser on the network opens can send one`
      )
    }
    return yield* Layer.launch(config.nodes === undefined ? Http.layer(listener, withSentinel) : manyNodes())
  }).pipe(
    Effect.tapErrorTag("SentinelServeError", (e) => Effect.logFatal(e.message)),
    Effect.tapErrorTag("DuplicateNode", (e) => Effect.logFatal(e.message)),
    Effect.tapErrorTag("ServeError", (e) =>
      Effect.logFatal(`cannot serve HTTP on ${config.http_host}:${config.http_port} (${String(e.cause)}); free the port or change http_port`)
    ),
    Effect.provide(Log.layer({ format: config.log_format, level: cmd.logLevel ?? config.log_level }))
  )

  // Errors are logged above; runMain then exits 1 after the finalizers (znodes, connections) ran.
  NodeRuntime.runMain(program, { disablePrettyLogger: true, disableErrorReporting: true })
}
