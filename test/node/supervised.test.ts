import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, HashMap, Logger, Option, Ref, Scope, TestClock } from "effect"
import { supervised } from "../../src/node/supervised.js"

describe("supervised", () => {
  it.scoped("a loop that fails or dies is logged with its name and started again; closing its scope stops it", () =>
    Effect.gen(function* () {
      const runs = yield* Ref.make(0)
      const lines: Array<string> = []
      const logger = Logger.make(({ annotations, message }) => {
        lines.push(`${Option.getOrElse(HashMap.get(annotations, "loop"), () => "")}: ${String(message)}`)
      })
      const scope = yield* Scope.make()
      const loop = Effect.flatMap(Ref.updateAndGet(runs, (n) => n + 1), (n) =>
        n === 1 ? Effect.fail("boom") : n === 2 ? Effect.die("defect") : Effect.never
      )
      yield* supervised("worker")(loop).pipe(
        Scope.extend(scope),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      yield* TestClock.adjust("1 second")
      yield* TestClock.adjust("1 second")
      expect(yield* Ref.get(runs)).toBe(3)
      expect(lines.filter((l) => l.startsWith("worker: loop worker stopped; restarting"))).toHaveLength(2)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Ref.get(runs)).toBe(3)
    })
  )
})
