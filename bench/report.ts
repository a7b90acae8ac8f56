/**
 * Figures of the benchmark: the raw round record, per-case statistics (median/min/max over the
 * rounds that completed), the Dictator/Sentinel comparison, the project's targets, and the
 * printed table. No I/O here except building strings.
 */

export const CASE_IDS = [
  "dictator-redis-killed",
  "dictator-host-killed",
  "dictator-host-frozen",
  "dictator-handover",
  "dictator-zookeeper-frozen",
  "dictator-switchover",
  "sentinel-redis-killed",
  "sentinel-master-frozen"
] as const
export type CaseId = (typeof CASE_IDS)[number]

export const CASE_TITLES: Record<CaseId, string> = {
  "dictator-redis-killed": "Dictator: master's Redis killed (kill -9)",
  "dictator-host-killed": "Dictator: host killed (Redis + dictator, kill -9)",
  "dictator-host-frozen": "Dictator: host frozen (SIGSTOP Redis + dictator)",
  "dictator-handover": "Dictator: graceful handover (SIGTERM dictator)",
  "dictator-zookeeper-frozen": "Dictator: the ZooKeeper server of the master's dictator frozen (SIGSTOP, 8 s)",
  "dictator-switchover": "Dictator: planned switchover (dictator switchover)",
  "sentinel-redis-killed": "Sentinel: master's Redis killed (kill -9)",
  "sentinel-master-frozen": "Sentinel: master frozen (SIGSTOP Redis)"
}

/** One round as measured. Times are milliseconds from the fault unless named otherwise. */
export interface RoundResult {
  case: CaseId
  round: number
  ok: boolean
  error?: string
  startedAt: string
  /** 1-minute load average when the fault was injected (the machine may be shared). */
  load1?: number
  /** When the fault was injected (to find it in the processes' logs). */
  faultAt?: string
  oldMaster?: string
  newMaster?: string
  finalMaster?: string
  /** Discovery first named a server other than the old master. */
  discoveredMs?: number
  /** (a) First write acknowledged by a server other than the old master, found through discovery. */
  writableMs?: number
  /** (b) Every other running replica replicating from the new master with its link up. */
  linkedMs?: number
  /** (c) Acknowledged writes of the discovery-following writer missing on the final master. */
  lost?: number
  /** (e) Longest interval without an acknowledged write, from 1 s before the fault to the writer's stop. */
  maxGapMs?: number
  /** Writer: acknowledged writes per second in the second before the fault. */
  ackRateBefore?: number
  acked?: number
  /** Failed writes of the discovery-following writer by "<port> <kind>": count, first and last (ms). */
  writerFailures?: Record<string, { count: number; firstMs: number; lastMs: number }>
  /** (d) Frozen cases: writes the old master acknowledged (to the pinned client) after the new master was writable. */
  staleAfterWritable?: number
  /** Of those, writes the pinned client sent after the new master was writable (the ones before were in flight). */
  staleSentAfterWritable?: number
  staleAckedTotal?: number
  /** Last of those acknowledgments, from the new master's first write (ms). */
  staleLastAfterWritableMs?: number
  staleFailures?: Record<string, { count: number; firstMs: number; lastMs: number }>
  /** Stale client's acknowledged writes (any time) missing on the final master. */
  staleLost?: number
  /** ZooKeeper-server freeze: the master changed during the freeze (expected: false). */
  failedOver?: boolean
  /** ZooKeeper-server freeze: ms during which two Redis servers acknowledged writes (old after the new one's first). */
  twoWritersMs?: number
  /** Frozen cases: SIGCONT, from the fault. */
  resumedMs?: number
  /** Frozen cases: the old master replicating from the new one with its link up, from SIGCONT. */
  rejoinAfterResumeMs?: number
  /** Handover: the SIGTERMed dictator's exit, from the fault. */
  dictatorExitMs?: number
  /** Every change discovery saw during the round, from the fault. */
  discoveryHistory?: Array<{ ms: number; master: string | null }>
  /** Restoring the topology after the round (restart, convergence, settle), ms. */
  restoreMs?: number
  /** VmRSS (kB) of each dictator or sentinel process at the end of the round. */
  rssKb?: Record<string, number>
  /** Tails of the processes' logs, kept for failed rounds. */
  logs?: Record<string, string>
}

export interface Stat {
  readonly n: number
  readonly median: number
  readonly min: number
  readonly max: number
}

export const stat = (values: ReadonlyArray<number>): Stat | undefined => {
  if (values.length === 0) return undefined
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  return { n: s.length, median, min: s[0]!, max: s[s.length - 1]! }
}

type MeasureKey =
  | "writableMs"
  | "discoveredMs"
  | "linkedMs"
  | "lost"
  | "staleAfterWritable"
  | "staleSentAfterWritable"
  | "staleLastAfterWritableMs"
  | "maxGapMs"
  | "rejoinAfterResumeMs"
  | "twoWritersMs"

interface Measure {
  readonly key: MeasureKey
  readonly label: string
  readonly unit: "ms" | "writes"
  readonly only?: (c: CaseId) => boolean
}

