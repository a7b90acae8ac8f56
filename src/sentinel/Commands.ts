/**
 * The commands of the Sentinel-compatible endpoint: one client's state and the replies to one
 * command, given the current discovery view. No I/O: the server writes the replies and closes
 * the connection when told to.
 */
import { timingSafeEqual, createHash } from "node:crypto"
import * as P from "./Protocol.js"
import type { Reply } from "./Protocol.js"
import {
  type DiscoveryView,
  handOut,
  masterRecord,
  type RecordOptions,
  replicaRecord,
  replicas,
  runId,
  sentinelRecord,
  sentinels
} from "./Records.js"

/** What HELLO reports: clients only check that it is a 7.x server in sentinel mode. */
export const SERVER_VERSION = "7.2.4"

export interface ClientState {
  readonly id: number
  proto: P.ProtocolVersion
  authenticated: boolean
  name: string | null
  readonly channels: Set<string>
  readonly patterns: Set<string>
}

export const newClient = (id: number, passwordRequired: boolean): ClientState => ({
  id,
  proto: 2,
  authenticated: !passwordRequired,
  name: null,
  channels: new Set(),
  patterns: new Set()
})

export interface Context {
  /** null while the node is still starting. */
  readonly view: DiscoveryView | null
  readonly service: string
  readonly password: string | null
  readonly records: RecordOptions
  /** For INFO. */
  readonly port: number
  readonly connectedClients: number
}

export interface Outcome {
  readonly replies: ReadonlyArray<Reply>
  /** Close the connection once the replies are written. */
  readonly close: boolean
}

const reply = (...replies: ReadonlyArray<Reply>): Outcome => ({ replies, close: false })

export const subscriptionCount = (c: ClientState) => c.channels.size + c.patterns.size

const wrongArity = (name: string) => P.error(`ERR wrong number of arguments for '${name}' command`)

/** Redis's wording, which clients match on to fall back from HELLO to RESP2. */
export const unknownCommand = (args: ReadonlyArray<string>): Reply => {
  let rest = ""
  for (let i = 1; i < args.length && rest.length < 128; i++) rest += `'${args[i]!.slice(0, 128 - rest.length)}' `
  return P.error(`ERR unknown command '${(args[0] ?? "").slice(0, 128)}', with args beginning with: ${rest}`)
}

const sameSecret = (a: string, b: string) => {
  // Hashing first makes the comparison constant-time whatever the lengths.
  const h = (s: string) => createHash("sha256").update(s, "utf8").digest()
  return timingSafeEqual(h(a), h(b))
}

const WRONGPASS = P.error("WRONGPASS invalid username-password pair or user is disabled.")

/** Like Redis's `default` user: any user name but "default" is unknown. */
const checkAuth = (ctx: Context, user: string, pass: string): boolean =>
  user === "default" && (ctx.password === null || sameSecret(pass, ctx.password))

const helloReply = (c: ClientState): Reply => ({
  _tag: "Map",
  entries: [
    [P.bulk("server"), P.bulk("redis")],
    [P.bulk("version"), P.bulk(SERVER_VERSION)],
    [P.bulk("proto"), P.integer(c.proto)],
    [P.bulk("id"), P.integer(c.id)],
    [P.bulk("mode"), P.bulk("sentinel")],
    [P.bulk("role"), P.bulk("master")],
    [P.bulk("modules"), P.array([])]
  ]
})

const hello = (c: ClientState, ctx: Context, args: ReadonlyArray<string>): Outcome => {
  let proto: P.ProtocolVersion = c.proto
  let i = 1
  if (args.length > 1) {
    const v = args[1]!
    if (!/^-?\d{1,18}$/.test(v)) return reply(P.error("ERR Protocol version is not an integer or out of range"))
    const n = Number(v)
    if (n !== 2 && n !== 3) return reply(P.error("NOPROTO unsupported protocol version"))
    proto = n
    i = 2
  }
  let name: string | null = null
  let auth: readonly [string, string] | null = null
  for (; i < args.length; i++) {
    const opt = args[i]!.toUpperCase()
    const more = args.length - 1 - i
    if (opt === "AUTH" && more >= 2) {
      auth = [args[i + 1]!, args[i + 2]!]
      i += 2
    } else if (opt === "SETNAME" && more >= 1) {
      name = args[i + 1]!
      i += 1
    } else {
      return reply(P.error(`ERR Syntax error in HELLO option '${args[i]!}'`))
    }
  }
  if (auth !== null) {
    if (!checkAuth(ctx, auth[0], auth[1])) return reply(WRONGPASS)
    c.authenticated = true
  }
  if (!c.authenticated) {
    return reply(P.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))
  }
  if (name !== null) {
    if (/[\s]/.test(name)) return reply(P.error("ERR Client names cannot contain spaces, newlines or special characters."))
    c.name = name === "" ? null : name
  }
  c.proto = proto
  return reply(helloReply(c))
}

