/**
 * The benchmark's clients, in plain async code (tight loops with precise timestamps read better
 * that way), each wrapped as a scoped Effect resource so a failed or interrupted round stops them:
 *
 * - `Link`: one persistent Redis connection to one address, reconnected on demand, dropped after
 *   a timeout or a broken connection (so a frozen server never piles up our commands).
 * - discovery: where a client finds the master — the Dictator master znode (one long-lived
 *   ZooKeeper session, read every 10 ms) or `SENTINEL get-master-addr-by-name` (first sentinel
 *   that answers, as client libraries do, every 10 ms).
 * - `writer`: continuous `SADD <key> <id>`, one write in flight, to whatever discovery names; a
 *   write in flight is abandoned (its connection dropped, never counted) when discovery changes.
 * - `staleWriter`: one connection pinned to one address (the old master), no command timeout, so
 *   it keeps writing through a freeze and after SIGCONT.
 * - `replication`: `INFO replication` of a server, parsed.
 */
import { Effect, type Scope } from "effect"
import { Redis as IORedis } from "ioredis"
import zookeeper from "node-zookeeper-client"
import { oneShotRedis, reopeningZkClient } from "../test/support/servers.js"

export interface Address {
  readonly host: string
  readonly port: number
}

export const formatAddress = (a: Address): string => `${a.host}:${a.port}`

/** Wall-clock milliseconds with sub-millisecond resolution (monotonic within the run). */
export const now = (): number => performance.timeOrigin + performance.now()

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * Waits for `f()` for at most `ms`. Interruptible on purpose: a release runs uninterruptibly, and
 * there a plain timeout would wait for a promise that never settles (a command to a frozen server).
 */
export const boundedPromise = (f: () => Promise<unknown>, ms = 5000): Effect.Effect<void> =>
  Effect.promise(f).pipe(Effect.interruptible, Effect.timeoutOption(ms), Effect.asVoid)

export const errorText = (e: unknown): string =>
  e instanceof Error ? e.message : typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)

const isReplyError = (e: unknown): boolean =>
  typeof e === "object" && e !== null && (e as { name?: unknown }).name === "ReplyError"

/** The first word of an error: "READONLY", "NOREPLICAS", "ECONNREFUSED", "timeout", … */
const errorKind = (e: unknown): string => {
  const text = errorText(e)
  if (isReplyError(e)) return text.split(/\s/)[0] ?? "ERR"
  if (/ECONNREFUSED/.test(text)) return "ECONNREFUSED"
  if (/timed out|timeout/i.test(text)) return "timeout"
  if (/closed/i.test(text)) return "closed"
  return text.slice(0, 40)
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

export class Link {
  private connecting: Promise<IORedis> | undefined
  private closed = false

  constructor(
    readonly address: Address,
    private readonly opts: { readonly commandTimeoutMs?: number; readonly connectTimeoutMs?: number; readonly name: string }
  ) {}

  private connect(): Promise<IORedis> {
    if (this.closed) return Promise.reject(new Error("link closed"))
    if (this.connecting !== undefined) return this.connecting
    const client = oneShotRedis(this.address, {
      connectTimeoutMs: this.opts.connectTimeoutMs ?? 1000,
      ...(this.opts.commandTimeoutMs === undefined ? {} : { commandTimeoutMs: this.opts.commandTimeoutMs }),
      name: this.opts.name
    })
    // Failures surface through the command promises.
    client.on("error", () => {})
    const ready: Promise<IORedis> = client.connect().then(
      () => client,
      (e: unknown) => {
        if (this.connecting === ready) this.connecting = undefined
        client.disconnect()
        throw e
      }
    )
    // No reconnect (retryStrategy null): once ended, the next call connects afresh.
    client.once("end", () => {
      if (this.connecting === ready) this.connecting = undefined
    })
    this.connecting = ready
    return ready
  }

  /** One command; a failure other than an error reply drops the connection. */
  async call(command: string, ...args: Array<string>): Promise<unknown> {
    const client = await this.connect()
    try {
      return await client.call(command, ...args)
    } catch (e) {
      if (!isReplyError(e)) this.drop()
      throw e
    }
  }

  /** Disconnects (commands in flight fail); the next call reconnects. */
  drop(): void {
    const p = this.connecting
    this.connecting = undefined
    p?.then((c) => c.disconnect(), () => {})
  }

  close(): void {
    this.closed = true
    this.drop()
  }
}

/** A set of Links closed together with the scope. */
export const links = (
  opts: { readonly commandTimeoutMs?: number; readonly name: string }
): Effect.Effect<(a: Address) => Link, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new Map<string, Link>()),
      (m) => Effect.sync(() => m.forEach((l) => l.close()))
    ),
    (m) => (a: Address) => {
      const key = formatAddress(a)
      let l = m.get(key)
      if (l === undefined) {
        l = new Link(a, opts)
        m.set(key, l)
      }
      return l
    }
  )

