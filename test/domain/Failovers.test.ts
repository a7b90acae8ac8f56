import { describe, expect, it } from "@effect/vitest"
import { type FailoverSeen, type FailoverState, initialFailovers, onMasterView, onVote } from "../../src/domain/Failovers.js"
import type { MasterView } from "../../src/domain/Records.js"

const present = (epoch: string): MasterView => ({
  _tag: "Present",
  record: { name: `m${epoch}`, host: "10.0.0.1", port: 6379 },
  version: 0,
  epoch,
  owner: "abc",
  epochVersion: null
})
const absent: MasterView = { _tag: "Absent" }

type Step = readonly ["view", MasterView, number] | readonly ["vote", string | null, number]

const run = (steps: ReadonlyArray<Step>) => {
  let s: FailoverState = initialFailovers
  const seen: Array<FailoverSeen> = []
  for (const st of steps) {
    if (st[0] === "view") {
      const [next, f] = onMasterView(s, st[1], st[2])
      s = next
      if (f !== null) seen.push(f)
    } else s = onVote(s, st[1], st[2])
  }
  return seen
}

describe("failovers as one node sees them", () => {
  it.each<[string, ReadonlyArray<Step>, ReadonlyArray<FailoverSeen>]>([
    ["the first master seen is no failover", [["view", absent, 0], ["view", present("1"), 10]], []],
    ["the same epoch again is nothing", [["view", present("1"), 0], ["view", present("1"), 50]], []],
    ["znode gone, then a new master: timed from the loss", [["view", present("1"), 0], ["view", absent, 1000], ["view", present("2"), 1400]], [{ epoch: "2", durationMs: 400 }]],
    [
      "our vote came before the znode went: timed from the vote",
      [["view", present("1"), 0], ["vote", "1", 500], ["view", absent, 1000], ["view", present("2"), 1400]],
      [{ epoch: "2", durationMs: 900 }]
    ],
    ["a vote against another epoch does not start the clock", [["view", present("1"), 0], ["vote", "0", 500], ["view", present("2"), 1400]], [{ epoch: "2", durationMs: null }]],
    [
      "two failovers in a row",
      [["view", present("1"), 0], ["view", absent, 100], ["view", present("2"), 300], ["view", absent, 1000], ["view", present("3"), 1100]],
      [{ epoch: "2", durationMs: 200 }, { epoch: "3", durationMs: 100 }]
    ]
  ])("%s", (_, steps, want) => {
    expect(run(steps)).toEqual(want)
  })
})
