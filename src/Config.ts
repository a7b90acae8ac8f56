/**
 * The configuration file: the original program's JSON format (DESIGN.md §4), decoded with a
 * Schema. Every key past the original ones is optional with a default chosen for fast, safe
 * failover on a LAN.
 */
import { FileSystem } from "@effect/platform"
import { Context, Data, Effect, Either, Layer, Option, ParseResult, Redacted, Schema } from "effect"
import type { RedisClientOptions } from "./Redis.js"

/** A message that also replaces the base type's ("Expected number, actual ..."): one wording per key. */
const msg = (message: string) => ({ message, override: true })

export const LogLevelName = Schema.transform(
  Schema.String,
  Schema.Literal("DEBUG", "INFO", "WARN", "ERROR", "FATAL"),
  {
    strict: false,
    // The original accepted any case and "WARNING"; we keep accepting both.
    decode: (s) => {
      const up = s.trim().toUpperCase()
      return up === "WARNING" ? "WARN" : up
    },
    encode: (s) => s
  }
).annotations({ identifier: "LogLevel", message: () => msg("must be one of DEBUG, INFO, WARN, ERROR, FATAL") })
export type LogLevelName = typeof LogLevelName.Type

const Port = Schema.Int.pipe(Schema.between(1, 65535)).annotations({
  message: () => msg("must be an integer port between 1 and 65535")
})

const Millis = (min: number, max: number) =>
  Schema.Int.pipe(Schema.between(min, max)).annotations({
    message: () => msg(`must be an integer number of milliseconds between ${min} and ${max}`)
  })

const NonEmptyTrimmed = Schema.NonEmptyTrimmedString.annotations({
  message: () => msg("must be a non-empty string without surrounding spaces")
})

/** Service and node names become znode names: keep them to what a znode and a log line take. */
const ZnodeName = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/)).annotations({
  message: () => msg("must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
})

// node-zookeeper-client splits every server on ":", so IPv6 literals cannot be given: a name
// that resolves to the address works.
const ZkHost = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_.-]+(:\d{1,5})?$/)).annotations({
  message: () => msg('must be "host" or "host:port"')
})

export const NodeConfig = Schema.Struct({
  name: Schema.optionalWith(ZnodeName, { default: () => "local" }),
  host: Schema.optionalWith(NonEmptyTrimmed, { default: () => "localhost" }),
  port: Schema.optionalWith(Port, { default: () => 6379 }),
  /** Seconds to wait for the local Redis to be up and done LOADING before taking part. */
  loading_timeout: Schema.optionalWith(
    Schema.Number.pipe(Schema.between(0, 86400)).annotations({
      message: () => msg("must be a number of seconds between 0 and 86400")
    }),
    { default: () => 30 }
  ),
  /** As Redis's replica-priority: lower is preferred, 0 never becomes master. */
  priority: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(0, 1000000)).annotations({
      message: () => msg("must be an integer between 0 (never master) and 1000000")
    }),
    { default: () => 100 }
  )
})

/** A file path given in the config: read once at start (see resolveRedisClientOptions). */
const FilePath = Schema.NonEmptyTrimmedString.annotations({
  message: () => msg("must be a non-empty file path without surrounding spaces")
})

const EnvVarName = Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/)).annotations({
  message: () => msg("must be the name of an environment variable (letters, digits and '_', not starting with a digit)")
})

/**
 * Credentials for every Redis connection (local, peers, handover) and for replication
 * (masteruser / masterauth). The password itself never sits in the JSON: a config file is
 * usually world-readable and copied around, a secret file or variable is not.
 */
export const RedisAuthConfig = Schema.Struct({
  /** An ACL user (Redis 6+); without it the password is the `default` user's (requirepass). */
  username: Schema.optional(
    Schema.String.pipe(Schema.pattern(/^[^\s<>]{1,128}$/)).annotations({
      message: () => msg("must be an ACL user name: 1-128 characters without spaces, '<' or '>'")
    })
  ),
  password_file: Schema.optional(FilePath),
  password_env: Schema.optional(EnvVarName),
  password: Schema.optional(
    Schema.Never.annotations({
      message: () =>
        msg('is not accepted inside the config: put the password in a file ("password_file") or an environment variable ("password_env")')
    })
  )
}).pipe(
  Schema.filter((a) =>
    (a.password_file === undefined) === (a.password_env === undefined)
      ? 'needs exactly one of "password_file" or "password_env"'
      : undefined
  )
)
export type RedisAuthConfig = typeof RedisAuthConfig.Type

