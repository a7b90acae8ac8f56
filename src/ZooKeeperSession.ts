/**
 * The ZooKeeper session as the node sees it, as pure functions: the state machine over the
 * driver's events, and the liveness timings. The driver (ZooKeeperClient.ts) feeds and uses them.
 */
import type { SessionInfo } from "./ZooKeeper.js"

export type DriverEvent =
  /** A brand-new session (first connection, or after expiry). */
  | { readonly _tag: "Established"; readonly sessionId: string; readonly timeoutMs: number; readonly at: number }
  /** The same session answers again (possibly through another server). */
  | { readonly _tag: "Resumed"; readonly generation: number; readonly at: number }
  /** No answer since `lastAnswerAt`: the connection is lost, or silent. */
  | { readonly _tag: "Lost"; readonly generation: number; readonly lastAnswerAt: number }
  | { readonly _tag: "Expired"; readonly generation: number; readonly at: number }

/**
 * Next session state. Events of an older generation (a closed client's late callbacks) change
 * nothing; "expired" stays until a new session replaces it; a disconnection keeps the time of
 * the first answer missed, so repeated "lost" events do not move the fencing clock forward.
 */
export const nextSession = (s: SessionInfo, e: DriverEvent): SessionInfo => {
  if (e._tag === "Established") {
    return { status: "connected", sessionId: e.sessionId, generation: s.generation + 1, since: e.at, timeoutMs: e.timeoutMs }
  }
  if (e.generation !== s.generation || s.status === "expired") return s
  switch (e._tag) {
    case "Resumed":
      return s.status === "connected" ? s : { ...s, status: "connected", since: e.at }
    case "Lost":
      return s.status === "disconnected" ? s : { ...s, status: "disconnected", since: e.lastAnswerAt }
    case "Expired":
      return { ...s, status: "expired", since: e.at }
  }
}

// ---------------------------------------------------------------------------------------------
// Liveness timings

export interface Liveness {
  /** How often the driver asks the server something when nothing else did. */
  readonly probeEveryMs: number
  /** Longest silence of the server (or of a handshake in progress) before the connection is dropped. */
  readonly deadlineMs: number
}

/**
 * From the negotiated session timeout T: a probe every T/6 and a deadline of T/3 after the last
 * answer. The server expires the session T after it last heard from us, so T/3 leaves 2T/3 to
 * find another server (two more tries of T/3 if the next one is silent too), and the fencing
 * clock (`since` = the last answer) is the same one a closed connection would start.
 * A healthy server answers a probe in well under T/6, so it is never dropped. With a silence
 * limit under T/3 (the node's fence_after_ms), the deadline is that limit and the probe comes at
 * half of it: a silent server is then noticed, and fenced against, within the limit.
 */
export const livenessFor = (sessionTimeoutMs: number, silenceLimitMs?: number): Liveness => {
  const deadlineMs = Math.max(100, Math.floor(Math.min(sessionTimeoutMs / 3, silenceLimitMs ?? Infinity)))
  return { probeEveryMs: Math.max(50, Math.floor(deadlineMs / 2)), deadlineMs }
}
