/**
 * RESP for a server: a bounded, incremental parser of client requests (multibulk arrays of bulk
 * strings, and inline commands as redis-cli and telnet send them) and an encoder of replies in
 * RESP2 or RESP3. No I/O here.
 *
 * Hand-written rather than `redis-parser` (the parser ioredis uses): that one parses *replies*,
 * has no bounds (a `$2000000000` header makes it wait for and buffer 2 GB), throws on bad input
 * instead of reporting it, and cannot read inline commands. A request is a much smaller grammar.
 */

export interface Limits {
  /** Arguments per command, the command name included. */
  readonly maxArgs: number
  /** Bytes per argument. */
  readonly maxArgBytes: number
  /** Bytes of one inline command line. */
  readonly maxInlineBytes: number
  /** Bytes of one command, whether still buffered or already parsed into arguments. */
  readonly maxRequestBytes: number
}

export const defaultLimits: Limits = {
  maxArgs: 64,
  maxArgBytes: 64 * 1024,
  maxInlineBytes: 64 * 1024,
  maxRequestBytes: 64 * 1024 + 4 * 1024
}

/** A `*N` or `$N` header line is at most this long (sign, 19 digits, CRLF and slack). */
const MAX_HEADER_LINE = 32

export type FeedResult =
  | { readonly _tag: "Ok"; readonly commands: ReadonlyArray<ReadonlyArray<string>> }
  /** The stream cannot be parsed past this point: reply `-ERR Protocol error: …` and close. */
  | { readonly _tag: "Error"; readonly commands: ReadonlyArray<ReadonlyArray<string>>; readonly message: string }

const CR = 13
const LF = 10

/**
 * One connection's request stream. `feed` takes the bytes as they arrive and returns the
 * commands completed by them. Bytes are copied only when an element is complete, so a client
 * sending a frame one byte at a time costs linear work; `buffered` never exceeds the limit.
 */
export class RequestParser {
  private parts: Array<Buffer> = []
  private partsLength = 0
  /** Bytes that must be buffered before trying again (a bulk body), or 0 when unknown. */
  private need = 0
  /** Bytes of `parts` already searched for a line end. */
  private scanned = 0
  /** Arguments of the multibulk being read, or null between commands. */
  private args: Array<string> | null = null
  private expected = 0
  /** Bytes of the arguments of the multibulk being read. */
  private argBytes = 0
  /** Length of the bulk being read, or -1 while its `$` header is awaited. */
  private bulk = -1
  private failed: string | null = null

  constructor(private readonly limits: Limits = defaultLimits) {}

  /** Bytes held for an incomplete command: raw bytes and arguments already parsed. */
  get buffered(): number {
    return this.partsLength + this.argBytes
  }

  /** True while a command has started and is not complete. */
  get pending(): boolean {
    return this.partsLength > 0 || this.args !== null
  }