/** TLS to every Redis; the files are read once at start. Mapped to ioredis's `tls` (node:tls) options. */
export const RedisTlsConfig = Schema.Struct({
  /** CA bundle that signed the servers' certificates (default: Node's built-in roots). */
  ca_file: Schema.optional(FilePath),
  /** Client certificate and key, for servers with `tls-auth-clients yes` (or optional). */
  cert_file: Schema.optional(FilePath),
  key_file: Schema.optional(FilePath),
  /** Name checked against the servers' certificates (default: the host connected to). */
  server_name: Schema.optional(NonEmptyTrimmed),
  reject_unauthorized: Schema.optionalWith(
    Schema.Boolean.annotations({ message: () => msg("must be true or false") }),
    { default: () => true }
  )
}).pipe(
  Schema.filter((t) =>
    (t.cert_file === undefined) !== (t.key_file === undefined)
      ? '"cert_file" and "key_file" go together: give both or neither'
      : undefined
  )
)
export type RedisTlsConfig = typeof RedisTlsConfig.Type

/**
 * ZooKeeper digest authentication: every session adds `user:password`, and every znode the
 * dictator creates gets `creator all` + `world read` (clients can still read the master). The
 * secret never sits in the JSON: a file holding `user:password`, or a user name and a variable.
 */
export const ZkAuthConfig = Schema.Struct({
  scheme: Schema.optionalWith(
    Schema.Literal("digest").annotations({ message: () => msg('must be "digest" (the only scheme the dictator speaks)') }),
    { default: () => "digest" as const }
  ),
  /** A file whose content is `user:password` (one trailing newline is ignored). */
  credentials_file: Schema.optional(FilePath),
  /** With `password_env`: the digest user name. */
  username: Schema.optional(
    Schema.String.pipe(Schema.pattern(/^[^\s:]{1,128}$/)).annotations({
      message: () => msg("must be a digest user name: 1-128 characters without spaces or ':'")
    })
  ),
  /** An environment variable holding the password of `username`. */
  password_env: Schema.optional(EnvVarName),
  password: Schema.optional(
    Schema.Never.annotations({
      message: () =>
        msg('is not accepted inside the config: put "user:password" in a file ("credentials_file") or the password in an environment variable ("username" + "password_env")')
    })
  )
}).pipe(
  Schema.filter((a) =>
    a.credentials_file !== undefined
      ? a.username !== undefined || a.password_env !== undefined
        ? 'give either "credentials_file" or "username" + "password_env", not both'
        : undefined
      : a.username === undefined || a.password_env === undefined
        ? 'needs "credentials_file" (a file holding user:password) or both "username" and "password_env"'
        : undefined
  )
)
export type ZkAuthConfig = typeof ZkAuthConfig.Type

/** A ZooKeeper path prefix, as connection strings allow: `/teams/payments`. */
const ZkChroot = Schema.String.pipe(Schema.pattern(/^(\/[A-Za-z0-9_.-]+)+$/)).annotations({
  message: () => msg('must be a znode path like "/teams/payments": starting with "/", no trailing "/", segments of letters, digits, \'.\', \'_\' or \'-\'')
})

/** HTTPS for the API: PEM certificate (chain) and key, read once at start. */
export const HttpTlsConfig = Schema.Struct({
  cert_file: FilePath,
  key_file: FilePath
})
export type HttpTlsConfig = typeof HttpTlsConfig.Type