const auth = (c: ClientState, ctx: Context, args: ReadonlyArray<string>): Outcome => {
  if (args.length < 2 || args.length > 3) return reply(wrongArity("auth"))
  if (args.length === 2 && ctx.password === null) {
    return reply(
      P.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    )
  }
  const [user, pass] = args.length === 3 ? [args[1]!, args[2]!] : ["default", args[1]!]
  if (!checkAuth(ctx, user, pass)) return reply(WRONGPASS)
  c.authenticated = true
  return reply(P.ok)
}

const client = (c: ClientState, args: ReadonlyArray<string>): Outcome => {
  const sub = (args[1] ?? "").toUpperCase()
  switch (sub) {
    case "SETNAME":
      if (args.length !== 3) return reply(wrongArity("client|setname"))
      if (/[\s]/.test(args[2]!)) return reply(P.error("ERR Client names cannot contain spaces, newlines or special characters."))
      c.name = args[2] === "" ? null : args[2]!
      return reply(P.ok)
    case "SETINFO":
      if (args.length !== 4) return reply(wrongArity("client|setinfo"))
      return reply(P.ok)
    case "GETNAME":
      return reply(c.name === null ? P.nullBulk : P.bulk(c.name))
    case "ID":
      return reply(P.integer(c.id))
    default:
      return reply(P.error(`ERR unknown subcommand '${(args[1] ?? "").slice(0, 128)}'. Try CLIENT HELP.`))
  }
}

const recordReply = (fields: ReadonlyArray<readonly [string, string]>) => P.record(fields)

const sentinel = (ctx: Context, args: ReadonlyArray<string>): Outcome => {
  const sub = (args[1] ?? "").toLowerCase()
  const view = ctx.view
  const named = (n: string | undefined) => n === ctx.service
  const noSuchMaster = P.error("ERR No such master with that name")
  switch (sub) {
    case "get-master-addr-by-name": {
      if (args.length !== 3) return reply(wrongArity("sentinel|get-master-addr-by-name"))
      const a = named(args[2]) ? handOut(view) : null
      return reply(a === null ? P.nullArray : P.array([P.bulk(a.host), P.bulk(String(a.port))]))
    }
    case "masters":
      if (args.length !== 2) return reply(wrongArity("sentinel|masters"))
      return reply(P.array(view?.master ? [recordReply(masterRecord(view, view.master, ctx.records))] : []))
    case "master":
      if (args.length !== 3) return reply(wrongArity("sentinel|master"))
      if (!named(args[2]) || !view?.master) return reply(noSuchMaster)
      return reply(recordReply(masterRecord(view, view.master, ctx.records)))
    case "slaves":
    case "replicas":
      if (args.length !== 3) return reply(wrongArity(`sentinel|${sub}`))
      if (!named(args[2]) || !view?.master) return reply(noSuchMaster)
      return reply(P.array(replicas(view).map((m) => recordReply(replicaRecord(view, m, ctx.records)))))
    case "sentinels":
      if (args.length !== 3) return reply(wrongArity("sentinel|sentinels"))
      if (!named(args[2]) || !view?.master) return reply(noSuchMaster)
      return reply(P.array(sentinels(view).map((m) => recordReply(sentinelRecord(view, m, ctx.records)))))
    case "myid":
      if (args.length !== 2) return reply(wrongArity("sentinel|myid"))
      return reply(P.bulk(view === null ? "0".repeat(40) : runId(view.service, `${view.self}/sentinel`)))
    default:
      return reply(P.error(`ERR unknown subcommand '${(args[1] ?? "").slice(0, 128)}'. Try SENTINEL HELP.`))
  }
}


/**
 * INFO as Sentinel answers it (sections server, clients, sentinel): clients that run a ready
 * check (ioredis by default) send INFO before anything else and drop the connection on an error.
 */
const info = (ctx: Context, args: ReadonlyArray<string>): Outcome => {
  const wanted = new Set(args.slice(1).map((a) => a.toLowerCase()))
  const all = wanted.size === 0 || wanted.has("all") || wanted.has("default") || wanted.has("everything")
  const sections: Array<string> = []
  if (all || wanted.has("server")) {
    sections.push(
      ["# Server", `redis_version:${SERVER_VERSION}`, "redis_mode:sentinel", `process_id:${process.pid}`, `tcp_port:${ctx.port}`, `uptime_in_seconds:${Math.floor(process.uptime())}`].join("\r\n")
    )
  }
  if (all || wanted.has("clients")) sections.push(["# Clients", `connected_clients:${ctx.connectedClients}`].join("\r\n"))
  if (all || wanted.has("sentinel")) {
    const v = ctx.view
    const lines = ["# Sentinel", `sentinel_masters:${v?.master ? 1 : 0}`, "sentinel_tilt:0", "sentinel_running_scripts:0", "sentinel_scripts_queue_length:0", "sentinel_simulate_failure_flags:0"]
    if (v?.master) {
      const status = v.masterOdown || v.stale ? "odown" : v.masterSdown ? "sdown" : "ok"
      lines.push(`master0:name=${v.service},status=${status},address=${v.master.host}:${v.master.port},slaves=${replicas(v).length},sentinels=${sentinels(v).length + 1}`)
    }
    sections.push(lines.join("\r\n"))
  }
  return reply(P.bulk(sections.length === 0 ? "" : `${sections.join("\r\n\r\n")}\r\n`))
}

