/**
 * The Redis service: scoped connections to a Redis server (the local one, or a peer's for
 * ranking and host-death detection) with the handful of commands the dictator needs, typed
 * errors that tell a refused connection (the process is gone) from a timeout (it may be busy).
 */
import { Context, Data, Duration, Effect, Layer, Scope } from "effect"
import { Redis as IORedis } from "ioredis"

export interface RedisAddress {
  readonly host: string
  readonly port: number
}

export const formatAddress = (a: RedisAddress): string => {
  const host = a.host.replace(/^\[(.*)\]$/, "$1")
  return host.includes(":") ? `[${host}]:${a.port}` : `${host}:${a.port}`
}

export const sameAddress = (a: RedisAddress, b: RedisAddress): boolean =>
  a.port === b.port && normalizeHost(a.host) === normalizeHost(b.host)

const normalizeHost = (h: string) => (h === "localhost" || h === "::1" || h === "[::1]" ? "127.0.0.1" : h)

export interface ReplicaLink {
  readonly host: string
  readonly port: number
  readonly state: string
  readonly offset: number
}

export interface ReplicationInfo {
  readonly role: "master" | "replica"
  /** Set on replicas: where they replicate from. */
  readonly master: RedisAddress | null
  /** Replicas: master_link_status is up. Masters: true. */
  readonly linkUp: boolean
  readonly linkDownSinceSeconds: number | null
  readonly syncInProgress: boolean
  /** Replication offset of this server's data: slave_repl_offset on replicas, master_repl_offset on masters. */
  readonly offset: number
  readonly replid: string
  /** Masters: replicas in state online. */
  readonly replicas: ReadonlyArray<ReplicaLink>
}

// ---------------------------------------------------------------------------------------------
// Errors

export type UnavailableReason = "refused" | "timeout" | "closed"

/** No answer: `refused` means nothing listens (the process is gone), `timeout` that it did not answer in time. */
export class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{
  readonly address: string
  readonly reason: UnavailableReason
  readonly detail: string
}> {
  override get message() {
    return `Redis ${this.address} unavailable (${this.reason}): ${this.detail}`
  }
}

export class RedisLoading extends Data.TaggedError("RedisLoading")<{ readonly address: string }> {
  override get message() {
    return `Redis ${this.address} is loading its dataset`
  }
}

export class RedisCommandError extends Data.TaggedError("RedisCommandError")<{
  readonly address: string
  readonly command: string
  readonly detail: string
}> {
  override get message() {
    return `Redis ${this.address} rejected ${this.command}: ${this.detail}`
  }
}

export type AuthFailureKind = "credentials" | "permission" | "tls"

/**
 * The dictator's OWN access to a Redis is wrong: rejected credentials (WRONGPASS, NOAUTH), a
 * missing ACL permission (NOPERM) or a TLS handshake that failed on a certificate (expired,
 * unknown CA, wrong name, none sent). Says nothing about whether that Redis is up, so it must
 * never count as "Redis down": it is fixed in the dictator's config or the server's ACL, not by
 * a failover.
 */
export class RedisAuthFailed extends Data.TaggedError("RedisAuthFailed")<{
  readonly address: string
  readonly kind: AuthFailureKind
  readonly detail: string
}> {
  override get message() {
    return `Redis ${this.address}: ${authFailureText[this.kind]} (${this.detail}); ${authFailureFix[this.kind]}`
  }
}

const authFailureText: Record<AuthFailureKind, string> = {
  credentials: "the dictator's credentials are rejected",
  permission: "the dictator's ACL user lacks a permission",
  tls: "TLS handshake failed"
}

const authFailureFix: Record<AuthFailureKind, string> = {
  credentials:
    "fix redis_auth (username, password_file / password_env) to match this server's requirepass or ACL user",
  permission: "grant the dictator's ACL user the missing command (README: the least ACL a dictator needs)",
  tls: "fix redis_tls (ca_file, cert_file, key_file, server_name) or renew the certificate on the failing side"
}