export const DictatorConfigSchema = Schema.Struct({
  svc_name: Schema.optionalWith(ZnodeName, { default: () => "default" }),
  log_level: Schema.optionalWith(LogLevelName, { default: () => "INFO" as const }),
  log_format: Schema.optionalWith(
    Schema.Literal("logfmt", "json").annotations({ message: () => msg('must be "logfmt" or "json"') }),
    { default: () => "logfmt" as const }
  ),
  http_port: Schema.optionalWith(Port, { default: () => 8000 }),
  /** The original listened on every interface. */
  http_host: Schema.optionalWith(NonEmptyTrimmed, { default: () => "0.0.0.0" }),
  zk_hosts: Schema.optionalWith(
    Schema.NonEmptyArray(ZkHost).annotations({
      message: () => msg('must be a non-empty array of "host" or "host:port" (host names or IPv4 addresses: the ZooKeeper client cannot take IPv6 literals)')
    }),
    { default: () => ["localhost:2181"] as const }
  ),
  /** Requested ZooKeeper session timeout; the server clamps it to [2, 20] × its tickTime. */
  zk_session_timeout_ms: Schema.optionalWith(Millis(1000, 120000), { default: () => 6000 }),
  zk_connect_timeout_ms: Schema.optionalWith(Millis(100, 60000), { default: () => 3000 }),
  /** Interval of the health checks of the local Redis and, on replicas, of the master's Redis. */
  check_interval_ms: Schema.optionalWith(Millis(10, 10000), { default: () => 100 }),
  /** Timeout of one PING / INFO of a health check. */
  check_timeout_ms: Schema.optionalWith(Millis(10, 10000), { default: () => 250 }),
  /** A Redis that answers nothing (timeouts) for this long is down; a refused connection is down at once. */
  down_after_ms: Schema.optionalWith(Millis(100, 600000), { default: () => 1000 }),
  /** Delay per rank between candidates of an election: the best tries at once. */
  election_step_ms: Schema.optionalWith(Millis(0, 10000), { default: () => 150 }),
  /** A master disconnected from ZooKeeper this long pauses writes (before its session can expire). */
  fence_after_ms: Schema.optionalWith(Millis(0, 60000), { default: () => 1000 }),
  /** Longest wait of a graceful handover for a replica to catch up. */
  handover_timeout_ms: Schema.optionalWith(Millis(0, 60000), { default: () => 3000 }),
  /**
   * `min-replicas-to-write` set on the master while it has at least that many linked replicas:
   * an old master cut off from its replicas stops acknowledging writes. 0 disables it.
   */
  min_replicas_to_write: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(0, 100)).annotations({ message: () => msg("must be an integer between 0 and 100") }),
    { default: () => 1 }
  ),
  /** `min-replicas-max-lag` in seconds, with min_replicas_to_write. */
  min_replicas_max_lag: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(1, 3600)).annotations({ message: () => msg("must be an integer number of seconds between 1 and 3600") }),
    { default: () => 2 }
  ),
  /**
   * Bytes a candidate may be behind the last master offset recorded in ZooKeeper (the old
   * master's member record) and still be elected; a Redis that came back empty (offset 0) while
   * the master had data is never elected either. -1 lifts both (any reachable Redis may win).
   */
  max_lag_on_failover: Schema.optionalWith(
    Schema.Int.pipe(Schema.greaterThanOrEqualTo(-1)).annotations({
      message: () => msg("must be a number of bytes (0 or more), or -1 to elect whatever Redis is left, even an empty one")
    }),
    { default: () => 1048576 }
  ),
  /**
   * Votes of the other members needed to depose a master whose Redis they cannot reach; by
   * default a majority of the other members of the largest membership seen.
   */
  quorum: Schema.optionalWith(
    Schema.NullOr(Schema.Int.pipe(Schema.between(1, 100))).annotations({
      message: () => msg("must be an integer between 1 and 100, or null for a majority of the other members")
    }),
    { default: () => null }
  ),
  /**
   * Failsafe mode: a master that loses ZooKeeper keeps taking writes while every other member
   * answers (POST /failsafe) that it cannot reach ZooKeeper either and still follows it. Off by
   * default: it trades the write pause of a ZooKeeper outage for a dependency on every member's
   * dictator answering, over the network, within a fraction of fence_after_ms.
   */
  failsafe: Schema.optionalWith(Schema.Boolean.annotations({ message: () => msg("must be true or false") }), {
    default: () => false
  }),
  /** Port of the Sentinel-compatible discovery endpoint (RESP); none unless set. */
  sentinel_port: Schema.optional(Port),
  /** Address it listens on; http_host when unset. */
  sentinel_host: Schema.optional(NonEmptyTrimmed),
  /** A file holding the password clients must AUTH with (the first line); no AUTH unless set. */
  sentinel_password_file: Schema.optional(NonEmptyTrimmed),
  /**
   * Close the local Redis's normal and pub/sub client connections each time it changes role, once
   * every discovery path names the new master (as Sentinel does): clients rediscover at once.
   */
  kill_clients_on_role_change: Schema.optionalWith(
    Schema.Boolean.annotations({ message: () => msg("must be true or false") }),
    { default: () => true }
  ),
  /**
   * The address of the local Redis handed to others (master and member records, Sentinel answers,
   * the replicas' REPLICAOF) when it differs from node.host / node.port (containers, NAT). The
   * dictator itself still reaches its Redis at node.host:node.port.
   */
  announce_host: Schema.optional(NonEmptyTrimmed),
  announce_port: Schema.optional(Port),
  /**
   * A command (argv, run without a shell) run each time the local Redis changes role, with the
   * role, service, node, master host, master port and epoch as its last arguments and DICTATOR_*
   * environment variables; killed after on_role_change_timeout_ms. None unless set.
   */
  on_role_change: Schema.optional(
    Schema.NonEmptyArray(Schema.String.pipe(Schema.minLength(1))).annotations({
      message: () => msg('must be a non-empty array of non-empty strings: the program and its first arguments, e.g. ["/usr/local/bin/on-role", "--quiet"]')
    })
  ),
  on_role_change_timeout_ms: Schema.optionalWith(Millis(100, 600000), { default: () => 10000 }),
  /** Redis AUTH / ACL user for every connection and for replication; absent: no AUTH. */
  redis_auth: Schema.optional(RedisAuthConfig),
  /** TLS to every Redis; absent: plain TCP. */
  redis_tls: Schema.optional(RedisTlsConfig),
  /** ZooKeeper digest auth and ACLs on every created znode; absent: open ACLs, as the original. */
  zk_auth: Schema.optional(ZkAuthConfig),
  /** Path prefix under which /services/redis/... lives (several teams on one ensemble); none unless set. */
  zk_chroot: Schema.optional(ZkChroot),
  /** A file holding the bearer token the mutating HTTP endpoints demand; without it they answer loopback only. */
  http_token_file: Schema.optional(FilePath),
  /** The original's GET /enable and /disable (unsafe: any web page a browser opens can send one). */
  http_legacy_get: Schema.optionalWith(
    Schema.Boolean.annotations({ message: () => msg("must be true or false") }),
    { default: () => false }
  ),
  /** Serve the HTTP API over TLS (HTTPS); absent: plain HTTP. */
  http_tls: Schema.optional(HttpTlsConfig),
  node: Schema.optionalWith(
    NodeConfig,
    { default: () => Schema.decodeSync(NodeConfig)({}) }
  ),
  /**
   * Several local nodes in one process (instead of `node`): each entry is a `node` plus the
   * `service` it belongs to (svc_name when absent). One ZooKeeper session and one HTTP listener
   * serve them all; at most one node per service.
   */
  nodes: Schema.optional(
    Schema.Array(Schema.Struct({ ...NodeConfig.fields, service: Schema.optional(ZnodeName) })).pipe(
      Schema.minItems(1, { message: () => "must list at least one node object" })
    )
  )
})