const frozen = (c: CaseId) => c.endsWith("frozen")

export const MEASURES: ReadonlyArray<Measure> = [
  { key: "writableMs", label: "(a) new master writable", unit: "ms" },
  { key: "discoveredMs", label: "    discovery names it", unit: "ms" },
  { key: "linkedMs", label: "(b) other replicas linked", unit: "ms" },
  { key: "lost", label: "(c) acked writes lost", unit: "writes" },
  { key: "staleAfterWritable", label: "(d) old-master acks after new writable", unit: "writes", only: frozen },
  { key: "staleSentAfterWritable", label: "    of writes sent after new writable", unit: "writes", only: frozen },
  { key: "staleLastAfterWritableMs", label: "    old master's last ack after new writable", unit: "ms", only: frozen },
  { key: "maxGapMs", label: "(e) longest write gap", unit: "ms" },
  { key: "rejoinAfterResumeMs", label: "    old master rejoined after SIGCONT", unit: "ms", only: frozen },
  { key: "twoWritersMs", label: "    two writable masters", unit: "ms", only: (c) => c === "dictator-zookeeper-frozen" }
]

export interface CaseSummary {
  readonly title: string
  readonly rounds: number
  readonly ok: number
  readonly failed: ReadonlyArray<{ readonly round: number; readonly error: string }>
  readonly measures: Partial<Record<MeasureKey, Stat>>
}

