/**
 * A replica's lag in seconds, measured honestly from offsets and times: the replica's dictator
 * samples the master's replication offset (its observer reads the master's INFO every check
 * interval). Every byte the master had at the time of a sample whose offset is at most the
 * replica's current offset is on the replica, so the replica misses at most what was written
 * since the newest such sample: lag = now - (time of that sample). An upper bound, coarse by
 * one check interval (the time between two samples) plus the age of the replica's own offset.
 * Pure; no I/O.
 */

export interface OffsetSample {
  /** Clock millis of the read. */
  readonly at: number
  readonly offset: number
}

export interface OffsetHistory {
  /** Oldest first; consecutive samples of the same offset collapse into the newest one's time. */
  readonly samples: ReadonlyArray<OffsetSample>
  /** The replication id the samples belong to: a new one (a new master) starts over. */
  readonly replid: string | null
}

export const emptyHistory: OffsetHistory = { samples: [], replid: null }

/** At most this many distinct offsets are kept; older ones fall off (the lag is then "at least"). */
export const MAX_SAMPLES = 600

export const addSample = (h: OffsetHistory, replid: string, sample: OffsetSample): OffsetHistory => {
  if (h.replid !== replid) return { replid, samples: [sample] }
  const last = h.samples[h.samples.length - 1]
  // Same offset as before: the master had nothing newer at this later time either.
  if (last !== undefined && last.offset === sample.offset) return { replid, samples: [...h.samples.slice(0, -1), sample] }
  if (last !== undefined && sample.offset < last.offset) return { replid, samples: [sample] }
  const samples = [...h.samples, sample]
  return { replid, samples: samples.length > MAX_SAMPLES ? samples.slice(samples.length - MAX_SAMPLES) : samples }
}

/** Drops the samples no replica offset `atLeast` or beyond can need (all but the newest ≤ it). */
export const prune = (h: OffsetHistory, atLeast: number): OffsetHistory => {
  let keepFrom = 0
  for (let i = 0; i < h.samples.length; i++) if (h.samples[i]!.offset <= atLeast) keepFrom = i
  return keepFrom === 0 ? h : { ...h, samples: h.samples.slice(keepFrom) }
}

export type LagEstimate =
  /** The replica has everything the master had `seconds` ago (an upper bound of its lag). */
  | { readonly _tag: "Seconds"; readonly seconds: number }
  /** Behind every sample kept: the lag is more than `seconds`. */
  | { readonly _tag: "AtLeast"; readonly seconds: number }
  | { readonly _tag: "Unknown"; readonly reason: string }

export const lagSeconds = (h: OffsetHistory, replicaOffset: number, now: number): LagEstimate => {
  if (h.samples.length === 0) return { _tag: "Unknown", reason: "the master's offset was not read yet" }
  let anchor: OffsetSample | null = null
  for (const s of h.samples) if (s.offset <= replicaOffset) anchor = s
  if (anchor === null) return { _tag: "AtLeast", seconds: Math.max(0, now - h.samples[0]!.at) / 1000 }
  return { _tag: "Seconds", seconds: Math.max(0, now - anchor.at) / 1000 }
}