export type DictatorConfigData = typeof DictatorConfigSchema.Type

/** The local Redis's address as handed to others: announce_host / announce_port over node.host / node.port. */
export const announcedAddress = (config: Pick<DictatorConfigData, "announce_host" | "announce_port" | "node">): { readonly host: string; readonly port: number } => ({
  host: config.announce_host ?? config.node.host,
  port: config.announce_port ?? config.node.port
})

export const knownKeys: ReadonlyArray<string> = Object.keys(DictatorConfigSchema.fields)
export const knownNodeKeys: ReadonlyArray<string> = Object.keys(NodeConfig.fields)
/** The keys of one entry of `nodes`: a node's, and its service. */
export const knownNodesEntryKeys: ReadonlyArray<string> = [...knownNodeKeys, "service"]

/** One local node of the process and its service: `node` + `svc_name`, or one entry of `nodes`. */
export interface LocalNode {
  readonly service: string
  readonly node: DictatorConfigData["node"]
}

/** The local nodes this process runs: the entries of `nodes`, or the single `node` of `svc_name`. */
export const localNodes = (config: DictatorConfigData): ReadonlyArray<LocalNode> =>
  config.nodes === undefined
    ? [{ service: config.svc_name, node: config.node }]
    : config.nodes.map(({ service, ...node }) => ({ service: service ?? config.svc_name, node }))

/**
 * The configuration as one node of `nodes` sees it: the shared keys, with `svc_name` and `node`
 * set to the entry's (so the node's services read exactly what the single form gives them).
 */