/**
 * Node's TLS error codes for a certificate or handshake refused (by either side); not
 * ERR_TLS_HANDSHAKE_TIMEOUT, which is a slow or stuck server.
 */
const tlsCode = /^(CERT_|ERR_TLS_CERT|ERR_SSL_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_EXCEEDED|ERR_TLS_INVALID_|ERR_TLS_PSK_)/

/**
 * Which failure of our own access an error reply or socket error is, if any: Redis's error
 * prefixes (WRONGPASS, NOAUTH, NOPERM; "ERR invalid password" before Redis 6) and Node's TLS
 * error codes.
 */
export const authFailureKind = (message: string, code?: string): AuthFailureKind | null => {
  if (code !== undefined && tlsCode.test(code)) return "tls"
  if (/^(WRONGPASS|NOAUTH)\b/.test(message) || message.startsWith("ERR invalid password")) return "credentials"
  if (/^NOPERM\b/.test(message)) return "permission"
  return null
}

export type RedisFailure = RedisUnavailable | RedisLoading | RedisCommandError | RedisAuthFailed

// ---------------------------------------------------------------------------------------------
// Service

export interface RedisConnection {
  readonly address: RedisAddress
  readonly ping: Effect.Effect<void, RedisFailure>
  readonly replication: Effect.Effect<ReplicationInfo, RedisFailure>
  /**
   * A health check: PING then INFO replication, sent together (one round trip, one timeout); the
   * PING's failure (LOADING, refused) wins over the INFO's.
   */
  readonly check: Effect.Effect<ReplicationInfo, RedisFailure>
  /** `redis_version` from INFO server ("7.2.4"). */
  readonly serverVersion: Effect.Effect<string, RedisFailure>
  readonly replicaOf: (target: RedisAddress | null) => Effect.Effect<void, RedisFailure>
  /** `CLIENT PAUSE ms WRITE`: writes block (then fail on a demoted node), reads go on. */
  readonly pauseWrites: (duration: Duration.DurationInput) => Effect.Effect<void, RedisFailure>
  readonly unpause: Effect.Effect<void, RedisFailure>
  readonly configSet: (key: string, value: string) => Effect.Effect<void, RedisFailure>
  /**
   * Closes the server's normal and pub/sub client connections, as Sentinel does on a role change:
   * clients that only rediscover the master when their connection drops do so at once. Never a
   * dictator's own connections (this node's or the other dictators', named "dictator" or logged
   * in as the dictator's ACL user: `clientsToClose`) nor replication links (not of those types).
   * CLIENT LIST then CLIENT KILL ID each. The number of connections closed.
   */
  readonly killClients: Effect.Effect<number, RedisFailure>
  /** Completes when the server next drops the connection: a process that dies is seen at once. */
  readonly closed: Effect.Effect<void>
}

export interface RedisService {
  /** A connection that reconnects by itself; closed with its scope. */
  readonly connect: (
    address: RedisAddress,
    timeout: Duration.DurationInput
  ) => Effect.Effect<RedisConnection, never, Scope.Scope>
}

export class Redis extends Context.Tag("dictator/Redis")<Redis, RedisService>() {}

/**
 * How the dictator reaches every Redis: the same credentials and TLS settings for the local
 * Redis, the peers, the observed master and the handover (Config.ts's resolveRedisSecrets).
 */
export interface RedisClientOptions {
  /** AUTH [username] password on every connection; masteruser / masterauth before REPLICAOF. */
  readonly auth?: { readonly username?: string; readonly password: string }
  /** node:tls options (PEM text), as ioredis's `tls`. */
  readonly tls?: {
    readonly ca?: string
    readonly cert?: string
    readonly key?: string
    readonly servername?: string
    readonly rejectUnauthorized: boolean
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing

export const parseInfo = (text: string): ReadonlyMap<string, string> => {
  const out = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    if (line === "" || line.startsWith("#")) continue
    const i = line.indexOf(":")
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1))
  }
  return out
}