// ---------------------------------------------------------------------------------------------
// INFO replication
// ---------------------------------------------------------------------------------------------

export interface Replication {
  readonly role: "master" | "slave" | string
  readonly masterPort?: number
  readonly linkUp: boolean
  readonly fields: Readonly<Record<string, string>>
}

export const parseInfo = (text: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":")
    if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

export const replication = async (link: Link): Promise<Replication> => {
  const fields = parseInfo(String(await link.call("INFO", "replication")))
  const role = fields.role ?? "?"
  return {
    role,
    ...(fields.master_port === undefined ? {} : { masterPort: Number(fields.master_port) }),
    linkUp: role === "slave" && fields.master_link_status === "up",
    fields
  }
}

/** A replica of `master` whose link is up. */
export const isLinkedTo = (r: Replication, master: Address): boolean =>
  r.role === "slave" && r.masterPort === master.port && r.linkUp

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

export interface MasterSeen extends Address {
  readonly name?: string
}

export interface Discovery {
  readonly label: string
  /** The master as last read (kept while the source does not answer); null: none published. */
  readonly current: () => MasterSeen | null
  /** Called on every change of `current`; returns the unsubscribe function. */
  readonly subscribe: (listener: () => void) => () => void
  /** Every change: when it was read and what. */
  readonly history: () => ReadonlyArray<{ readonly at: number; readonly master: MasterSeen | null }>
}

const sameMaster = (a: MasterSeen | null, b: MasterSeen | null): boolean =>
  a === null || b === null ? a === b : a.host === b.host && a.port === b.port

/**
 * A discovery polled every `intervalMs` with one read in flight. `read` answers the master, null
 * for "none published", or undefined for "no answer" (the last value is kept).
 */
const polled = (
  label: string,
  read: () => Promise<MasterSeen | null | undefined>,
  intervalMs: number
): Effect.Effect<Discovery, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      let current: MasterSeen | null = null
      let running = true
      const listeners = new Set<() => void>()
      const history: Array<{ at: number; master: MasterSeen | null }> = []
      const step = async () => {
        const seen = await Promise.race([read().catch(() => undefined), sleep(1000).then(() => undefined)])
        if (seen === undefined || sameMaster(seen, current)) return
        current = seen
        history.push({ at: now(), master: seen })
        for (const l of listeners) l()
      }
      // A first answer before returning, so a writer starts with a master (bounded: 10 s).
      const first = now()
      while (history.length === 0 && now() - first < 10000) {
        await step()
        if (history.length === 0) await sleep(50)
      }
      const loop = (async () => {
        while (running) {
          await step()
          await sleep(intervalMs)
        }
      })()
      const discovery: Discovery = {
        label,
        current: () => current,
        subscribe: (l) => {
          listeners.add(l)
          return () => listeners.delete(l)
        },
        history: () => history
      }
      return {
        discovery,
        stop: async () => {
          running = false
          await loop
        }
      }
    }),
    (d) => boundedPromise(() => d.stop())
  ).pipe(Effect.map((d) => d.discovery))

