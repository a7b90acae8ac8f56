/**
 * Failovers as one node sees them, for metrics: a new master epoch after a previous one. Its
 * duration runs from the first sign here that the previous master was lost (this node's vote
 * against it, or its znode gone) to the new master's znode seen. Pure; no I/O.
 */
import type { MasterView } from "./Records.js"

export interface FailoverState {
  /** Epoch of the last master seen present; null before the first. */
  readonly epoch: string | null
  /** When this node first saw that master lost, or null while it is not. */
  readonly lostAt: number | null
}

export const initialFailovers: FailoverState = { epoch: null, lostAt: null }

/** A failover seen: the new epoch, and its duration when the loss was seen here (ms). */
export interface FailoverSeen {
  readonly epoch: string
  readonly durationMs: number | null
}

export const onMasterView = (s: FailoverState, view: MasterView, now: number): readonly [FailoverState, FailoverSeen | null] => {
  if (view._tag !== "Present") {
    return [s.epoch !== null && s.lostAt === null ? { ...s, lostAt: now } : s, null]
  }
  if (view.epoch === s.epoch) return [s, null]
  const next = { epoch: view.epoch, lostAt: null }
  // The first master seen since start is no failover.
  if (s.epoch === null) return [next, null]
  return [next, { epoch: view.epoch, durationMs: s.lostAt === null ? null : Math.max(0, now - s.lostAt) }]
}

/** This node voted the master of `epoch` down: lost from here, if it is the current one. */
export const onVote = (s: FailoverState, epoch: string | null, now: number): FailoverState =>
  epoch !== null && epoch === s.epoch && s.lostAt === null ? { ...s, lostAt: now } : s