const int = (s: string | undefined, fallback = 0): number => {
  const n = s === undefined ? NaN : Number.parseInt(s, 10)
  return Number.isFinite(n) ? n : fallback
}

/** `INFO replication` text into a typed value. */
export const parseReplication = (text: string): ReplicationInfo => {
  const info = parseInfo(text)
  const role = info.get("role") === "slave" ? "replica" : "master"
  const replicas: Array<ReplicaLink> = []
  for (const [key, value] of info) {
    if (!/^slave\d+$/.test(key)) continue
    const fields = new Map(value.split(",").map((kv) => kv.split("=") as [string, string]))
    replicas.push({
      host: fields.get("ip") ?? "",
      port: int(fields.get("port")),
      state: fields.get("state") ?? "",
      offset: int(fields.get("offset"))
    })
  }
  if (role === "master") {
    return {
      role,
      master: null,
      linkUp: true,
      linkDownSinceSeconds: null,
      syncInProgress: false,
      offset: int(info.get("master_repl_offset")),
      replid: info.get("master_replid") ?? "",
      replicas: replicas.filter((r) => r.state === "online")
    }
  }
  const linkUp = info.get("master_link_status") === "up"
  return {
    role,
    master: { host: info.get("master_host") ?? "", port: int(info.get("master_port")) },
    linkUp,
    linkDownSinceSeconds: linkUp ? null : int(info.get("master_link_down_since_seconds"), -1),
    syncInProgress: info.get("master_sync_in_progress") === "1",
    offset: Math.max(int(info.get("slave_repl_offset")), 0),
    replid: info.get("master_replid") ?? "",
    replicas: []
  }
}

/** CLIENT PAUSE … WRITE (and CLIENT UNPAUSE), the dictator's fence, came with Redis 6.2. */
export const MIN_REDIS_VERSION = "6.2.0"

/** Whether `version` ("7.2.4", "6.0.16") is at least `MIN_REDIS_VERSION`; an unreadable one is not. */
export const supportsWritePause = (version: string): boolean => {
  const m = /^(\d+)\.(\d+)/.exec(version)
  if (m === null) return false
  const major = Number(m[1])
  const minor = Number(m[2])
  return major > 6 || (major === 6 && minor >= 2)
}

/** Bounds one command: no answer in time is `RedisUnavailable` with reason "timeout". */
export const withCommandTimeout =
  (address: string, command: string, timeout: Duration.Duration) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | RedisUnavailable, R> =>
    Effect.timeoutFail(self, {
      duration: timeout,
      onTimeout: () =>
        new RedisUnavailable({
          address,
          reason: "timeout",
          detail: `${command} got no answer within ${Duration.format(timeout)}`
        })
    })

// ---------------------------------------------------------------------------------------------
// Real implementation (ioredis)

const refusedCodes = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ENOTCONN", "EHOSTUNREACH", "ENETUNREACH"])

/** Reconnect delay after a failure of our own access: no point hammering a server that will say no again. */
export const authRetryDelayMs = (failuresInARow: number): number =>
  Math.min(250 * 2 ** Math.max(0, failuresInARow - 1), 5000)

