/**
 * The Sentinel-compatible discovery endpoint: a scoped TCP listener speaking RESP2/RESP3 to
 * Redis clients configured with the dictators as their sentinels, and a loop that turns the
 * node's status into a discovery view every check interval and publishes the events between
 * two views to the subscribed clients.
 *
 * Network-facing, so bounded: connections (beyond the limit: an error, then closed), request
 * sizes (Protocol.Limits), a request must complete within `requestTimeoutMs` of its first byte,
 * an idle client that subscribed to nothing is closed after `idleTimeoutMs`, and a client that
 * does not read its replies or messages is closed past `maxOutputBytes` of pending output.
 */
import * as net from "node:net"
import { Cause, Clock, Context, Data, Duration, Effect, Fiber, Layer, Option, Ref, Schedule, type Scope } from "effect"
import { DictatorNode, type DictatorNodeService } from "../Node.js"
import { type ClientState, type Context as CommandContext, deliveries, execute, newClient, subscriptionCount } from "./Commands.js"
import { diff, type SentinelEvent } from "./Events.js"
import * as P from "./Protocol.js"
import { type DiscoveryView, fromStatus } from "./Records.js"

export interface SentinelOptions {
  readonly host: string
  readonly port: number
  /** AUTH password; null: no AUTH needed (and AUTH <password> is refused as Redis does). */
  readonly password: string | null
  readonly service: string
  readonly checkIntervalMs: number
  /** Reported as `down-after-milliseconds`. */
  readonly downAfterMs: number
  /** A ZooKeeper session lost this long makes this endpoint hand out no master. */
  readonly staleAfterMs: number
  readonly limits?: P.Limits
  readonly maxConnections?: number
  readonly idleTimeoutMs?: number
  readonly requestTimeoutMs?: number
  readonly maxOutputBytes?: number
  /** Called with each request's command name (metrics); none by default. */
  readonly onCommand?: (command: string) => void
}

export const defaults = {
  maxConnections: 1024,
  idleTimeoutMs: 300_000,
  requestTimeoutMs: 10_000,
  // As Redis's default client-output-buffer-limit for pubsub clients (hard limit).
  maxOutputBytes: 32 * 1024 * 1024
} as const

export class SentinelServeError extends Data.TaggedError("SentinelServeError")<{
  readonly host: string
  readonly port: number
  readonly cause: unknown
}> {
  override get message() {
    const code = (this.cause as NodeJS.ErrnoException | undefined)?.code
    return `cannot serve the sentinel endpoint on ${this.host}:${this.port} (${code ?? String(this.cause)}); free the port or change sentinel_port`
  }
}

export interface Endpoint {
  /** The bound address (the port is the real one when 0 was asked). */
  readonly port: number
  /** Replaces the view commands answer from, then publishes `events` to the subscribers. */
  readonly update: (view: DiscoveryView, events: ReadonlyArray<SentinelEvent>) => Effect.Effect<void>
  readonly connectionCount: Effect.Effect<number>
}

interface Connection {
  readonly socket: net.Socket
  readonly state: ClientState
}