/** The confirmation of one (un)subscription: `[kind, channel, count]`, a push in RESP3. */
const confirmation = (c: ClientState, kind: string, channel: string | null) =>
  P.push([P.bulk(kind), channel === null ? P.nullBulk : P.bulk(channel), P.integer(subscriptionCount(c))])

const subscribe = (c: ClientState, args: ReadonlyArray<string>, pattern: boolean): Outcome => {
  if (args.length < 2) return reply(wrongArity(pattern ? "psubscribe" : "subscribe"))
  const set = pattern ? c.patterns : c.channels
  const out: Array<Reply> = []
  for (const ch of args.slice(1)) {
    set.add(ch)
    out.push(confirmation(c, pattern ? "psubscribe" : "subscribe", ch))
  }
  return reply(...out)
}

const unsubscribe = (c: ClientState, args: ReadonlyArray<string>, pattern: boolean): Outcome => {
  const set = pattern ? c.patterns : c.channels
  const kind = pattern ? "punsubscribe" : "unsubscribe"
  const targets = args.length > 1 ? args.slice(1) : [...set]
  if (targets.length === 0) return reply(confirmation(c, kind, null))
  const out: Array<Reply> = []
  for (const ch of targets) {
    set.delete(ch)
    out.push(confirmation(c, kind, ch))
  }
  return reply(...out)
}

/** In RESP2, a subscribed client may only run these (Redis's rule). */
const ALLOWED_SUBSCRIBED = new Set(["SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE", "PING", "QUIT", "RESET"])

/** Commands an unauthenticated client may run. */
const BEFORE_AUTH = new Set(["AUTH", "HELLO", "QUIT"])

export const execute = (c: ClientState, ctx: Context, args: ReadonlyArray<string>): Outcome => {
  const name = (args[0] ?? "").toUpperCase()
  if (!c.authenticated && !BEFORE_AUTH.has(name)) return reply(P.error("NOAUTH Authentication required."))
  if (c.proto === 2 && subscriptionCount(c) > 0 && !ALLOWED_SUBSCRIBED.has(name)) {
    return reply(
      P.error(
        `ERR Can't execute '${(args[0] ?? "").toLowerCase().slice(0, 128)}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`
      )
    )
  }
  switch (name) {
    case "PING":
      if (args.length > 2) return reply(wrongArity("ping"))
      if (c.proto === 2 && subscriptionCount(c) > 0) return reply(P.array([P.bulk("pong"), P.bulk(args[1] ?? "")]))
      return reply(args.length === 2 ? P.bulk(args[1]!) : P.simple("PONG"))
    case "HELLO":
      return hello(c, ctx, args)
    case "AUTH":
      return auth(c, ctx, args)
    case "CLIENT":
      return client(c, args)
    case "SENTINEL":
      return sentinel(ctx, args)
    case "SUBSCRIBE":
      return subscribe(c, args, false)
    case "PSUBSCRIBE":
      return subscribe(c, args, true)
    case "UNSUBSCRIBE":
      return unsubscribe(c, args, false)
    case "PUNSUBSCRIBE":
      return unsubscribe(c, args, true)
    case "INFO":
      return info(ctx, args)
    case "ROLE":
      if (args.length !== 1) return reply(wrongArity("role"))
      return reply(P.array([P.bulk("sentinel"), P.array([P.bulk(ctx.service)])]))
    case "RESET":
      c.channels.clear()
      c.patterns.clear()
      c.name = null
      c.proto = 2
      c.authenticated = ctx.password === null
      return reply(P.simple("RESET"))
    case "QUIT":
      return { replies: [P.ok], close: true }
    default:
      return reply(unknownCommand(args))
  }
}

/** The frames a client receives for one published event: one per matching channel or pattern. */
export const deliveries = (c: ClientState, channel: string, payload: string): ReadonlyArray<Reply> => {
  const out: Array<Reply> = []
  if (c.channels.has(channel)) out.push(P.push([P.bulk("message"), P.bulk(channel), P.bulk(payload)]))
  for (const pattern of c.patterns) {
    if (P.globMatch(pattern, channel)) out.push(P.push([P.bulk("pmessage"), P.bulk(pattern), P.bulk(channel), P.bulk(payload)]))
  }
  return out
}