export const nodeConfig = (config: DictatorConfigData, local: LocalNode): DictatorConfigData => {
  const { nodes: _nodes, ...shared } = config
  return { ...shared, svc_name: local.service, node: local.node }
}

export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly file: string
  readonly detail: string
}> {
  override get message() {
    return `invalid configuration ${this.file}: ${this.detail}`
  }
}

export interface LoadedConfig {
  readonly file: string
  readonly config: DictatorConfigData
  readonly warnings: ReadonlyArray<string>
}

const describeValue = (v: unknown): string => {
  const s = JSON.stringify(v)
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s
}

const valueAt = (root: unknown, path: ReadonlyArray<PropertyKey>): unknown =>
  path.reduce<unknown>((v, k) => (v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[k] : undefined), root)

/**
 * Optimal-string-alignment distance (Damerau-Levenshtein without repeated edits of a substring):
 * a swapped pair of letters (`prioirty`) counts as one edit, as a person typing makes it.
 */
export const editDistance = (a: string, b: string): number => {
  const d: Array<Array<number>> = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0))
  )
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1)
      d[i]![j] = best
    }
  }
  return d[a.length]![b.length]!
}

/**
 * The known key an unknown one was probably meant to be, or undefined. Case and `-` for `_` are
 * not counted, nor a missing `_ms`; then up to 2 edits, only 1 for keys of 4 letters or fewer
 * (`rack` is not `name`). The nearest wins (`http_prot` is `http_port`, not `http_host`).
 */
export const closestKey = (unknown: string, known: ReadonlyArray<string>): string | undefined => {
  const norm = (k: string) => k.toLowerCase().replace(/-/g, "_")
  let best: { key: string; distance: number } | undefined
  for (const key of known) {
    // Leaving the unit off (`fence_after`) is the commonest slip with the *_ms keys.
    const distance = norm(unknown) + "_ms" === norm(key) ? 1 : editDistance(norm(unknown), norm(key))
    const allowed = Math.min(unknown.length, key.length) <= 4 ? 1 : 2
    if (distance <= allowed && (best === undefined || distance < best.distance)) best = { key, distance }
  }
  return best?.key
}

/**
 * Line and column (both from 1) of a JSON.parse error, from the position V8 reports (Node 20:
 * "at position N"; later versions add "(line L column C)"), or the end of the text when it names
 * none ("Unexpected end of JSON input").
 */
export const jsonErrorLocation = (text: string, message: string): { line: number; column: number; what: string } => {
  const at = /\s+at position (\d+)/.exec(message)
  const offset = at === null ? text.length : Math.min(Number(at[1]), text.length)
  const before = text.slice(0, offset)
  const line = before.split("\n").length
  const column = offset - (before.lastIndexOf("\n") + 1) + 1
  const what = message.replace(/\s+at position \d+/, "").replace(/\s*\(line \d+ column \d+\)/, "").trim()
  return { line, column, what }
}

