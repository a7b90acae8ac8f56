import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { VERSION } from "../src/Version.js"

describe("VERSION", () => {
  it("equals package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: unknown }
    expect(typeof pkg.version).toBe("string")
    expect(VERSION).toBe(pkg.version)
  })

  it("is a semantic version", () => {
    expect(VERSION).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/)
  })
})