/** The master znode `/services/redis/<svc>/master`, read every `intervalMs` on one long-lived session. */
export const zkDiscovery = (
  hosts: ReadonlyArray<string>,
  svc: string,
  intervalMs = 10
): Effect.Effect<Discovery, never, Scope.Scope> =>
  Effect.gen(function* () {
    const path = `/services/redis/${svc}/master`
    const zkClient = yield* reopeningZkClient(hosts, 6000)
    const read = () =>
      new Promise<MasterSeen | null | undefined>((resolve) => {
        const c = zkClient()
        c.getData(path, (error, data) => {
          if (error) {
            const code = (error as { code?: unknown }).code
            resolve(code === zookeeper.Exception.NO_NODE ? null : undefined)
            return
          }
          try {
            const j = JSON.parse((data ?? Buffer.alloc(0)).toString("utf8")) as Record<string, unknown>
            const port = Number(j.port) // a string in the COMPAT format
            resolve(
              typeof j.host === "string" && Number.isInteger(port)
                ? { host: j.host, port, ...(typeof j.name === "string" ? { name: j.name } : {}) }
                : undefined
            )
          } catch {
            resolve(undefined)
          }
        })
      })
    return yield* polled(`znode ${path}`, read, intervalMs)
  })

/** `SENTINEL get-master-addr-by-name <name>` of the first sentinel that answers, every `intervalMs`. */
export const sentinelDiscovery = (
  sentinels: ReadonlyArray<Address>,
  masterName: string,
  intervalMs = 10
): Effect.Effect<Discovery, never, Scope.Scope> =>
  Effect.gen(function* () {
    const link = yield* links({ commandTimeoutMs: 200, name: "bench-discovery" })
    const read = async (): Promise<MasterSeen | null | undefined> => {
      for (const s of sentinels) {
        try {
          const reply = await link(s).call("SENTINEL", "get-master-addr-by-name", masterName)
          if (!Array.isArray(reply)) return null
          const [host, port] = reply as Array<unknown>
          return typeof host === "string" ? { host, port: Number(port) } : null
        } catch {
          // next sentinel
        }
      }
      return undefined
    }
    return yield* polled(`SENTINEL get-master-addr-by-name ${masterName}`, read, intervalMs)
  })

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

export interface Ack {
  readonly id: number
  /** When the command was sent. */
  readonly sentAt: number
  /** When the reply arrived. */
  readonly at: number
  /** Port of the Redis that acknowledged it (every server is on 127.0.0.1). */
  readonly port: number
}

export interface Failure {
  /** When the failure was seen. */
  readonly at: number
  readonly port: number
  /** "READONLY", "NOREPLICAS", "timeout", "closed", "abandoned" (discovery moved on), … */
  readonly kind: string
}

export interface WriterHandle {
  readonly key: string
  readonly acks: () => ReadonlyArray<Ack>
  readonly failures: () => ReadonlyArray<Failure>
  /** Stops writing; the write in flight is abandoned. */
  readonly stop: Effect.Effect<void>
}

/** Failures grouped by server and kind: how many, first and last (ms from `t0`). */
export const failureSummary = (
  failures: ReadonlyArray<Failure>,
  t0: number
): Record<string, { count: number; firstMs: number; lastMs: number }> => {
  const out: Record<string, { count: number; firstMs: number; lastMs: number }> = {}
  const ms = (t: number) => Math.round((t - t0) * 10) / 10
  for (const f of failures) {
    const k = `${f.port} ${f.kind}`
    const e = out[k]
    if (e === undefined) out[k] = { count: 1, firstMs: ms(f.at), lastMs: ms(f.at) }
    else {
      e.count++
      e.lastMs = ms(f.at)
    }
  }
  return out
}

/**
 * `SADD key id` (ids 1, 2, …), one write in flight, to the master `discovery` names. A write
 * counts as acknowledged when its reply arrives; when discovery changes while a write is in
 * flight, the write is abandoned (connection dropped, not counted) and the next one goes to the
 * new master, so a client is not held up by a dead or frozen server it no longer needs.
 */