/** Decodes the text of a config file: one error message naming key, value and what is allowed. */
export const parseConfig = (file: string, text: string): Either.Either<LoadedConfig, ConfigError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    const { line, column, what } = jsonErrorLocation(text, (e as Error).message)
    return Either.left(
      new ConfigError({ file, detail: `not valid JSON at line ${line}, column ${column} (${what}); fix the syntax of the file` })
    )
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    return Either.left(new ConfigError({ file, detail: "the file must hold one JSON object like {\"svc_name\": \"default\", ...}" }))
  }
  // A typo'd key would otherwise leave its default in force (zk_host: the daemon would connect to
  // localhost:2181): near-misses are errors, anything else (a note, another tool's key) a warning.
  const warnings: Array<string> = []
  const typos: Array<string> = []
  const unknownKey = (shown: string, key: string, known: ReadonlyArray<string>, prefix: string) => {
    const close = closestKey(key, known)
    if (close !== undefined) typos.push(`unknown key "${shown}": did you mean "${prefix}${close}"?`)
    else warnings.push(`unknown key "${shown}" in ${file} is ignored`)
  }
  for (const key of Object.keys(json)) {
    if (knownKeys.includes(key)) continue
    // A node key written at the top level (`"priority": 0`) is a mistake with the same effect.
    if (knownNodeKeys.includes(key)) typos.push(`unknown key "${key}": did you mean "node.${key}"?`)
    else unknownKey(key, key, knownKeys, "")
  }
  const node = (json as Record<string, unknown>)["node"]
  if (node !== null && typeof node === "object" && !Array.isArray(node)) {
    for (const key of Object.keys(node)) {
      if (!knownNodeKeys.includes(key)) unknownKey(`node.${key}`, key, knownNodeKeys, "node.")
    }
  }
  const nodes = (json as Record<string, unknown>)["nodes"]
  if (Array.isArray(nodes)) {
    nodes.forEach((entry, i) => {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) return
      for (const key of Object.keys(entry)) {
        if (!knownNodesEntryKeys.includes(key)) unknownKey(`nodes.${i}.${key}`, key, knownNodesEntryKeys, `nodes.${i}.`)
      }
    })
  }
  if (node !== undefined && nodes !== undefined) {
    typos.push('keys "node" and "nodes" together: use "node" (with svc_name) for one local node, or list every local node in "nodes"')
  }
  if (typos.length > 0) return Either.left(new ConfigError({ file, detail: typos.join("; ") }))
  const decoded = Schema.decodeUnknownEither(DictatorConfigSchema, { onExcessProperty: "ignore", errors: "all" })(json)
  if (Either.isLeft(decoded)) {
    // An optional key is `T | undefined` on the input side: drop the "undefined" branch's noise.
    const issues = ParseResult.ArrayFormatter.formatErrorSync(decoded.left).filter(
      (issue) => !issue.message.startsWith("Expected undefined")
    )
    const lines = [...new Set(issues.map((issue) => {
      const key = issue.path.map(String).join(".") || "(top level)"
      const value = valueAt(json, issue.path)
      const shown = issue._tag === "Missing" ? "missing" : describeValue(value)
      const what = issue.message.startsWith("Expected Struct") ? "must be a JSON object" : issue.message
      return `key "${key}" = ${shown}: ${what}`
    }))]
    return Either.left(new ConfigError({ file, detail: lines.join("; ") }))
  }
  const config = decoded.right
  if (config.check_timeout_ms > config.down_after_ms) {
    return Either.left(
      new ConfigError({
        file,
        detail: `key "check_timeout_ms" = ${config.check_timeout_ms}: must not exceed down_after_ms (${config.down_after_ms})`
      })
    )
  }
  if (config.nodes !== undefined) {
    const seen = new Set<string>()
    for (const [i, local] of localNodes(config).entries()) {
      // The master znode's owner is a session: two nodes of one service on one session could not
      // tell which of them is master.
      if (seen.has(local.service)) {
        return Either.left(
          new ConfigError({
            file,
            detail: `key "nodes.${i}.service" = ${JSON.stringify(local.service)}: another entry of "nodes" already belongs to that service; one process runs at most one node per service`
          })
        )
      }
      seen.add(local.service)
    }
    if (config.sentinel_port !== undefined) {
      return Either.left(
        new ConfigError({
          file,
          detail: 'key "sentinel_port" with "nodes": the Sentinel-compatible endpoint serves the single "node" form only; remove sentinel_port or run one process per node'
        })
      )
    }
    if (config.failsafe) {
      return Either.left(
        new ConfigError({
          file,
          detail: 'key "failsafe" with "nodes": failsafe mode asks peers at the single form\'s API paths only; remove failsafe or run one process per node'
        })
      )
    }
  }
  return Either.right({ file, config, warnings })
}

export class DictatorConfig extends Context.Tag("dictator/Config")<DictatorConfig, LoadedConfig>() {
  /** Reads and decodes the file; a missing or unreadable file is a ConfigError too. */
  static load = (file: string) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const text = yield* fs.readFileString(file).pipe(
        Effect.mapError(
          (e) =>
            new ConfigError({
              file,
              detail: `cannot read the file (${e.message}); pass an existing file with --config=PATH`
            })
        )
      )
      return yield* parseConfig(file, text)
    })

  static layer = (file: string) => Layer.effect(DictatorConfig, DictatorConfig.load(file))

  static layerValue = (config: DictatorConfigData, file = "(test)") =>
    Layer.succeed(DictatorConfig, { file, config, warnings: [] })

  /** Defaults merged with `overrides`, decoded through the same Schema (for tests and the demo). */
  static fromObject = (overrides: Record<string, unknown>): DictatorConfigData =>
    Schema.decodeUnknownSync(DictatorConfigSchema)(overrides)
}

