/**
 * What the dictators write into ZooKeeper about the service: the master record (COMPAT with the
 * original program) and each member's record. Encoding and parsing only; no I/O.
 */
import { Either, Option, ParseResult, Schema } from "effect"
import type { RedisAddress } from "../Redis.js"
import type { ZkNode } from "../ZooKeeper.js"

// ---------------------------------------------------------------------------------------------
// The master record (COMPAT: `port` is a string, as the original wrote it)

const PortString = Schema.Union(
  Schema.String.pipe(Schema.pattern(/^\d{1,5}$/)),
  Schema.Int.pipe(Schema.between(1, 65535))
).annotations({ message: () => ({ message: "must be a port between 1 and 65535, as a string of digits or a number", override: true }) })

export const MasterRecordJson = Schema.Struct({
  host: Schema.String.pipe(Schema.minLength(1)),
  port: PortString,
  name: Schema.String.pipe(Schema.minLength(1))
})

export interface MasterRecord extends RedisAddress {
  readonly name: string
}

export type MasterView =
  | { readonly _tag: "Absent" }
  | {
      readonly _tag: "Malformed"
      readonly raw: string
      readonly reason: string
      readonly version: number
      readonly owner: string
      readonly epoch: string
      readonly epochVersion: number | null
    }
  | {
      readonly _tag: "Present"
      readonly record: MasterRecord
      readonly version: number
      /** czxid of the znode: every election makes a new one. */
      readonly epoch: string
      /** Hex session id of the owning dictator. */
      readonly owner: string
      /**
       * Version of the epoch znode bumped by the transaction that created this master znode, or
       * null when it was not created that way. Removing "this master and no newer one" checks it:
       * a znode's own version starts at 0 again when it is re-created, so it cannot tell.
       */
      readonly epochVersion: number | null
    }

export type PresentMaster = Extract<MasterView, { readonly _tag: "Present" }>

export const encodeMasterRecord = (r: MasterRecord, extra: Record<string, unknown> = {}): Uint8Array =>
  new TextEncoder().encode(JSON.stringify({ host: r.host, port: String(r.port), name: r.name, ...extra }))

/** `epochNode` is the epoch znode read after the master znode: it belongs to it when its last change is the master's creation. */
export const parseMasterView = (node: Option.Option<ZkNode>, epochNode: Option.Option<ZkNode> = Option.none()): MasterView => {
  if (Option.isNone(node)) return { _tag: "Absent" }
  const { data, stat } = node.value
  const raw = new TextDecoder().decode(data)
  const epochVersion = Option.isSome(epochNode) && epochNode.value.stat.mzxid === stat.czxid ? epochNode.value.stat.version : null
  const common = { version: stat.version, owner: stat.ephemeralOwner, epoch: stat.czxid, epochVersion }
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch {
    return { _tag: "Malformed", raw, reason: "not JSON", ...common }
  }
  const decoded = Schema.decodeUnknownEither(MasterRecordJson)(json)
  if (Either.isLeft(decoded)) {
    const issue = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)[0]
    const reason = issue === undefined ? "invalid" : `${issue.path.map(String).join(".") || "record"}: ${issue.message}`
    return { _tag: "Malformed", raw, reason, ...common }
  }
  const port = Number(decoded.right.port)
  if (!(port >= 1 && port <= 65535)) {
    return { _tag: "Malformed", raw, reason: `port ${decoded.right.port} out of range`, ...common }
  }
  return { _tag: "Present", record: { host: decoded.right.host, port, name: decoded.right.name }, ...common }
}

// ---------------------------------------------------------------------------------------------
// Member records: what each dictator publishes about itself

export const MemberRecordJson = Schema.Struct({
  name: Schema.String,
  host: Schema.String,
  port: Schema.Int,
  priority: Schema.Int,
  healthy: Schema.Boolean,
  role: Schema.String,
  offset: Schema.Number,
  link_up: Schema.Boolean,
  /** Epoch (czxid) of the master this member finds unreachable, or null. */
  master_down: Schema.NullOr(Schema.String),
  version: Schema.String,
  /** Replication id of this member's Redis (absent in records of older versions). */
  replid: Schema.optional(Schema.String),
  /** "host:port" of this member's Sentinel-compatible endpoint, null or absent when it runs none. */
  sentinel: Schema.optional(Schema.NullOr(Schema.String)),
  /** "host:port" of this member's dictator HTTP API (failsafe requests go there); absent from older versions. */
  http: Schema.optional(Schema.NullOr(Schema.String))
})
export type MemberRecord = typeof MemberRecordJson.Type