/** Listens on host:port until the scope closes; answers with no master until `update` is called. */
export const listen = (options: SentinelOptions): Effect.Effect<Endpoint, SentinelServeError, Scope.Scope> =>
  Effect.gen(function* () {
    const limits = options.limits ?? P.defaultLimits
    const maxConnections = options.maxConnections ?? defaults.maxConnections
    const idleTimeoutMs = options.idleTimeoutMs ?? defaults.idleTimeoutMs
    const requestTimeoutMs = options.requestTimeoutMs ?? defaults.requestTimeoutMs
    const maxOutputBytes = options.maxOutputBytes ?? defaults.maxOutputBytes
    const connections = new Set<Connection>()
    let view: DiscoveryView | null = null
    let nextId = 1
    let boundPort = options.port
    const context = (): CommandContext => ({
      view,
      service: options.service,
      password: options.password,
      records: { downAfterMs: options.downAfterMs },
      port: boundPort,
      connectedClients: connections.size
    })

    const send = (conn: Connection, replies: ReadonlyArray<P.Reply>) => {
      if (replies.length === 0 || conn.socket.destroyed) return
      conn.socket.write(Buffer.concat(replies.map((r) => P.encode(r, conn.state.proto))))
      if (conn.socket.writableLength > maxOutputBytes) conn.socket.destroy()
    }

    const onConnection = (socket: net.Socket) => {
      if (connections.size >= maxConnections) {
        socket.end("-ERR max number of clients reached\r\n")
        socket.on("error", () => {})
        return
      }
      socket.setNoDelay(true)
      const conn: Connection = { socket, state: newClient(nextId++, options.password !== null) }
      connections.add(conn)
      const parser = new P.RequestParser(limits)
      let closing = false
      let requestTimer: NodeJS.Timeout | null = null
      const closeWithError = (message: string) => {
        if (closing) return
        closing = true
        socket.end(P.encode(P.error(`ERR Protocol error: ${message}`), conn.state.proto))
        // A client that never reads cannot hold the socket open through end().
        setTimeout(() => socket.destroy(), 1000).unref()
      }
      const armRequestTimer = () => {
        if (parser.pending && requestTimer === null) {
          requestTimer = setTimeout(() => closeWithError("request not completed in time"), requestTimeoutMs)
        } else if (!parser.pending && requestTimer !== null) {
          clearTimeout(requestTimer)
          requestTimer = null
        }
      }
      // Subscribed clients wait for events for as long as they like; others are closed when idle.
      socket.setTimeout(idleTimeoutMs, () => {
        if (subscriptionCount(conn.state) === 0) socket.destroy()
      })
      socket.on("data", (chunk: Buffer) => {
        if (closing) return
        const result = parser.feed(chunk)
        for (const args of result.commands) {
          options.onCommand?.(args[0] ?? "")
          const outcome = execute(conn.state, context(), args)
          send(conn, outcome.replies)
          if (outcome.close) {
            closing = true
            socket.end()
            return
          }
        }
        if (result._tag === "Error") return closeWithError(result.message)
        armRequestTimer()
      })
      socket.on("error", () => {})
      socket.on("close", () => {
        if (requestTimer !== null) clearTimeout(requestTimer)
        connections.delete(conn)
      })
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<net.Server, SentinelServeError>((resume) => {
        const s = net.createServer({ noDelay: true }, onConnection)
        const onError = (cause: unknown) => resume(Effect.fail(new SentinelServeError({ host: options.host, port: options.port, cause })))
        s.once("error", onError)
        s.listen({ host: options.host, port: options.port }, () => {
          s.off("error", onError)
          s.on("error", () => {})
          resume(Effect.succeed(s))
        })
      }),
      (s) =>
        Effect.async<void>((resume) => {
          for (const c of connections) c.socket.destroy()
          connections.clear()
          s.close(() => resume(Effect.void))
        })
    )
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : options.port
    boundPort = port
    yield* Effect.logInfo(`sentinel endpoint listening on ${options.host}:${port}`)

    return {
      port,
      update: (next, events) =>
        Effect.sync(() => {
          view = next
          for (const e of events) {
            for (const conn of connections) send(conn, deliveries(conn.state, e.channel, e.payload))
          }
        }),
      connectionCount: Effect.sync(() => connections.size)
    } satisfies Endpoint
  })

/** Every check interval: the node's status into a view, published with the events since the last one. Runs until interrupted. */
export const followLoop = (endpoint: Endpoint, node: DictatorNodeService, options: SentinelOptions): Effect.Effect<void> =>
  Effect.gen(function* () {
    let previous: DiscoveryView | null = null
    const tick = Effect.gen(function* () {
      const status = yield* node.status
      const now = yield* Clock.currentTimeMillis
      const view = fromStatus(status, previous, { now, staleAfterMs: options.staleAfterMs })
      const events = diff(previous, view)
      previous = view
      yield* endpoint.update(view, events)
      for (const e of events) yield* Effect.logInfo(`sentinel event ${e.channel} ${e.payload}`)
    })
    yield* tick.pipe(Effect.repeat(Schedule.spaced(Duration.millis(options.checkIntervalMs))))
  }).pipe(
    Effect.catchAllCause((cause) => (Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError("sentinel view loop stopped", cause))),
    Effect.annotateLogs({ loop: "sentinel-view" })
  )

/** `followLoop` in a fiber of the current scope. */
export const follow = (endpoint: Endpoint, node: DictatorNodeService, options: SentinelOptions) =>
  Effect.forkScoped(followLoop(endpoint, node, options))

/**
 * Listens first (a taken port stops the program before it joins the election), then builds
 * `node` and follows it. The layer still provides the node, so the HTTP API can be built on it.
 * The loop is stopped only after the node's own finalizers (a shutdown's handover) ran, so the
 * endpoint keeps answering and publishing through a graceful handover.
 */
export const layer = <E, R>(options: SentinelOptions, node: Layer.Layer<DictatorNode, E, R>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      // Requests are counted in the node's metrics once it is built.
      let count: ((command: string) => void) | null = null
      const endpoint = yield* listen({ ...options, onCommand: (c) => count?.(c) })
      const loop = yield* Ref.make<Option.Option<Fiber.RuntimeFiber<void>>>(Option.none())
      // Registered before the node is built, so it runs after the node's finalizers.
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(Ref.get(loop), (f) => (Option.isSome(f) ? Fiber.interrupt(f.value) : Effect.void))
      )
      return Layer.tap(node, (context) =>
        Effect.flatMap(
          Effect.sync(() => {
            const built = Context.get(context, DictatorNode)
            count = (c) => Effect.runSync(built.countSentinel(c))
          }),
          () =>
            Effect.flatMap(Effect.forkDaemon(followLoop(endpoint, Context.get(context, DictatorNode), options)), (f) =>
              Ref.set(loop, Option.some(f))
            )
        )
      )
    })
  )
