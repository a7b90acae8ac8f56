/**
 * Who should be the next master: the ranking every candidate computes alike, and the votes of
 * the members against a master whose Redis they cannot reach.
 */
import type { MemberRecord } from "./Records.js"

// ---------------------------------------------------------------------------------------------
// Ranking

export interface Candidate {
  readonly name: string
  readonly priority: number
  readonly offset: number
  readonly healthy: boolean
  readonly reachable: boolean
  readonly syncInProgress: boolean
}

/** The old master's replication position as last recorded in ZooKeeper, and how far behind a candidate may be. */
export interface LagGuard {
  /** The last offset the previous master's member record showed (null: none recorded). */
  readonly recordedOffset: number | null
  readonly recordedBy: string
  /** max_lag_on_failover: bytes; -1 lifts the guard. */
  readonly maxLag: number
}

/** Why a candidate is too far behind the recorded master to be elected, or null. */
export const lagExclusion = (c: { readonly name: string; readonly offset: number }, guard: LagGuard | null): string | null => {
  if (guard === null || guard.maxLag < 0 || guard.recordedOffset === null || guard.recordedOffset <= 0) return null
  const relax = "set max_lag_on_failover to -1 to elect it anyway"
  if (c.offset === 0) {
    return `its Redis is empty (offset 0) while master ${guard.recordedBy} had offset ${guard.recordedOffset}: restarted without its data? (${relax})`
  }
  const behind = guard.recordedOffset - c.offset
  return behind > guard.maxLag
    ? `${behind} bytes behind the last recorded master offset ${guard.recordedOffset} of ${guard.recordedBy}, more than max_lag_on_failover ${guard.maxLag} (${relax})`
    : null
}

export interface Ranking {
  readonly ranked: ReadonlyArray<Candidate>
  /** Why each left-out member is not a candidate. */
  readonly excluded: ReadonlyArray<{ readonly name: string; readonly reason: string }>
}

/**
 * Orders the candidates of an election: priority (lower first, like Redis's replica-priority;
 * 0 never), then replication offset (highest first), then the previous master, then name. Every
 * dictator computes the same order from the same facts, so only the best one tries at once.
 */
export const rankCandidates = (candidates: ReadonlyArray<Candidate>, previousMaster: string | null, guard: LagGuard | null = null): Ranking => {
  const excluded: Array<{ name: string; reason: string }> = []
  const eligible = candidates.filter((c) => {
    const reason =
      c.priority === 0
        ? "priority 0"
        : !c.healthy
          ? "unhealthy"
          : !c.reachable
            ? "Redis unreachable"
            : c.syncInProgress
              ? "still syncing from its master"
              : lagExclusion(c, guard)
    if (reason !== null) excluded.push({ name: c.name, reason })
    return reason === null
  })
  const ranked = [...eligible].sort(
    (a, b) =>
      a.priority - b.priority ||
      b.offset - a.offset ||
      Number(b.name === previousMaster) - Number(a.name === previousMaster) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  )
  return { ranked, excluded }
}

export const describeRanking = (r: Ranking): string => {
  const best = r.ranked[0]
  if (best === undefined) return "no eligible candidate"
  return `highest offset ${best.offset} (priority ${best.priority}) among ${r.ranked.length} healthy candidate${r.ranked.length === 1 ? "" : "s"}`
}

// ---------------------------------------------------------------------------------------------
// Votes against an unreachable master

/** Majority of the members other than the master itself. */
export const votesNeeded = (otherMembers: number): number => Math.floor(otherMembers / 2) + 1

export interface VoteCount {
  readonly votes: number
  readonly needed: number
  readonly voters: ReadonlyArray<string>
  /** A majority of the other members finds the master unreachable. */
  readonly carried: boolean
}

/**
 * Votes needed to depose a master: the configured `quorum`, else a majority of the other members
 * of the largest membership seen. Never of the members visible now: with one of three gone, one
 * replica's view of the master (a cable, a firewall) would be enough to move it back and forth.
 */
export const quorumOf = (configured: number | null, largestMembership: number): number =>
  configured ?? votesNeeded(Math.max(largestMembership - 1, 0))

export const countVotes = (
  members: ReadonlyMap<string, MemberRecord>,
  masterName: string,
  epoch: string,
  quorum: number | null = null
): VoteCount => {
  const others = [...members.values()].filter((m) => m.name !== masterName)
  const voters = others.filter((m) => m.master_down === epoch).map((m) => m.name)
  const needed = quorum ?? votesNeeded(others.length)
  return { votes: voters.length, needed, voters, carried: voters.length >= needed }
}


/** The previous master when a majority of the others voted it down: no candidate, and not worth asking. */
export const deposedMaster = (
  members: ReadonlyMap<string, MemberRecord>,
  previous: { readonly name: string; readonly epoch: string } | null,
  quorum: number | null = null
): string | null => (previous !== null && countVotes(members, previous.name, previous.epoch, quorum).carried ? previous.name : null)

export type Candidacy =
  | { readonly _tag: "Excluded"; readonly why: string }
  /** Stand after `waitMs` (rank × step): the best candidate tries at once, a slow one costs one step. */
  | {
      readonly _tag: "Candidate"
      /** 0 for the best candidate. */
      readonly rank: number
      readonly of: number
      /** The best candidate's name. */
      readonly best: string
      readonly waitMs: number
      readonly reason: string
    }

/**
 * This node's place in the election. A replica named by a graceful handover (and still eligible)
 * goes first at once; the others then wait `graceMs` more, so they act only if it does not.
 */
export const candidacy = (
  ranking: Ranking,
  self: string,
  stepMs: number,
  named: { readonly name: string; readonly from: string; readonly graceMs: number } | null = null
): Candidacy => {
  const favoured = named !== null && ranking.ranked.some((c) => c.name === named.name) ? named : null
  const order = favoured === null ? ranking.ranked : [...ranking.ranked.filter((c) => c.name === favoured.name), ...ranking.ranked.filter((c) => c.name !== favoured.name)]
  const rank = order.findIndex((c) => c.name === self)
  if (rank < 0) {
    return { _tag: "Excluded", why: ranking.excluded.find((e) => e.name === self)?.reason ?? "not a member yet" }
  }
  const waitMs = rank * stepMs + (favoured !== null && rank > 0 ? favoured.graceMs : 0)
  const reason =
    favoured !== null && rank === 0
      ? `named by ${favoured.from}'s graceful handover; ${describeRanking(ranking)}`
      : rank === 0
        ? describeRanking(ranking)
        : `${order.slice(0, rank).map((c) => c.name).join(", ")} did not act within ${waitMs} ms; ${describeRanking(ranking)}`
  return { _tag: "Candidate", rank, of: order.length, best: order[0]!.name, waitMs, reason }
}