  feed(chunk: Uint8Array): FeedResult {
    const commands: Array<ReadonlyArray<string>> = []
    if (this.failed !== null) return { _tag: "Error", commands, message: this.failed }
    if (chunk.length === 0) return { _tag: "Ok", commands }
    this.parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))
    this.partsLength += chunk.length
    const error = this.run(commands)
    if (error !== null) {
      this.failed = error
      this.parts = []
      this.partsLength = 0
      return { _tag: "Error", commands, message: error }
    }
    if (this.partsLength + this.argBytes > this.limits.maxRequestBytes) {
      this.failed = "too big request"
      this.parts = []
      this.partsLength = 0
      return { _tag: "Error", commands, message: this.failed }
    }
    return { _tag: "Ok", commands }
  }

  private joined(): Buffer {
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts, this.partsLength)]
    return this.parts[0] ?? Buffer.alloc(0)
  }

  private consume(n: number): void {
    const buf = this.joined().subarray(n)
    this.parts = buf.length === 0 ? [] : [buf]
    this.partsLength = buf.length
    this.scanned = 0
    this.need = 0
  }

  /** Index of the first LF, searching only bytes not searched before; -1 when none yet. */
  private lineEnd(): number {
    if (this.partsLength === 0) return -1
    const buf = this.joined()
    const at = buf.indexOf(LF, this.scanned)
    this.scanned = at === -1 ? buf.length : this.scanned
    return at
  }

  /** A `*N`/`$N` header line: the integer, "incomplete", or an error message. */
  private header(kind: "multibulk" | "bulk"): number | "incomplete" | { readonly error: string } {
    const end = this.lineEnd()
    if (end === -1) {
      return this.partsLength > MAX_HEADER_LINE ? { error: `invalid ${kind} length` } : "incomplete"
    }
    const buf = this.joined()
    if (end > MAX_HEADER_LINE || end < 2 || buf[end - 1] !== CR) return { error: `invalid ${kind} length` }
    const text = buf.toString("latin1", 1, end - 1)
    if (!/^-?\d{1,18}$/.test(text)) return { error: `invalid ${kind} length` }
    this.consume(end + 1)
    return Number(text)
  }

  private run(out: Array<ReadonlyArray<string>>): string | null {
    for (;;) {
      if (this.need > 0 && this.partsLength < this.need) return null
      if (this.args === null) {
        if (this.partsLength === 0) return null
        const first = this.joined()[0]
        if (first === 0x2a /* * */) {
          const n = this.header("multibulk")
          if (n === "incomplete") return null
          if (typeof n !== "number") return n.error
          if (n > this.limits.maxArgs) return "invalid multibulk length"
          if (n <= 0) continue
          this.args = []
          this.argBytes = 0
          this.expected = n
          this.bulk = -1
          continue
        }
        const end = this.lineEnd()
        if (end === -1) {
          return this.partsLength > this.limits.maxInlineBytes ? "too big inline request" : null
        }
        if (end > this.limits.maxInlineBytes) return "too big inline request"
        const buf = this.joined()
        const line = buf.toString("utf8", 0, end > 0 && buf[end - 1] === CR ? end - 1 : end)
        this.consume(end + 1)
        const args = splitInline(line)
        if (args === null) return "unbalanced quotes in request"
        if (args.length > this.limits.maxArgs) return "invalid multibulk length"
        if (args.length > 0) out.push(args)
        continue
      }
      if (this.bulk === -1) {
        if (this.partsLength === 0) return null
        const first = this.joined()[0]
        if (first !== 0x24 /* $ */) return `expected '$', got '${String.fromCharCode(first ?? 0)}'`
        const n = this.header("bulk")
        if (n === "incomplete") return null
        if (typeof n !== "number") return n.error
        if (n < 0 || n > this.limits.maxArgBytes) return "invalid bulk length"
        if (this.argBytes + n > this.limits.maxRequestBytes) return "too big request"
        this.bulk = n
        this.need = n + 2
        continue
      }
      const buf = this.joined()
      if (buf[this.bulk] !== CR || buf[this.bulk + 1] !== LF) return "invalid bulk terminator"
      this.args.push(buf.toString("utf8", 0, this.bulk))
      this.argBytes += this.bulk
      this.consume(this.bulk + 2)
      this.bulk = -1
      if (this.args.length === this.expected) {
        out.push(this.args)
        this.args = null
        this.argBytes = 0
      }
    }
  }
}

/**
 * An inline command split as Redis's `sdssplitargs` does: spaces separate, "double quotes" take
 * \n \r \t \b \a \\ \" and \xHH escapes, 'single quotes' take \'. Null on unbalanced quotes or a
 * closing quote not followed by a space.
 */