export const writer = (
  discovery: Discovery,
  key: string,
  opts?: { readonly timeoutMs?: number }
): Effect.Effect<WriterHandle, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const acks: Array<Ack> = []
      const failures: Array<Failure> = []
      const pool = new Map<string, Link>()
      const linkFor = (a: Address) => {
        const k = formatAddress(a)
        let l = pool.get(k)
        if (l === undefined) {
          l = new Link(a, { commandTimeoutMs: opts?.timeoutMs ?? 1000, name: "bench-writer" })
          pool.set(k, l)
        }
        return l
      }
      let running = true
      let interrupt: (() => void) | undefined
      const unsubscribe = discovery.subscribe(() => interrupt?.())
      const loop = (async () => {
        let id = 0
        while (running) {
          const m = discovery.current()
          const interrupted = new Promise<"changed">((r) => (interrupt = () => r("changed")))
          if (m === null) {
            await Promise.race([interrupted, sleep(5)])
            continue
          }
          const link = linkFor(m)
          const myId = ++id
          const sentAt = now()
          const result = await Promise.race([
            link.call("SADD", key, String(myId)).then(
              () => now(),
              (e: unknown) => e
            ),
            interrupted
          ])
          if (typeof result === "number") {
            acks.push({ id: myId, sentAt, at: result, port: m.port })
          } else if (!running) {
            break
          } else if (result === "changed") {
            failures.push({ at: now(), port: m.port, kind: "abandoned" })
            link.drop()
          } else {
            failures.push({ at: now(), port: m.port, kind: errorKind(result) })
            await sleep(2)
          }
        }
        for (const l of pool.values()) l.close()
      })()
      return {
        handle: {
          key,
          acks: () => acks,
          failures: () => failures,
          stop: boundedPromise(async () => {
            running = false
            interrupt?.()
            unsubscribe()
            await loop
          })
        } satisfies WriterHandle,
        stopNow: () => {
          running = false
          interrupt?.()
          unsubscribe()
          return loop
        }
      }
    }),
    (w) => boundedPromise(() => w.stopNow())
  ).pipe(Effect.map((w) => w.handle))

/**
 * `SADD key id` on one connection pinned to `address`, one write in flight and no command
 * timeout: through a SIGSTOP the write waits in the socket, and after SIGCONT it goes on writing
 * there, as a client that does not follow discovery would. Reconnects (after 20 ms) when the
 * connection breaks.
 */
export const staleWriter = (address: Address, key: string): Effect.Effect<WriterHandle, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const acks: Array<Ack> = []
      const failures: Array<Failure> = []
      const link = new Link(address, { name: "bench-stale" })
      let running = true
      let stopped!: () => void
      // Stopping does not wait for a write in flight: a frozen server would never answer it.
      const stopping = new Promise<"stopped">((r) => (stopped = () => r("stopped")))
      const loop = (async () => {
        let id = 0
        while (running) {
          const myId = ++id
          const sentAt = now()
          const result = await Promise.race([
            link.call("SADD", key, String(myId)).then(() => now(), (e: unknown) => ({ error: e })),
            stopping
          ])
          if (result === "stopped" || !running) break
          if (typeof result === "number") {
            acks.push({ id: myId, sentAt, at: result, port: address.port })
          } else {
            failures.push({ at: now(), port: address.port, kind: errorKind(result.error) })
            await sleep(isReplyError(result.error) ? 2 : 20)
          }
        }
      })()
      const stopNow = () => {
        running = false
        stopped()
        link.close()
        return loop
      }
      return {
        handle: {
          key,
          acks: () => acks,
          failures: () => failures,
          stop: boundedPromise(stopNow)
        } satisfies WriterHandle,
        stopNow
      }
    }),
    (w) => boundedPromise(() => w.stopNow())
  ).pipe(Effect.map((w) => w.handle))
