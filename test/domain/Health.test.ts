import { describe, expect, it } from "@effect/vitest"
import type { CheckResult, HealthState } from "../../src/domain/Health.js"
import { nextHealth } from "../../src/domain/Health.js"
import { closed, commandError, fail, loading, masterInfo, ok, refused, replicaInfo, timeout } from "./fixtures.js"

describe("nextHealth", () => {
  const opts = { downAfterMs: 1000 }
  type Step = { readonly at: number; readonly result: CheckResult; readonly expect: Partial<Record<string, unknown>> & { _tag: HealthState["_tag"] } }

  const run = (steps: ReadonlyArray<Step>, start: HealthState = { _tag: "Unknown" }) => {
    let h = start
    steps.forEach((step, i) => {
      h = nextHealth(h, step.result, step.at, opts)
      expect({ step: i, ...h }).toMatchObject({ step: i, ...step.expect })
    })
    return h
  }

  const info = masterInfo({ offset: 4242 })
  const healthy: HealthState = { _tag: "Healthy", info, at: 0 }

  const scenarios: ReadonlyArray<{ readonly name: string; readonly start?: HealthState; readonly steps: ReadonlyArray<Step> }> = [
    {
      name: "refused from Healthy is Down at once",
      start: healthy,
      steps: [{ at: 100, result: fail(refused), expect: { _tag: "Down", since: 100, detail: refused.message } }]
    },
    {
      name: "refused from Unknown is Down at once",
      steps: [{ at: 5, result: fail(refused), expect: { _tag: "Down", since: 5 } }]
    },
    {
      name: "refused after a Suspect keeps the Suspect's since",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 200, result: fail(refused), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "closed is Suspect (keeping the last info), then Down on the second",
      start: healthy,
      steps: [
        { at: 100, result: fail(closed), expect: { _tag: "Suspect", since: 100, detail: closed.message, info } },
        { at: 200, result: fail(closed), expect: { _tag: "Down", since: 100, detail: closed.message } },
        { at: 300, result: fail(closed), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "closed from Unknown is Suspect without info",
      steps: [{ at: 10, result: fail(closed), expect: { _tag: "Suspect", since: 10, info: null } }]
    },
    {
      name: "closed after a timeout Suspect is Down",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 150, result: fail(closed), expect: { _tag: "Down", since: 100 } }
      ]
    },
    {
      name: "timeouts are Suspect until downAfterMs, then Down, since kept across",
      start: healthy,
      steps: [
        { at: 1000, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info, detail: timeout.message } },
        { at: 1250, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info } },
        { at: 1999, result: fail(timeout), expect: { _tag: "Suspect", since: 1000, info } },
        { at: 2000, result: fail(timeout), expect: { _tag: "Down", since: 1000, detail: `${timeout.message} for 1000 ms` } },
        { at: 2500, result: fail(timeout), expect: { _tag: "Down", since: 1000, detail: timeout.message } }
      ]
    },
    {
      name: "timeouts from Unknown are Suspect without info",
      steps: [
        { at: 0, result: fail(timeout), expect: { _tag: "Suspect", since: 0, info: null } },
        { at: 999, result: fail(timeout), expect: { _tag: "Suspect", since: 0, info: null } },
        { at: 1000, result: fail(timeout), expect: { _tag: "Down", since: 0 } }
      ]
    },
    {
      name: "a success in between restarts the timeout clock",
      start: healthy,
      steps: [
        { at: 100, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 900, result: fail(timeout), expect: { _tag: "Suspect", since: 100 } },
        { at: 1000, result: ok(info), expect: { _tag: "Healthy", at: 1000, info } },
        { at: 1100, result: fail(timeout), expect: { _tag: "Suspect", since: 1100 } },
        { at: 2099, result: fail(timeout), expect: { _tag: "Suspect", since: 1100 } },
        { at: 2100, result: fail(timeout), expect: { _tag: "Down", since: 1100 } }
      ]
    },
    {
      name: "Loading keeps its since while it lasts, success ends it",
      start: healthy,
      steps: [
        { at: 100, result: fail(loading), expect: { _tag: "Loading", since: 100 } },
        { at: 5000, result: fail(loading), expect: { _tag: "Loading", since: 100 } },
        { at: 6000, result: ok(info), expect: { _tag: "Healthy", at: 6000 } }
      ]
    },
    {
      name: "Loading after Down starts a new since",
      start: { _tag: "Down", since: 10, detail: "x" },
      steps: [{ at: 500, result: fail(loading), expect: { _tag: "Loading", since: 500 } }]
    },
    {
      name: "a success resets Down to Healthy",
      start: { _tag: "Down", since: 10, detail: "x" },
      steps: [
        { at: 500, result: ok(info), expect: { _tag: "Healthy", at: 500, info } },
        { at: 600, result: fail(closed), expect: { _tag: "Suspect", since: 600, info } }
      ]
    },
    {
      name: "a success resets Suspect to Healthy",
      start: { _tag: "Suspect", since: 10, detail: "x", info: null },
      steps: [{ at: 20, result: ok(info), expect: { _tag: "Healthy", at: 20, info } }]
    },
    {
      name: "a command error is Down at once",
      start: healthy,
      steps: [{ at: 100, result: fail(commandError), expect: { _tag: "Down", since: 100, detail: commandError.message } }]
    },
    {
      name: "a command error keeps a Suspect's since",
      start: { _tag: "Suspect", since: 42, detail: "x", info: null },
      steps: [{ at: 100, result: fail(commandError), expect: { _tag: "Down", since: 42 } }]
    },
    {
      name: "Down stays Down on timeouts with its first since",
      start: { _tag: "Down", since: 7, detail: "refused" },
      steps: [{ at: 100, result: fail(timeout), expect: { _tag: "Down", since: 7, detail: timeout.message } }]
    }
  ]

  it.each(scenarios)("$name", ({ start, steps }) => {
    run(steps, start)
  })

  it("downAfterMs 0 makes the first timeout Down", () => {
    expect(nextHealth(healthy, fail(timeout), 50, { downAfterMs: 0 })).toMatchObject({ _tag: "Down", since: 50 })
  })

  it("Healthy carries the latest info", () => {
    const other = replicaInfo("10.0.0.1", 6379, { offset: 99 })
    expect(nextHealth(healthy, ok(other), 123, opts)).toEqual({ _tag: "Healthy", info: other, at: 123 })
  })
})

// ---------------------------------------------------------------------------------------------