export const splitInline = (line: string): Array<string> | null => {
  const out: Array<string> = []
  let i = 0
  const n = line.length
  const space = (c: string | undefined) => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\v" || c === "\f"
  while (i < n) {
    while (i < n && space(line[i])) i++
    if (i >= n) break
    let cur = ""
    const quote = line[i] === '"' ? '"' : line[i] === "'" ? "'" : null
    if (quote === null) {
      while (i < n && !space(line[i])) cur += line[i++]
      out.push(cur)
      continue
    }
    i++
    let closed = false
    while (i < n) {
      const c = line[i]!
      if (quote === '"' && c === "\\" && i + 3 < n && line[i + 1] === "x" && /^[0-9a-fA-F]{2}$/.test(line.slice(i + 2, i + 4))) {
        cur += String.fromCharCode(Number.parseInt(line.slice(i + 2, i + 4), 16))
        i += 4
      } else if (c === "\\" && i + 1 < n && (quote === '"' || line[i + 1] === "'")) {
        const e = line[i + 1]!
        cur += quote === "'" ? e : e === "n" ? "\n" : e === "r" ? "\r" : e === "t" ? "\t" : e === "b" ? "\b" : e === "a" ? "\x07" : e
        i += 2
      } else if (c === quote) {
        i++
        if (i < n && !space(line[i])) return null
        closed = true
        break
      } else {
        cur += c
        i++
      }
    }
    if (!closed) return null
    out.push(cur)
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Replies

export type Reply =
  | { readonly _tag: "Simple"; readonly value: string }
  | { readonly _tag: "Error"; readonly value: string }
  | { readonly _tag: "Integer"; readonly value: number }
  | { readonly _tag: "Bulk"; readonly value: string }
  /** RESP2 encodes it as a null bulk (`$-1`) or, with `array`, a null array (`*-1`); RESP3 as `_`. */
  | { readonly _tag: "Null"; readonly array: boolean }
  | { readonly _tag: "Array"; readonly items: ReadonlyArray<Reply> }
  /** RESP2: a flat array of keys and values. */
  | { readonly _tag: "Map"; readonly entries: ReadonlyArray<readonly [Reply, Reply]> }
  /** Out-of-band data (pub/sub): RESP2 sends it as an array. */
  | { readonly _tag: "Push"; readonly items: ReadonlyArray<Reply> }

export const simple = (value: string): Reply => ({ _tag: "Simple", value })
export const error = (value: string): Reply => ({ _tag: "Error", value })
export const integer = (value: number): Reply => ({ _tag: "Integer", value })
export const bulk = (value: string): Reply => ({ _tag: "Bulk", value })
export const nullBulk: Reply = { _tag: "Null", array: false }
export const nullArray: Reply = { _tag: "Null", array: true }
export const array = (items: ReadonlyArray<Reply>): Reply => ({ _tag: "Array", items })
export const push = (items: ReadonlyArray<Reply>): Reply => ({ _tag: "Push", items })
export const ok = simple("OK")

/** A record of string fields: every value a bulk string, as Sentinel sends numbers too. */
export const record = (fields: ReadonlyArray<readonly [string, string]>): Reply => ({
  _tag: "Map",
  entries: fields.map(([k, v]) => [bulk(k), bulk(v)] as const)
})

export type ProtocolVersion = 2 | 3

/** Simple strings and errors cannot hold line breaks: Redis replaces them with spaces. */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ")

const encodeInto = (r: Reply, proto: ProtocolVersion, out: Array<string | Buffer>): void => {
  switch (r._tag) {
    case "Simple":
      out.push(`+${oneLine(r.value)}\r\n`)
      return
    case "Error":
      out.push(`-${oneLine(r.value)}\r\n`)
      return
    case "Integer":
      out.push(`:${Math.trunc(r.value)}\r\n`)
      return
    case "Bulk": {
      const b = Buffer.from(r.value, "utf8")
      out.push(`$${b.length}\r\n`, b, "\r\n")
      return
    }
    case "Null":
      out.push(proto === 3 ? "_\r\n" : r.array ? "*-1\r\n" : "$-1\r\n")
      return
    case "Array":
    case "Push":
      out.push(`${r._tag === "Push" && proto === 3 ? ">" : "*"}${r.items.length}\r\n`)
      for (const item of r.items) encodeInto(item, proto, out)
      return
    case "Map":
      out.push(proto === 3 ? `%${r.entries.length}\r\n` : `*${r.entries.length * 2}\r\n`)
      for (const [k, v] of r.entries) {
        encodeInto(k, proto, out)
        encodeInto(v, proto, out)
      }
      return
  }
}

export const encode = (r: Reply, proto: ProtocolVersion): Buffer => {
  const out: Array<string | Buffer> = []
  encodeInto(r, proto, out)
  return Buffer.concat(out.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : p)))
}

// ---------------------------------------------------------------------------------------------
// Glob patterns, as Redis's stringmatchlen (case-sensitive)

/**
 * Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Iterative with one backtrack point per `*`
 * (the last one), so a pattern full of stars costs O(pattern × text), never exponential.
 */
export const globMatch = (pattern: string, text: string): boolean => {
  let p = 0
  let t = 0
  let starP = -1
  let starT = 0
  while (t < text.length) {
    if (p < pattern.length && pattern[p] === "*") {
      while (p < pattern.length && pattern[p] === "*") p++
      if (p === pattern.length) return true
      starP = p
      starT = t
      continue
    }
    const step = p < pattern.length ? matchOne(pattern, p, text[t]!) : null
    if (step !== null && step.matched) {
      p = step.next
      t++
      continue
    }
    if (starP === -1) return false
    p = starP
    t = ++starT
  }
  while (p < pattern.length && pattern[p] === "*") p++
  return p === pattern.length
}

/** Whether the pattern element at `p` matches `c`, and where the next element starts. */
const matchOne = (pattern: string, p: number, c: string): { readonly matched: boolean; readonly next: number } => {
  const ch = pattern[p]!
  if (ch === "?") return { matched: true, next: p + 1 }
  if (ch === "\\" && p + 1 < pattern.length) return { matched: pattern[p + 1] === c, next: p + 2 }
  if (ch !== "[") return { matched: ch === c, next: p + 1 }
  let i = p + 1
  const not = pattern[i] === "^"
  if (not) i++
  let matched = false
  for (;;) {
    if (i >= pattern.length) {
      // Redis treats an unterminated class as ending at the pattern's end.
      break
    }
    const x = pattern[i]!
    if (x === "\\" && i + 1 < pattern.length) {
      if (pattern[i + 1] === c) matched = true
      i += 2
    } else if (x === "]") {
      i++
      break
    } else if (i + 2 < pattern.length && pattern[i + 1] === "-") {
      let lo = x
      let hi = pattern[i + 2]!
      if (lo > hi) [lo, hi] = [hi, lo]
      if (c >= lo && c <= hi) matched = true
      i += 3
    } else {
      if (x === c) matched = true
      i++
    }
  }
  return { matched: not ? !matched : matched, next: i }
}
