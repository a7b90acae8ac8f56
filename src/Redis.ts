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

export type RedisFailure = RedisUnavailable | RedisLoading | RedisCommandError

// ---------------------------------------------------------------------------------------------
// Service

export interface RedisConnection {
  readonly address: RedisAddress
  readonly ping: Effect.Effect<void, RedisFailure>
  readonly replication: Effect.Effect<ReplicationInfo, RedisFailure>
  readonly replicaOf: (target: RedisAddress | null) => Effect.Effect<void, RedisFailure>
  /** `CLIENT PAUSE ms WRITE`: writes block (then fail on a demoted node), reads go on. */
  readonly pauseWrites: (duration: Duration.DurationInput) => Effect.Effect<void, RedisFailure>
  readonly unpause: Effect.Effect<void, RedisFailure>
  readonly configSet: (key: string, value: string) => Effect.Effect<void, RedisFailure>
  /**
   * Closes the server's normal and pub/sub client connections (not this one, not replication
   * links), as Sentinel does on a role change: clients that only rediscover the master when
   * their connection drops do so at once. The number of connections closed.
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

export const make: RedisService = {
  connect: (address, timeoutInput) =>
    Effect.gen(function* () {
      const name = formatAddress(address)
      const timeout = Duration.decode(timeoutInput)
      let lastSocketError: string | undefined
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = new IORedis({
            host: address.host,
            port: address.port,
            connectionName: "dictator",
            enableOfflineQueue: false,
            enableReadyCheck: false,
            maxRetriesPerRequest: 0,
            autoResendUnfulfilledCommands: false,
            connectTimeout: Math.max(Duration.toMillis(timeout), 50),
            // Reconnect quickly: a restarted Redis must be seen within one check interval or two.
            retryStrategy: (times: number) => Math.min(times * 20, 200),
            lazyConnect: false
          })
          c.on("error", (e: NodeJS.ErrnoException) => {
            lastSocketError = e.code ?? e.message
          })
          c.on("ready", () => {
            lastSocketError = undefined
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
        if (msg.includes("Stream isn't writeable") || msg.includes("Connection is closed") || client.status !== "ready") {
          const refused = lastSocketError !== undefined && refusedCodes.has(lastSocketError)
          return new RedisUnavailable({
            address: name,
            reason: refused ? "refused" : "closed",
            detail: lastSocketError ?? msg
          })
        }
        return new RedisCommandError({ address: name, command, detail: msg })
      }

      const run = <A>(command: string, f: (c: IORedis) => Promise<A>): Effect.Effect<A, RedisFailure> =>
        Effect.tryPromise({ try: () => f(client), catch: (e) => classify(command, e) }).pipe(
          withCommandTimeout(name, command, timeout)
        )

      return {
        address,
        ping: run("PING", (c) => c.ping()).pipe(Effect.asVoid),
        replication: run("INFO replication", (c): Promise<string> => c.info("replication")).pipe(Effect.map(parseReplication)),
        replicaOf: (target) =>
          run(target === null ? "REPLICAOF NO ONE" : `REPLICAOF ${formatAddress(target)}`, (c) =>
            target === null ? c.call("REPLICAOF", "NO", "ONE") : c.call("REPLICAOF", target.host, String(target.port))
          ).pipe(Effect.asVoid),
        pauseWrites: (duration) =>
          run("CLIENT PAUSE", (c) =>
            c.call("CLIENT", "PAUSE", String(Math.max(1, Math.round(Duration.toMillis(duration)))), "WRITE")
          ).pipe(Effect.asVoid),
        unpause: run("CLIENT UNPAUSE", (c) => c.call("CLIENT", "UNPAUSE")).pipe(Effect.asVoid),
        configSet: (key, value) => run(`CONFIG SET ${key}`, (c) => c.call("CONFIG", "SET", key, value)).pipe(Effect.asVoid),
        killClients: Effect.zipWith(
          run("CLIENT KILL TYPE normal", (c) => c.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")),
          run("CLIENT KILL TYPE pubsub", (c) => c.call("CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "yes")),
          (a, b) => Number(a) + Number(b)
        ),
        closed: Effect.async<void>((resume) => {
          const onClose = () => resume(Effect.void)
          client.once("close", onClose)
          return Effect.sync(() => client.off("close", onClose))
        })
      } satisfies RedisConnection
    })
}

export const layer: Layer.Layer<Redis> = Layer.succeed(Redis, make)
