/**
 * Health of a Redis server as a state machine over its checks: one fold for the local Redis and
 * for the master's Redis as a replica sees it (the observer's opinion).
 */
import { Either } from "effect"
import type { RedisFailure, ReplicationInfo } from "../Redis.js"

export interface HealthOptions {
  /** Timeouts this long in a row make a Redis down. */
  readonly downAfterMs: number
}

export type HealthState =
  | { readonly _tag: "Unknown" }
  | { readonly _tag: "Healthy"; readonly info: ReplicationInfo; readonly at: number }
  /** Failing checks that are not yet conclusive (timeouts shorter than down_after). */
  | { readonly _tag: "Suspect"; readonly since: number; readonly detail: string; readonly info: ReplicationInfo | null }
  | { readonly _tag: "Loading"; readonly since: number }
  | { readonly _tag: "Down"; readonly since: number; readonly detail: string }
  /**
   * The dictator's own access is refused (credentials, ACL, TLS certificate): nothing is known
   * about the server. Not healthy (no candidate, no promotion), not down (no resignation, no
   * vote against a master): fixed by the operator, never by a failover.
   */
  | { readonly _tag: "Misconfigured"; readonly since: number; readonly detail: string }

export type CheckResult = Either.Either<ReplicationInfo, RedisFailure>

const failingSince = (prev: HealthState, now: number): number =>
  prev._tag === "Suspect" || prev._tag === "Down" || prev._tag === "Loading" ? prev.since : now

/**
 * Folds one check into the health state. A refused connection means the process is gone: down
 * at once. A timeout may be a slow command: down only after `downAfterMs` of timeouts, so a
 * long `KEYS *` does not cause a failover. A dropped connection counts as refused on the second
 * check in a row (the reconnect will have told refused from alive by then).
 */
export const nextHealth = (prev: HealthState, result: CheckResult, now: number, opts: HealthOptions): HealthState => {
  if (Either.isRight(result)) return { _tag: "Healthy", info: result.right, at: now }
  const e = result.left
  const since = failingSince(prev, now)
  switch (e._tag) {
    case "RedisAuthFailed":
      return { _tag: "Misconfigured", since: prev._tag === "Misconfigured" ? prev.since : now, detail: e.message }
    case "RedisLoading":
      return { _tag: "Loading", since: prev._tag === "Loading" ? prev.since : now }
    case "RedisCommandError":
      return { _tag: "Down", since, detail: e.message }
    case "RedisUnavailable": {
      if (e.reason === "refused") return { _tag: "Down", since, detail: e.message }
      if (e.reason === "closed") {
        return prev._tag === "Suspect" || prev._tag === "Down"
          ? { _tag: "Down", since, detail: e.message }
          : { _tag: "Suspect", since, detail: e.message, info: prev._tag === "Healthy" ? prev.info : null }
      }
      if (prev._tag === "Down") return { _tag: "Down", since: prev.since, detail: e.message }
      return now - since >= opts.downAfterMs
        ? { _tag: "Down", since, detail: `${e.message} for ${now - since} ms` }
        : {
            _tag: "Suspect",
            since,
            detail: e.message,
            info: prev._tag === "Healthy" ? prev.info : prev._tag === "Suspect" ? prev.info : null
          }
    }
  }
}

/** Usable as a master or candidate right now (a Suspect Redis keeps its role until it is Down). */
export const isUp = (h: HealthState): boolean => h._tag === "Healthy" || h._tag === "Suspect"

export const lastInfo = (h: HealthState): ReplicationInfo | null =>
  h._tag === "Healthy" ? h.info : h._tag === "Suspect" ? h.info : null


export const describeHealth = (h: HealthState): string =>
  h._tag === "Healthy"
    ? `healthy (${h.info.role}, offset ${h.info.offset})`
    : h._tag === "Down" || h._tag === "Suspect" || h._tag === "Misconfigured"
      ? `${h._tag.toLowerCase()}: ${h.detail}`
      : h._tag.toLowerCase()

/**
 * Same state but for the time of the check: not a change worth waking anyone for (a controller
 * woken by every check it asked for itself would run in a loop).
 */
export const sameHealth = (a: HealthState, b: HealthState): boolean => {
  const plain = (h: HealthState) => JSON.stringify(h._tag === "Healthy" ? { ...h, at: 0 } : h)
  return plain(a) === plain(b)
}
