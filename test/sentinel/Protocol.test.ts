import { describe, expect, it } from "vitest"
import * as P from "../../src/sentinel/Protocol.js"

const feedAll = (chunks: ReadonlyArray<Uint8Array | string>, limits?: P.Limits) => {
  const parser = new P.RequestParser(limits)
  const commands: Array<ReadonlyArray<string>> = []
  let error: string | null = null
  for (const c of chunks) {
    const r = parser.feed(typeof c === "string" ? Buffer.from(c, "utf8") : c)
    commands.push(...r.commands)
    if (r._tag === "Error") {
      error = r.message
      break
    }
  }
  return { commands, error, parser }
}

const multibulk = (...args: ReadonlyArray<string>) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`

/** A small seeded PRNG (mulberry32): the fuzz cases are the same on every run. */
const rng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

describe("RequestParser", () => {
  it("reads multibulk commands, several per chunk", () => {
    const r = feedAll([multibulk("SENTINEL", "get-master-addr-by-name", "svc") + multibulk("PING")])
    expect(r.error).toBeNull()
    expect(r.commands).toEqual([["SENTINEL", "get-master-addr-by-name", "svc"], ["PING"]])
    expect(r.parser.pending).toBe(false)
    expect(r.parser.buffered).toBe(0)
  })

  it("reads inline commands with quotes, as redis-cli and telnet send them", () => {
    const r = feedAll(['PING\r\nSENTINEL  masters\nCLIENT SETNAME "a b\\x41" \'it\\\'s\'\r\n\r\n'])
    expect(r.error).toBeNull()
    expect(r.commands).toEqual([["PING"], ["SENTINEL", "masters"], ["CLIENT", "SETNAME", "a bA", "it's"]])
  })

  it("skips empty multibulks and keeps binary-safe arguments", () => {
    const r = feedAll(["*0\r\n*-1\r\n" + multibulk("ECHO", "a\r\nb")])
    expect(r.commands).toEqual([["ECHO", "a\r\nb"]])
  })

  it.each([
    ["an unbalanced quote", 'PING "abc\r\n', "unbalanced quotes in request"],
    ["a closing quote followed by text", 'PING "a"b\r\n', "unbalanced quotes in request"],
    ["a non-number multibulk length", "*x\r\n", "invalid multibulk length"],
    ["too many arguments", "*65\r\n", "invalid multibulk length"],
    ["a missing $", "*1\r\n+PING\r\n", "expected '$', got '+'"],
    ["a negative bulk length", "*1\r\n$-1\r\n", "invalid bulk length"],
    ["a bulk over 64 KiB", `*1\r\n$${64 * 1024 + 1}\r\n`, "invalid bulk length"],
    ["a bad bulk terminator", "*1\r\n$4\r\nPINGxx", "invalid bulk terminator"],
    ["a header line without end", `*${"1".repeat(40)}`, "invalid multibulk length"],
    ["an inline line over 64 KiB", "A".repeat(64 * 1024 + 10), "too big inline request"]
  ])("rejects %s", (_, input, message) => {
    const r = feedAll([input])
    expect(r.error).toBe(message)
    expect(r.parser.buffered).toBe(0)
    // Once failed, it stays failed: the connection is closed after the error.
    expect(r.parser.feed(Buffer.from("PING\r\n"))._tag).toBe("Error")
  })

  it("bounds one command's total size, parsed arguments included", () => {
    const arg = "x".repeat(40 * 1024)
    const r = feedAll([`*3\r\n$${arg.length}\r\n${arg}\r\n$${arg.length}\r\n${arg}\r\n`])
    expect(r.error).toBe("too big request")
  })

  it("returns the commands completed before an error", () => {
    const r = feedAll([multibulk("PING") + "*1\r\n$-5\r\n"])
    expect(r.commands).toEqual([["PING"]])
    expect(r.error).toBe("invalid bulk length")
  })

  const valid = [
    multibulk("HELLO", "3", "AUTH", "default", "secret", "SETNAME", "app"),
    multibulk("SENTINEL", "get-master-addr-by-name", "svc"),
    multibulk("SUBSCRIBE", "+switch-master", "+sdown"),
    multibulk("PSUBSCRIBE", "[-+]sdown", "*"),
    multibulk("CLIENT", "SETINFO", "LIB-NAME", "ioredis é"),
    "PING\r\n",
    "ROLE\n",
    multibulk("QUIT")
  ].join("")
  const expected = feedAll([valid]).commands

  it("parses a stream split at every byte boundary the same as whole", () => {
    expect(expected).toHaveLength(8)
    const bytes = Buffer.from(valid, "utf8")
    for (let i = 0; i <= bytes.length; i++) {
      expect(feedAll([bytes.subarray(0, i), bytes.subarray(i)]).commands).toEqual(expected)
    }
    // And one byte at a time.
    expect(feedAll([...bytes].map((b) => Uint8Array.of(b))).commands).toEqual(expected)
  })

  it("fuzz: random, mutated and truncated frames never throw and never buffer past the bound", () => {
    const random = rng(0xd1c7a70)
    const limits: P.Limits = { maxArgs: 16, maxArgBytes: 1024, maxInlineBytes: 1024, maxRequestBytes: 4096 }
    const alphabet = ["*", "$", "\r", "\n", "\r\n", "-", "0", "1", "9", "64", " ", '"', "'", "\\", "x", "A", "PING", "\0", "\xff"]
    const base = Buffer.from(valid, "utf8")
    for (let round = 0; round < 3000; round++) {
      let input: Buffer
      const kind = round % 3
      if (kind === 0) {
        // Random tokens from the grammar's alphabet.
        const n = Math.floor(random() * 200)
        input = Buffer.from(Array.from({ length: n }, () => alphabet[Math.floor(random() * alphabet.length)]).join(""), "latin1")
      } else if (kind === 1) {
        // A valid stream with a few bytes flipped.
        input = Buffer.from(base)
        for (let k = 0; k < 1 + Math.floor(random() * 4); k++) input[Math.floor(random() * input.length)] = Math.floor(random() * 256)
      } else {
        // A valid stream truncated, or random bytes.
        input =
          random() < 0.5
            ? base.subarray(0, Math.floor(random() * base.length))
            : Buffer.from(Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
      }
      const parser = new P.RequestParser(limits)
      let at = 0
      while (at < input.length) {
        const size = 1 + Math.floor(random() * 40)
        const r = parser.feed(input.subarray(at, at + size))
        at += size
        expect(parser.buffered).toBeLessThanOrEqual(limits.maxRequestBytes)
        for (const cmd of r.commands) {
          expect(cmd.length).toBeGreaterThan(0)
          expect(cmd.length).toBeLessThanOrEqual(limits.maxArgs)
        }
        if (r._tag === "Error") break
      }
    }
  })

  it("a huge declared bulk does not make it buffer more than the bound", () => {
    const parser = new P.RequestParser()
    expect(parser.feed(Buffer.from("*2\r\n$4\r\nPING\r\n$65536\r\n"))._tag).toBe("Ok")
    let last: P.FeedResult = { _tag: "Ok", commands: [] }
    for (let i = 0; i < 64 && last._tag === "Ok"; i++) last = parser.feed(Buffer.alloc(1024, 0x61))
    expect(last._tag).toBe("Ok")
    expect(parser.buffered).toBeLessThanOrEqual(P.defaultLimits.maxRequestBytes)
    const done = parser.feed(Buffer.from("\r\n"))
    expect(done._tag).toBe("Ok")
    expect(done.commands.map((c) => [c[0], c[1]?.length])).toEqual([["PING", 65536]])
  })
})

describe("encode", () => {
  const rec = P.record([["name", "svc"], ["port", "6379"]])
  it.each<[string, P.Reply, string, string]>([
    ["simple", P.ok, "+OK\r\n", "+OK\r\n"],
    ["error, one line", P.error("ERR a\r\nb"), "-ERR a b\r\n", "-ERR a b\r\n"],
    ["integer", P.integer(3), ":3\r\n", ":3\r\n"],
    ["bulk, utf-8 length", P.bulk("é"), "$2\r\né\r\n", "$2\r\né\r\n"],
    ["null bulk", P.nullBulk, "$-1\r\n", "_\r\n"],
    ["null array", P.nullArray, "*-1\r\n", "_\r\n"],
    ["array", P.array([P.bulk("a"), P.integer(1)]), "*2\r\n$1\r\na\r\n:1\r\n", "*2\r\n$1\r\na\r\n:1\r\n"],
    ["record", rec, "*4\r\n$4\r\nname\r\n$3\r\nsvc\r\n$4\r\nport\r\n$4\r\n6379\r\n", "%2\r\n$4\r\nname\r\n$3\r\nsvc\r\n$4\r\nport\r\n$4\r\n6379\r\n"],
    ["push", P.push([P.bulk("message")]), "*1\r\n$7\r\nmessage\r\n", ">1\r\n$7\r\nmessage\r\n"]
  ])("%s", (_, reply, resp2, resp3) => {
    expect(P.encode(reply, 2).toString("utf8")).toBe(resp2)
    expect(P.encode(reply, 3).toString("utf8")).toBe(resp3)
  })
})

describe("globMatch (Redis rules)", () => {
  it.each<[string, string, boolean]>([
    ["*", "+switch-master", true],
    ["+switch-master", "+switch-master", true],
    ["switch-master", "+switch-master", false],
    ["[-+]sdown", "+sdown", true],
    ["[-+]sdown", "-sdown", true],
    ["[-+]sdown", "+odown", false],
    ["[^+]sdown", "-sdown", true],
    ["[^+]sdown", "+sdown", false],
    ["+s?own", "+sdown", true],
    ["*down", "-odown", true],
    ["+*-*", "+switch-master", true],
    ["+*-*", "+sdown", false],
    ["[a-c]x", "bx", true],
    ["[c-a]x", "bx", true],
    ["\\*", "*", true],
    ["\\*", "a", false],
    ["a*b*c", "aXbYc", true],
    ["a*b*c", "aXbY", false],
    ["", "", true],
    ["", "a", false]
  ])("%s ~ %s = %s", (pattern, text, result) => {
    expect(P.globMatch(pattern, text)).toBe(result)
  })

  it("costs no more than pattern × text on star-heavy patterns", () => {
    const pattern = "*a".repeat(2000) + "b"
    const text = "a".repeat(5000)
    const start = Date.now()
    expect(P.globMatch(pattern, text)).toBe(false)
    expect(Date.now() - start).toBeLessThan(5000)
  })
})
