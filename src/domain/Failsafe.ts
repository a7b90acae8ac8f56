/**
 * Failsafe mode (issue 13): a master that has lost ZooKeeper keeps taking writes only while
 * every other member of the last known membership answers, over the dictators' HTTP API, that it
 * cannot reach ZooKeeper either and still sees this master at this epoch. The request and answer
 * on the wire, the timings and the safety margin between them. Pure; no I/O.
 */
import { Schema } from "effect"

/** What the master asks each member: `POST /failsafe` with this JSON body. */
export const FailsafeRequest = Schema.Struct({
  service: Schema.String.pipe(Schema.maxLength(128)),
  master: Schema.String.pipe(Schema.maxLength(128)),
  /** czxid of the master znode the asking master owns. */
  epoch: Schema.String.pipe(Schema.pattern(/^\d{1,20}$/))
})
export type FailsafeRequest = typeof FailsafeRequest.Type

/** A member's answer (the body of a 200): `yes` holds the member out of every election for a while. */
export const FailsafeAnswer = Schema.Struct({
  answer: Schema.Literal("yes", "no"),
  reason: Schema.String
})
export type FailsafeAnswer = typeof FailsafeAnswer.Type

/** The largest request body /failsafe reads (a request is ~100 bytes). */
export const FAILSAFE_MAX_BODY = 4096

export interface FailsafeTimings {
  /**
   * How long the master may use a unanimous yes, counted from the moment it SENT the requests
   * (before any member answered): the grant.
   */
  readonly grantMs: number
  /** How often the master asks again while the grant is in use (a third of the grant). */
  readonly renewEveryMs: number
  /**
   * How long the master waits for all answers of one round: two fifths of the grant, so that the
   * next round (sent a third of a grant, or one deadline, later) is answered before this grant
   * ends — max(renew, ask) + ask < grant — and a slow but live member still counts.
   */
  readonly askWithinMs: number
  /**
   * How long a member that answered yes stays out of elections, counted from its answer (and
   * at least until ZooKeeper is back and it has re-read the master znode). Three grants: the
   * master stops using a grant at most `grantMs` after it sent the request, which was before the
   * member answered; the two grants of margin cover the master's fencing action (a controller
   * tick and CLIENT PAUSE, bounded by check_interval_ms + check_timeout_ms) and clock-rate drift.
   */
  readonly holdMs: number
}

/**
 * From fence_after_ms and the negotiated session timeout: the grant is the fence delay (at least
 * 300 ms, at most a third of the session timeout, so renewals come well inside it), renewed every
 * third of it; the hold is three grants and always longer than the fencing action.
 */
export const failsafeTimings = (fenceAfterMs: number, sessionTimeoutMs: number, fenceActionMs: number): FailsafeTimings => {
  const grantMs = Math.max(300, Math.min(fenceAfterMs, Math.floor(sessionTimeoutMs / 3)))
  const renewEveryMs = Math.max(100, Math.floor(grantMs / 3))
  return {
    grantMs,
    renewEveryMs,
    askWithinMs: Math.floor((2 * grantMs) / 5),
    holdMs: Math.max(3 * grantMs, grantMs + 2 * fenceActionMs)
  }
}