// ---------------------------------------------------------------------------------------------
// Secrets and certificates named by the config, read once at start

/** What the Redis layer takes: its client options, read from the files and variables named here. */
export type RedisSecrets = RedisClientOptions

/** The longest secret or PEM file read: a config pointing at a huge file is a mistake, not a key. */
const MAX_SECRET_FILE_BYTES = 1024 * 1024

export interface SecretSources {
  readonly env: Readonly<Record<string, string | undefined>>
  /** Reads a whole file as UTF-8; throws (ENOENT, EACCES …) like fs.readFileSync. */
  readonly readFile: (path: string) => string
}

/**
 * Reads the password (file or environment variable) and the TLS files of `redis_auth` and
 * `redis_tls`. Anything missing, unreadable or empty is a ConfigError naming the key, the path
 * or variable, and how to fix it: the dictator must not start with credentials it cannot use.
 */
/** Reads one file named by `key`; a ConfigError naming key, path and fix when it cannot. */
const readNamedFile = (
  file: string,
  sources: SecretSources,
  key: string,
  path: string
): Either.Either<string, ConfigError> => {
  let text: string
  try {
    text = sources.readFile(path)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message
    return Either.left(new ConfigError({ file, detail: `key "${key}" = ${JSON.stringify(path)}: cannot read the file (${code}); give a readable file` }))
  }
  if (text.length > MAX_SECRET_FILE_BYTES) {
    return Either.left(new ConfigError({ file, detail: `key "${key}" = ${JSON.stringify(path)}: the file is larger than 1 MiB; give the right file` }))
  }
  return Either.right(text)
}

/**
 * A secret from a file (one trailing newline dropped: `echo pw > file` leaves it) or from an
 * environment variable; empty is an error. Shared by redis_auth, zk_auth and http_token_file.
 */
export const readSecret = (
  file: string,
  sources: SecretSources,
  from: { readonly _tag: "File"; readonly key: string; readonly path: string } | { readonly _tag: "Env"; readonly key: string; readonly name: string }
): Either.Either<string, ConfigError> => {
  if (from._tag === "File") {
    const text = readNamedFile(file, sources, from.key, from.path)
    if (Either.isLeft(text)) return text
    const secret = text.right.replace(/\r?\n$/, "")
    return secret === ""
      ? Either.left(new ConfigError({ file, detail: `key "${from.key}" = ${JSON.stringify(from.path)}: the file is empty; write the secret into it` }))
      : Either.right(secret)
  }
  const value = sources.env[from.name]
  return value === undefined || value === ""
    ? Either.left(
        new ConfigError({
          file,
          detail: `key "${from.key}" = ${JSON.stringify(from.name)}: the environment variable is unset or empty; export it before starting the dictator`
        })
      )
    : Either.right(value)
}

export const resolveRedisSecrets = (
  file: string,
  config: Pick<DictatorConfigData, "redis_auth" | "redis_tls">,
  sources: SecretSources
): Either.Either<RedisSecrets, ConfigError> => {
  const problem = (detail: string) => Either.left(new ConfigError({ file, detail }))
  const read = (key: string, path: string) => readNamedFile(file, sources, key, path)

  let auth: RedisSecrets["auth"]
  const a = config.redis_auth
  if (a !== undefined) {
    const password = readSecret(
      file,
      sources,
      a.password_file !== undefined
        ? { _tag: "File", key: "redis_auth.password_file", path: a.password_file }
        : { _tag: "Env", key: "redis_auth.password_env", name: a.password_env ?? "" }
    )
    if (Either.isLeft(password)) return Either.left(password.left)
    auth = a.username === undefined ? { password: password.right } : { username: a.username, password: password.right }
  }

  let tls: RedisSecrets["tls"]
  const t = config.redis_tls
  if (t !== undefined) {
    const out: { ca?: string; cert?: string; key?: string; servername?: string; rejectUnauthorized: boolean } = {
      rejectUnauthorized: t.reject_unauthorized
    }
    for (const [key, path, field] of [
      ["redis_tls.ca_file", t.ca_file, "ca"],
      ["redis_tls.cert_file", t.cert_file, "cert"],
      ["redis_tls.key_file", t.key_file, "key"]
    ] as const) {
      if (path === undefined) continue
      const text = read(key, path)
      if (Either.isLeft(text)) return Either.left(text.left)
      if (!text.right.includes("-----BEGIN ")) {
        return problem(`key "${key}" = ${JSON.stringify(path)}: not a PEM file (no "-----BEGIN" line); give a PEM-encoded file`)
      }
      out[field] = text.right
    }
    if (t.server_name !== undefined) out.servername = t.server_name
    tls = out
  }
  return Either.right({ ...(auth === undefined ? {} : { auth }), ...(tls === undefined ? {} : { tls }) })
}

