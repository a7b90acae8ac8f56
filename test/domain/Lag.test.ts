import { describe, expect, it } from "@effect/vitest"
import { addSample, emptyHistory, lagSeconds, MAX_SAMPLES, type OffsetHistory, prune } from "../../src/domain/Lag.js"

const history = (samples: ReadonlyArray<readonly [number, number]>, replid = "r1"): OffsetHistory =>
  samples.reduce<OffsetHistory>((h, [at, offset]) => addSample(h, replid, { at, offset }), emptyHistory)

describe("lag in seconds from the master's offsets over time", () => {
  it.each<[string, ReadonlyArray<readonly [number, number]>, number, number, unknown]>([
    ["no sample yet", [], 100, 1000, { _tag: "Unknown", reason: "the master's offset was not read yet" }],
    ["caught up with the newest sample", [[0, 10], [100, 20], [200, 30]], 30, 250, { _tag: "Seconds", seconds: 0.05 }],
    ["ahead of the newest sample", [[0, 10], [200, 30]], 45, 300, { _tag: "Seconds", seconds: 0.1 }],
    ["between two samples: the older one bounds it", [[0, 10], [100, 20], [200, 30]], 25, 250, { _tag: "Seconds", seconds: 0.15 }],
    ["exactly at an older sample", [[0, 10], [100, 20], [200, 30]], 20, 1100, { _tag: "Seconds", seconds: 1 }],
    ["behind every sample kept", [[500, 10], [600, 20]], 5, 2500, { _tag: "AtLeast", seconds: 2 }],
    // An idle master: the same offset seen again later moves the bound forward.
    ["idle master, replica caught up", [[0, 10], [1000, 10], [2000, 10]], 10, 2100, { _tag: "Seconds", seconds: 0.1 }]
  ])("%s", (_, samples, replica, now, want) => {
    expect(lagSeconds(history(samples), replica, now)).toEqual(want)
  })

  it("a stalled replica's bound grows with time while the master moves on", () => {
    const h = history([[0, 100], [100, 200], [200, 300]])
    const at = (now: number) => lagSeconds(h, 100, now)
    expect(at(300)).toEqual({ _tag: "Seconds", seconds: 0.3 })
    expect(at(5300)).toEqual({ _tag: "Seconds", seconds: 5.3 })
  })

  it("a new replication id (a new master) or an offset going back starts over", () => {
    const h = history([[0, 100], [100, 200]])
    expect(addSample(h, "r2", { at: 300, offset: 50 }).samples).toEqual([{ at: 300, offset: 50 }])
    expect(addSample(h, "r1", { at: 300, offset: 150 }).samples).toEqual([{ at: 300, offset: 150 }])
  })

  it("keeps a bounded history, and pruning keeps the newest sample the replica has reached", () => {
    let h = emptyHistory
    for (let i = 0; i < MAX_SAMPLES * 2; i++) h = addSample(h, "r1", { at: i, offset: i })
    expect(h.samples.length).toBe(MAX_SAMPLES)
    expect(h.samples[0]).toEqual({ at: MAX_SAMPLES, offset: MAX_SAMPLES })
    const p = prune(h, MAX_SAMPLES + 10)
    expect(p.samples[0]).toEqual({ at: MAX_SAMPLES + 10, offset: MAX_SAMPLES + 10 })
    expect(lagSeconds(p, MAX_SAMPLES + 10, 2000)).toEqual(lagSeconds(h, MAX_SAMPLES + 10, 2000))
  })
})