export const summarize = (rounds: ReadonlyArray<RoundResult>, cases: ReadonlyArray<CaseId>): Record<string, CaseSummary> => {
  const out: Record<string, CaseSummary> = {}
  for (const c of cases) {
    const mine = rounds.filter((r) => r.case === c)
    const ok = mine.filter((r) => r.ok)
    const measures: Partial<Record<MeasureKey, Stat>> = {}
    for (const m of MEASURES) {
      if (m.only !== undefined && !m.only(c)) continue
      const s = stat(ok.map((r) => r[m.key]).filter((v): v is number => typeof v === "number"))
      if (s !== undefined) measures[m.key] = s
    }
    out[c] = {
      title: CASE_TITLES[c],
      rounds: mine.length,
      ok: ok.length,
      failed: mine.filter((r) => !r.ok).map((r) => ({ round: r.round, error: r.error ?? "?" })),
      measures
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Comparison and targets
// ---------------------------------------------------------------------------------------------

export interface Comparison {
  readonly what: string
  readonly dictator?: number
  readonly sentinel?: number
  /** dictator / sentinel, of the medians. */
  readonly ratio?: number
  readonly unit: "ms" | "writes"
}

const median = (s: Record<string, CaseSummary>, c: CaseId, k: MeasureKey) => s[c]?.measures[k]?.median

export const compare = (s: Record<string, CaseSummary>): Array<Comparison> => {
  const rows: Array<[string, CaseId, CaseId, MeasureKey, "ms" | "writes"]> = [
    ["Redis killed: new master writable (a)", "dictator-redis-killed", "sentinel-redis-killed", "writableMs", "ms"],
    ["Redis killed: other replicas linked (b)", "dictator-redis-killed", "sentinel-redis-killed", "linkedMs", "ms"],
    ["Redis killed: acked writes lost (c)", "dictator-redis-killed", "sentinel-redis-killed", "lost", "writes"],
    ["Redis killed: longest write gap (e)", "dictator-redis-killed", "sentinel-redis-killed", "maxGapMs", "ms"],
    ["Host frozen: new master writable (a)", "dictator-host-frozen", "sentinel-master-frozen", "writableMs", "ms"],
    ["Host frozen: other replicas linked (b)", "dictator-host-frozen", "sentinel-master-frozen", "linkedMs", "ms"],
    ["Host frozen: acked writes lost (c)", "dictator-host-frozen", "sentinel-master-frozen", "lost", "writes"],
    ["Host frozen: old-master acks after new writable (d)", "dictator-host-frozen", "sentinel-master-frozen", "staleAfterWritable", "writes"],
    ["Host frozen: ... of writes sent after new writable", "dictator-host-frozen", "sentinel-master-frozen", "staleSentAfterWritable", "writes"],
    ["Host frozen: longest write gap (e)", "dictator-host-frozen", "sentinel-master-frozen", "maxGapMs", "ms"]
  ]
  return rows.flatMap(([what, d, sn, k, unit]) => {
    const dv = median(s, d, k)
    const sv = median(s, sn, k)
    if (dv === undefined && sv === undefined) return []
    return [
      {
        what,
        unit,
        ...(dv === undefined ? {} : { dictator: dv }),
        ...(sv === undefined ? {} : { sentinel: sv }),
        ...(dv !== undefined && sv !== undefined && sv !== 0 ? { ratio: dv / sv } : {})
      }
    ]
  })
}

export interface Target {
  readonly what: string
  readonly limit: string
  readonly value?: number
  readonly unit: "ms" | "writes"
  readonly met?: boolean
}

export const targets = (s: Record<string, CaseSummary>): Array<Target> => {
  const t = (what: string, c: CaseId, k: MeasureKey, which: "median" | "max", limit: number, unit: "ms" | "writes"): Array<Target> => {
    if (s[c] === undefined) return []
    const v = s[c].measures[k]?.[which]
    return [{
      what: `${what} (${which})`,
      limit: `<= ${limit}${unit === "ms" ? " ms" : ""}`,
      unit,
      ...(v === undefined ? {} : { value: v, met: v <= limit })
    }]
  }
  return [
    ...t("Redis killed: new master writable", "dictator-redis-killed", "writableMs", "median", 200, "ms"),
    ...t("Host killed: new master writable", "dictator-host-killed", "writableMs", "median", 1000, "ms"),
    ...t("Host frozen: new master writable", "dictator-host-frozen", "writableMs", "median", 2000, "ms"),
    ...t("Host frozen: old-master acks after new writable", "dictator-host-frozen", "staleAfterWritable", "max", 0, "writes"),
    ...t("Host frozen: ... of writes sent after new writable", "dictator-host-frozen", "staleSentAfterWritable", "max", 0, "writes"),
    ...t("Handover: writes blocked", "dictator-handover", "maxGapMs", "median", 500, "ms"),
    ...t("Handover: writes blocked", "dictator-handover", "maxGapMs", "max", 500, "ms"),
    ...t("Handover: acked writes lost", "dictator-handover", "lost", "max", 0, "writes"),
    ...t("Switchover: writes blocked", "dictator-switchover", "maxGapMs", "median", 500, "ms"),
    ...t("Switchover: writes blocked", "dictator-switchover", "maxGapMs", "max", 500, "ms"),
    ...t("Switchover: acked writes lost", "dictator-switchover", "lost", "max", 0, "writes")
  ]
}

// ---------------------------------------------------------------------------------------------
// The printed table
// ---------------------------------------------------------------------------------------------

const fmt = (v: number | undefined, unit: "ms" | "writes"): string =>
  v === undefined ? "-" : unit === "ms" ? `${Math.round(v)} ms` : String(Math.round(v * 10) / 10)

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const lpad = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)

export interface MemoryLine {
  readonly what: string
  readonly pid?: number
  readonly rssKb?: number
  readonly hwmKb?: number
  readonly note?: string
}

export const table = (
  s: Record<string, CaseSummary>,
  comparisons: ReadonlyArray<Comparison>,
  goals: ReadonlyArray<Target>,
  memory: ReadonlyArray<MemoryLine>
): string => {
  const lines: Array<string> = []
  const W = 44
  lines.push(`${pad("measure", W)}${lpad("median", 10)}${lpad("min", 10)}${lpad("max", 10)}`)
  for (const [id, c] of Object.entries(s)) {
    lines.push("")
    lines.push(`${c.title} [${id}] — ${c.ok}/${c.rounds} rounds ok`)
    for (const m of MEASURES) {
      const v = c.measures[m.key]
      if (v === undefined) continue
      lines.push(`  ${pad(m.label, W - 2)}${lpad(fmt(v.median, m.unit), 10)}${lpad(fmt(v.min, m.unit), 10)}${lpad(fmt(v.max, m.unit), 10)}`)
    }
    for (const f of c.failed) lines.push(`  round ${f.round} FAILED: ${f.error.split("\n")[0]!.slice(0, 160)}`)
  }
  if (comparisons.length > 0) {
    lines.push("")
    lines.push(`${pad("Dictator vs Sentinel (medians)", 56)}${lpad("Dictator", 11)}${lpad("Sentinel", 11)}${lpad("D/S", 8)}`)
    for (const c of comparisons) {
      const ratio = c.ratio === undefined ? "-" : c.ratio < 0.01 && c.ratio > 0 ? c.ratio.toExponential(1) : c.ratio.toFixed(2)
      lines.push(`  ${pad(c.what, 54)}${lpad(fmt(c.dictator, c.unit), 11)}${lpad(fmt(c.sentinel, c.unit), 11)}${lpad(ratio, 8)}`)
    }
  }
  if (goals.length > 0) {
    lines.push("")
    lines.push("Targets (reported, not asserted)")
    for (const g of goals) {
      const verdict = g.met === undefined ? "n/a" : g.met ? "met" : "NOT met"
      lines.push(`  ${pad(g.what, 56)}${lpad(g.limit, 10)}${lpad(fmt(g.value, g.unit), 10)}  ${verdict}`)
    }
  }
  if (memory.length > 0) {
    lines.push("")
    lines.push("Memory (VmRSS / VmHWM from /proc/<pid>/status)")
    for (const m of memory) {
      const mb = (kb?: number) => (kb === undefined ? "-" : `${(kb / 1024).toFixed(1)} MB`)
      lines.push(`  ${pad(m.what, 30)}${lpad(mb(m.rssKb), 10)} /${lpad(mb(m.hwmKb), 10)}${m.note === undefined ? "" : `  (${m.note})`}`)
    }
  }
  return lines.join("\n")
}