/** ZooKeeper digest credentials as the driver takes them: scheme and `user:password`. */
export interface ZkCredentials {
  readonly scheme: "digest"
  readonly user: string
  readonly auth: Redacted.Redacted<string>
}

/** Reads `zk_auth`'s secret (file `user:password`, or `username` + variable); None without zk_auth. */
export const resolveZkAuth = (
  file: string,
  config: Pick<DictatorConfigData, "zk_auth">,
  sources: SecretSources
): Either.Either<Option.Option<ZkCredentials>, ConfigError> => {
  const a = config.zk_auth
  if (a === undefined) return Either.right(Option.none())
  if (a.credentials_file !== undefined) {
    const text = readSecret(file, sources, { _tag: "File", key: "zk_auth.credentials_file", path: a.credentials_file })
    if (Either.isLeft(text)) return Either.left(text.left)
    const i = text.right.indexOf(":")
    if (i <= 0 || i === text.right.length - 1 || /[\s]/.test(text.right.slice(0, i))) {
      return Either.left(
        new ConfigError({
          file,
          detail: `key "zk_auth.credentials_file" = ${JSON.stringify(a.credentials_file)}: the file must hold "user:password" on one line; write it so`
        })
      )
    }
    return Either.right(Option.some({ scheme: a.scheme, user: text.right.slice(0, i), auth: Redacted.make(text.right) }))
  }
  const password = readSecret(file, sources, { _tag: "Env", key: "zk_auth.password_env", name: a.password_env ?? "" })
  if (Either.isLeft(password)) return Either.left(password.left)
  const user = a.username ?? ""
  return Either.right(Option.some({ scheme: a.scheme, user, auth: Redacted.make(`${user}:${password.right}`) }))
}

/** What the HTTP API takes from the files of `http_token_file` and `http_tls`. */
export interface HttpSecrets {
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly tls: Option.Option<{ readonly cert: string; readonly key: string }>
}

/**
 * The bearer token of the mutating endpoints (`http_token_file`, first line) and the PEM files of
 * `http_tls`. Also what a client of another dictator's API (the failsafe peer calls) reads the
 * token with: `resolveHttpSecrets(...).token`.
 */
export const resolveHttpSecrets = (
  file: string,
  config: Pick<DictatorConfigData, "http_token_file" | "http_tls">,
  sources: SecretSources
): Either.Either<HttpSecrets, ConfigError> => {
  let token: HttpSecrets["token"] = Option.none()
  if (config.http_token_file !== undefined) {
    const text = readSecret(file, sources, { _tag: "File", key: "http_token_file", path: config.http_token_file })
    if (Either.isLeft(text)) return Either.left(text.left)
    const first = text.right.split(/\r?\n/)[0]!.trim()
    if (first.length < 16) {
      return Either.left(
        new ConfigError({
          file,
          detail: `key "http_token_file" = ${JSON.stringify(config.http_token_file)}: the token (first line) is shorter than 16 characters; write a long random one (openssl rand -hex 32)`
        })
      )
    }
    token = Option.some(Redacted.make(first))
  }
  let tls: HttpSecrets["tls"] = Option.none()
  const t = config.http_tls
  if (t !== undefined) {
    const pem: Record<string, string> = {}
    for (const [key, path] of [["http_tls.cert_file", t.cert_file], ["http_tls.key_file", t.key_file]] as const) {
      const text = readNamedFile(file, sources, key, path)
      if (Either.isLeft(text)) return Either.left(text.left)
      if (!text.right.includes("-----BEGIN ")) {
        return Either.left(
          new ConfigError({ file, detail: `key "${key}" = ${JSON.stringify(path)}: not a PEM file (no "-----BEGIN" line); give a PEM-encoded file` })
        )
      }
      pem[key] = text.right
    }
    tls = Option.some({ cert: pem["http_tls.cert_file"]!, key: pem["http_tls.key_file"]! })
  }
  return Either.right({ token, tls })
}