/** A JSON znode record: encoded as it is, parsed to none when it is not JSON or not of the schema. */
const jsonRecord = <A, I>(schema: Schema.Schema<A, I>) => ({
  encode: (a: A): Uint8Array => new TextEncoder().encode(JSON.stringify(a)),
  parse: (data: Uint8Array): Option.Option<A> => {
    try {
      return Schema.decodeUnknownOption(schema)(JSON.parse(new TextDecoder().decode(data)))
    } catch {
      return Option.none()
    }
  }
})

const memberJson = jsonRecord(MemberRecordJson)
export const encodeMember = memberJson.encode
export const parseMember = memberJson.parse

/** What this node last wrote as its member record, in which session, when. */
export interface Published {
  readonly generation: number
  readonly record: MemberRecord
  readonly at: number
}

const sameExceptOffset = (a: MemberRecord, b: MemberRecord) =>
  JSON.stringify({ ...a, offset: 0 }) === JSON.stringify({ ...b, offset: 0 })

/** How often a record that changed only by its offset is rewritten. */
export const OFFSET_REFRESH_MS = 5000

/**
 * Whether to write the member record: a new session needs it created; otherwise it is rewritten
 * when anything but the offset changed, and for the offset alone at most every few seconds (the
 * ranking reads fresh offsets from each Redis; the record's offset is for people).
 */
export const republish = (
  published: Published | null,
  record: MemberRecord,
  generation: number,
  now: number
): "skip" | "update" | "create" => {
  if (published === null || published.generation !== generation) return "create"
  const fresh =
    sameExceptOffset(published.record, record) &&
    (record.offset === published.record.offset || now - published.at < OFFSET_REFRESH_MS)
  return fresh ? "skip" : "update"
}

/** A graceful handover's choice: `to` takes over from the master of `epoch`, which is gone. */
export const HandoverRecordJson = Schema.Struct({
  from: Schema.String,
  to: Schema.String,
  epoch: Schema.String
})
export type HandoverRecord = typeof HandoverRecordJson.Type

const handoverJson = jsonRecord(HandoverRecordJson)
export const encodeHandover = handoverJson.encode
export const parseHandover = handoverJson.parse

// ---------------------------------------------------------------------------------------------
// Operator controls (persistent znodes written by `dictator switchover` / `dictator pause`)

/**
 * A planned switchover asked by an operator: the master's dictator hands over to `to` (or the
 * freshest caught-up replica when null), at `at` (ISO time) or at once when null.
 */
export const SwitchoverRequestJson = Schema.Struct({
  /** Unique per request: the outcome names it, so the asker knows it is its own. */
  id: Schema.String.pipe(Schema.minLength(1)),
  to: Schema.NullOr(Schema.String.pipe(Schema.minLength(1))),
  at: Schema.NullOr(Schema.String),
  requested_at: Schema.String,
  /** Who asked (user@host), for the logs. */
  by: Schema.String
})
export type SwitchoverRequest = typeof SwitchoverRequestJson.Type

const switchoverRequestJson = jsonRecord(SwitchoverRequestJson)
export const encodeSwitchoverRequest = switchoverRequestJson.encode
export const parseSwitchoverRequest = switchoverRequestJson.parse

/** What the master's dictator did with the request `id`: written as it removes the request. */
export const SwitchoverResultJson = Schema.Struct({
  id: Schema.String,
  ok: Schema.Boolean,
  /** The handover's outcome or the reason for the refusal, in words. */
  message: Schema.String,
  from: Schema.String,
  /** The new master's name when it worked. */
  to: Schema.NullOr(Schema.String),
  finished_at: Schema.String
})
export type SwitchoverResult = typeof SwitchoverResultJson.Type

const switchoverResultJson = jsonRecord(SwitchoverResultJson)
export const encodeSwitchoverResult = switchoverResultJson.encode
export const parseSwitchoverResult = switchoverResultJson.parse

/** Maintenance mode: its presence is what counts (any data, even malformed, pauses failover). */
export const MaintenanceRecordJson = Schema.Struct({
  since: Schema.String,
  by: Schema.String
})
export type MaintenanceRecord = typeof MaintenanceRecordJson.Type

const maintenanceJson = jsonRecord(MaintenanceRecordJson)
export const encodeMaintenance = maintenanceJson.encode
export const parseMaintenance = maintenanceJson.parse

/** An ISO time for `--at`: a clear reason when it is not one or when it is not in the future. */
export const parseSwitchoverTime = (text: string, now: number): Either.Either<number, string> => {
  const t = /^\d{4}-\d{2}-\d{2}T/.test(text) ? Date.parse(text) : Number.NaN
  if (Number.isNaN(t)) return Either.left(`--at "${text}" is not an ISO time; use e.g. --at=2026-12-02T03:00:00Z`)
  if (t <= now) return Either.left(`--at "${text}" is in the past (now ${new Date(now).toISOString()}); give a future time, or leave --at out to switch over now`)
  return Either.right(t)
}
