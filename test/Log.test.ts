import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Logger } from "effect"
import * as Log from "../src/Log.js"

/** Runs `program` with the operator logger in `format`, returning the lines it wrote. */
const capture = (format: "logfmt" | "json", program: Effect.Effect<void>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const sink = Logger.map(Log.logger(format), (line) => {
      lines.push(line)
    })
    yield* program.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, sink)))
    return lines
  })

const plain = Effect.logInfo("dictator 0.2.0 for service demo")
const annotated = Effect.logWarning("fencing: pausing writes").pipe(Effect.annotateLogs({ loop: "controller" }))
const withCause = Effect.logError("fiber health stopped", Cause.fail(new Error("boom"))).pipe(
  Effect.annotateLogs({ loop: "health" })
)

describe("operator logs", () => {
  it.effect("logfmt: time, level, message, annotations; no fiber id", () =>
    Effect.gen(function* () {
      const [a, b, c] = yield* capture("logfmt", Effect.all([plain, annotated, withCause], { discard: true }))
      expect(a).toMatch(/^timestamp=\S+Z level=INFO message="dictator 0\.2\.0 for service demo"$/)
      expect(b).toMatch(/^timestamp=\S+ level=WARN message="fencing: pausing writes" loop=controller$/)
      expect(c).toMatch(/^timestamp=\S+ level=ERROR message="fiber health stopped" cause=".*boom.*" loop=health$/)
      for (const line of [a, b, c]) expect(line).not.toMatch(/fiber=|#\d+/)
    })
  )

  it.effect("JSON: no fiber id, no empty annotations or spans; present when set", () =>
    Effect.gen(function* () {
      const lines = yield* capture(
        "json",
        Effect.all([plain, annotated, withCause, Effect.logInfo("x").pipe(Effect.withLogSpan("handover"))], { discard: true })
      )
      const [a, b, c, d] = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(Object.keys(a!).sort()).toEqual(["logLevel", "message", "timestamp"])
      expect(a).toMatchObject({ logLevel: "INFO", message: "dictator 0.2.0 for service demo" })
      expect(b).toMatchObject({ logLevel: "WARN", annotations: { loop: "controller" } })
      expect(b).not.toHaveProperty("spans")
      expect(c).toMatchObject({ logLevel: "ERROR", annotations: { loop: "health" } })
      expect(String(c!["cause"])).toContain("boom")
      expect(d).toMatchObject({ logLevel: "INFO", spans: { handover: expect.any(Number) } })
      expect(d).not.toHaveProperty("annotations")
      for (const line of lines) expect(line).not.toMatch(/fiberId|"#\d+"/)
    })
  )
})