export const makeWith = (options: RedisClientOptions): RedisService => ({
  connect: (address, timeoutInput) =>
    Effect.gen(function* () {
      const name = formatAddress(address)
      const timeout = Duration.decode(timeoutInput)
      let lastSocketError: string | undefined
      /** The last connection failure that was our own access (credentials, TLS), with how many in a row. */
      let authFailure: { readonly kind: AuthFailureKind; readonly detail: string } | undefined
      let authFailures = 0
      /** The server answered a command on the current connection. */
      let answered = false
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = new IORedis({
            host: address.host,
            port: address.port,
            ...(options.auth === undefined
              ? {}
              : { password: options.auth.password, ...(options.auth.username === undefined ? {} : { username: options.auth.username }) }),
            ...(options.tls === undefined ? {} : { tls: { ...options.tls } }),
            // With a password, nothing may be sent between connect and AUTH's answer: ioredis
            // waits for CLIENT SETNAME / SETINFO there and, when AUTH fails, still declares the
            // dead connection ready and never reconnects (5.x). The name is set once ready instead.
            ...(options.auth === undefined ? { connectionName: "dictator" } : { disableClientInfo: true }),
            enableOfflineQueue: false,
            enableReadyCheck: false,
            maxRetriesPerRequest: 0,
            autoResendUnfulfilledCommands: false,
            connectTimeout: Math.max(Duration.toMillis(timeout), 50),
            // Reconnect quickly: a restarted Redis must be seen within one check interval or two.
            // Slower after our own access failed: retried, with backoff, until the config or ACL is fixed.
            retryStrategy: (times: number) =>
              authFailure !== undefined ? authRetryDelayMs(authFailures) : Math.min(times * 20, 200),
            lazyConnect: false
          })
          c.on("error", (e: NodeJS.ErrnoException) => {
            lastSocketError = e.code ?? e.message
            // A server refusing our client certificate (TLS 1.3: after the client's side of the
            // handshake is done) just resets the connection. A crashed server refuses the next
            // connect instead, so a reset before any answer on a TLS connection is taken as the
            // certificate; one reconnect later a real crash shows as ECONNREFUSED.
            const resetUnanswered = options.tls !== undefined && e.code === "ECONNRESET" && !answered
            const kind = authFailureKind(e.message, e.code) ?? (resetUnanswered ? "tls" : null)
            if (kind !== null) {
              authFailure = {
                kind,
                detail: resetUnanswered
                  ? "ECONNRESET before any answer: the server dropped the TLS connection, most likely refusing the client certificate (missing, expired or not signed by a CA it trusts)"
                  : e.code === undefined ? e.message : `${e.code}: ${e.message}`
              }
              authFailures += 1
            } else {
              authFailure = undefined
              authFailures = 0
            }
          })
          c.on("close", () => {
            answered = false
          })
          c.on("ready", () => {
            lastSocketError = undefined
            // Queued behind AUTH; a user without +client|setname just keeps an unnamed connection.
            if (options.auth !== undefined) c.call("CLIENT", "SETNAME", "dictator").catch(() => undefined)
          })
          return c
        }),
        (c) => Effect.sync(() => c.disconnect(false))
      )
      // The first commands would fail while the socket is still opening: wait (bounded) for it.
      yield* Effect.async<void>((resume) => {
        if (client.status === "ready") return resume(Effect.void)
        const done = () => resume(Effect.void)
        client.once("ready", done)
        client.once("error", done)
        return Effect.sync(() => {
          client.off("ready", done)
          client.off("error", done)
        })
      }).pipe(Effect.timeoutOption(timeout))

      const classify = (command: string, e: unknown): RedisFailure => {
        const msg = e instanceof Error ? e.message : String(e)
        if (msg.startsWith("LOADING")) return new RedisLoading({ address: name })
        const kind = authFailureKind(msg)
        // The command matters for a missing permission: it is what to grant.
        if (kind !== null) return new RedisAuthFailed({ address: name, kind, detail: kind === "permission" ? `${command}: ${msg}` : msg })
        const noConnection = msg.includes("Stream isn't writeable") || msg.includes("Connection is closed") || client.status !== "ready"
        // Not the status alone: ioredis may call a connection "ready" before AUTH is answered.
        if (noConnection && authFailure !== undefined) {
          return new RedisAuthFailed({ address: name, kind: authFailure.kind, detail: authFailure.detail })
        }
        if (noConnection) {
          const refused = lastSocketError !== undefined && refusedCodes.has(lastSocketError)
          return new RedisUnavailable({
            address: name,
            reason: refused ? "refused" : "closed",
            detail: lastSocketError ?? msg
          })
        }
        return new RedisCommandError({ address: name, command, detail: msg })
      }

      /**
       * Failures of our own access already logged on this connection: one line when one starts,
       * one when it ends, not one per health check. A missing permission is per command (PING may
       * work while CONFIG SET is refused); credentials and TLS concern the whole connection.
       */
      const reported = new Set<string>()
      const reportKey = (e: RedisAuthFailed, command: string) =>
        e.kind === "permission" ? `permission:${command.startsWith("REPLICAOF") ? "REPLICAOF" : command}` : "access"
      const report = (command: string) => ({
        onFailure: (e: RedisFailure) => {
          if (e._tag !== "RedisAuthFailed") return Effect.void
          const key = reportKey(e, command)
          if (reported.has(key)) return Effect.void
          reported.add(key)
          return Effect.logError(`${e.message} (retried with backoff; this is not counted as Redis down)`)
        },
        onSuccess: () => {
          // An answer: whatever refused us before does not any more.
          authFailure = undefined
          authFailures = 0
          answered = true
          const key = `permission:${command.startsWith("REPLICAOF") ? "REPLICAOF" : command}`
          const cleared = [...reported].filter((k) => k === "access" || k === key)
          if (cleared.length === 0) return Effect.void
          for (const k of cleared) reported.delete(k)
          return Effect.logInfo(`Redis ${name}: the dictator's access works again (${command})`)
        }
      })

      const timeoutMs = Duration.toMillis(timeout)
      /**
       * One command, bounded by a timer of its own rather than an Effect timeout (which forks a
       * fiber per command): the health checks run ten times a second, this is their idle cost.
       * Past the timeout the command's late answer is ignored, as with an Effect timeout.
       */
      const run = <A>(command: string, f: (c: IORedis) => Promise<A>): Effect.Effect<A, RedisFailure> =>
        Effect.async<A, RedisFailure>((resume) => {
          let done = false
          const timer = setTimeout(() => {
            done = true
            resume(
              Effect.fail(
                new RedisUnavailable({ address: name, reason: "timeout", detail: `${command} got no answer within ${Duration.format(timeout)}` })
              )
            )
          }, timeoutMs)
          let pending: Promise<A>
          try {
            pending = f(client)
          } catch (e) {
            pending = Promise.reject(e)
          }
          pending.then(
            (a) => {
              if (done) return
              done = true
              clearTimeout(timer)
              resume(Effect.succeed(a))
            },
            (e: unknown) => {
              if (done) return
              done = true
              clearTimeout(timer)
              resume(Effect.fail(classify(command, e)))
            }
          )
          return Effect.sync(() => {
            done = true
            clearTimeout(timer)
          })
        }).pipe(Effect.tapBoth(report(command)))

      /** PING and INFO replication in one pipeline: [[error, reply], [error, reply]]. */
      const pingAndInfo = (c: IORedis): Promise<string> =>
        c
          .pipeline()
          .ping()
          .info("replication")
          .exec()
          .then((replies) => {
            const [ping, info] = replies ?? []
            if (ping === undefined || info === undefined) throw new Error("Connection is closed.")
            if (ping[0] !== null) throw ping[0]
            if (info[0] !== null) throw info[0]
            return info[1] as string
          })

      const setMasterAuth = (auth: NonNullable<RedisClientOptions["auth"]>) =>
        Effect.zipRight(
          auth.username === undefined
            ? Effect.void
            : run("CONFIG SET masteruser", (c) => c.call("CONFIG", "SET", "masteruser", auth.username ?? "")),
          // Not the password in the command name: it ends up in error messages and logs.
          run("CONFIG SET masterauth", (c) => c.call("CONFIG", "SET", "masterauth", auth.password))
        )

      return {
        address,
        ping: run("PING", (c) => c.ping()).pipe(Effect.asVoid),
        replication: run("INFO replication", (c): Promise<string> => c.info("replication")).pipe(Effect.map(parseReplication)),
        check: run("PING + INFO replication", pingAndInfo).pipe(Effect.map(parseReplication)),
        serverVersion: run("INFO server", (c): Promise<string> => c.info("server")).pipe(
          Effect.map((text) => parseInfo(text).get("redis_version") ?? "")
        ),
        replicaOf: (target) =>
          Effect.zipRight(
            // The replica authenticates to its master with the dictator's own credentials: set
            // before REPLICAOF, so the first sync already has them.
            target === null || options.auth === undefined ? Effect.void : setMasterAuth(options.auth),
            run(target === null ? "REPLICAOF NO ONE" : `REPLICAOF ${formatAddress(target)}`, (c) =>
              target === null ? c.call("REPLICAOF", "NO", "ONE") : c.call("REPLICAOF", target.host, String(target.port))
            )
          ).pipe(Effect.asVoid),
        pauseWrites: (duration) =>
          run("CLIENT PAUSE", (c) =>
            c.call("CLIENT", "PAUSE", String(Math.max(1, Math.round(Duration.toMillis(duration)))), "WRITE")
          ).pipe(Effect.asVoid),
        unpause: run("CLIENT UNPAUSE", (c) => c.call("CLIENT", "UNPAUSE")).pipe(Effect.asVoid),
        configSet: (key, value) => run(`CONFIG SET ${key}`, (c) => c.call("CONFIG", "SET", key, value)).pipe(Effect.asVoid),
        killClients: Effect.gen(function* () {
          const listed = yield* run("CLIENT LIST", (c) =>
            Promise.all([c.call("CLIENT", "LIST", "TYPE", "normal"), c.call("CLIENT", "LIST", "TYPE", "pubsub")])
          )
          const ids = clientsToClose(listed.map(String).join("\n"), options.auth?.username)
          if (ids.length === 0) return 0
          // One id each (a client gone meanwhile counts 0): the filter form answers a count.
          const killed = yield* run("CLIENT KILL", (c) =>
            Promise.all(ids.map((id) => c.call("CLIENT", "KILL", "ID", id).catch(() => 0)))
          )
          return killed.reduce<number>((n, k) => n + Number(k), 0)
        }),
        closed: Effect.async<void>((resume) => {
          const onClose = () => resume(Effect.void)
          client.once("close", onClose)
          return Effect.sync(() => client.off("close", onClose))
        })
      } satisfies RedisConnection
    })
})

/**
 * The ids of the application's connections in CLIENT LIST output: all but the dictators' own,
 * named "dictator…" or logged in as `dictatorUser` (an ACL user other than `default`).
 */
export const clientsToClose = (clientList: string, dictatorUser: string | undefined): ReadonlyArray<string> => {
  const ids: Array<string> = []
  for (const line of clientList.split(/\r?\n/)) {
    const fields = new Map<string, string>()
    for (const part of line.trim().split(" ")) {
      const eq = part.indexOf("=")
      if (eq > 0) fields.set(part.slice(0, eq), part.slice(eq + 1))
    }
    const id = fields.get("id")
    if (id === undefined || !/^\d+$/.test(id)) continue
    if ((fields.get("name") ?? "").startsWith("dictator")) continue
    if (dictatorUser !== undefined && dictatorUser !== "default" && fields.get("user") === dictatorUser) continue
    ids.push(id)
  }
  return ids
}

export const make: RedisService = makeWith({})

/** The Redis service with credentials / TLS for every connection it makes. */
export const layerWith = (options: RedisClientOptions): Layer.Layer<Redis> => Layer.succeed(Redis, makeWith(options))

export const layer: Layer.Layer<Redis> = layerWith({})
