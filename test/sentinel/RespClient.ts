/**
 * A raw RESP client for the endpoint's tests: sends commands as multibulks (or raw bytes) and
 * decodes replies into tagged values, so RESP2 and RESP3 shapes (map vs array, push vs array,
 * simple vs bulk, null kinds) can be told apart. Every wait is bounded.
 */
import * as net from "node:net"

export type Value =
  | { readonly simple: string }
  | { readonly error: string }
  | { readonly int: number }
  | string
  | { readonly null: "bulk" | "array" | "resp3" }
  | ReadonlyArray<Value>
  | { readonly map: ReadonlyArray<readonly [Value, Value]> }
  | { readonly push: ReadonlyArray<Value> }

const decode = (buf: Buffer, pos: number): { readonly value: Value; readonly next: number } | null => {
  const end = buf.indexOf("\r\n", pos)
  if (end === -1) return null
  const type = String.fromCharCode(buf[pos]!)
  const line = buf.toString("utf8", pos + 1, end)
  const after = end + 2
  const many = (n: number, from: number) => {
    const items: Array<Value> = []
    let at = from
    for (let i = 0; i < n; i++) {
      const r = decode(buf, at)
      if (r === null) return null
      items.push(r.value)
      at = r.next
    }
    return { items, at }
  }
  switch (type) {
    case "+":
      return { value: { simple: line }, next: after }
    case "-":
      return { value: { error: line }, next: after }
    case ":":
      return { value: { int: Number(line) }, next: after }
    case "_":
      return { value: { null: "resp3" }, next: after }
    case "$": {
      const n = Number(line)
      if (n < 0) return { value: { null: "bulk" }, next: after }
      if (buf.length < after + n + 2) return null
      return { value: buf.toString("utf8", after, after + n), next: after + n + 2 }
    }
    case "*":
    case ">": {
      const n = Number(line)
      if (n < 0) return { value: { null: "array" }, next: after }
      const r = many(n, after)
      if (r === null) return null
      return { value: type === ">" ? { push: r.items } : r.items, next: r.at }
    }
    case "%": {
      const r = many(Number(line) * 2, after)
      if (r === null) return null
      const entries: Array<readonly [Value, Value]> = []
      for (let i = 0; i < r.items.length; i += 2) entries.push([r.items[i]!, r.items[i + 1]!])
      return { value: { map: entries }, next: r.at }
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)} at ${pos}`)
  }
}

export const multibulk = (args: ReadonlyArray<string>) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`

/** A flat RESP2 record or a RESP3 map into an object (values as decoded). */
export const asRecord = (v: Value): Record<string, Value> => {
  if (Array.isArray(v)) {
    const out: Record<string, Value> = {}
    for (let i = 0; i < v.length; i += 2) out[v[i] as string] = v[i + 1]!
    return out
  }
  if (typeof v === "object" && v !== null && "map" in v) {
    const entries = (v as { readonly map: ReadonlyArray<readonly [Value, Value]> }).map
    return Object.fromEntries(entries.map(([k, x]) => [k as string, x]))
  }
  throw new Error(`not a record: ${JSON.stringify(v)}`)
}

export class RespClient {
  private buf = Buffer.alloc(0)
  private wake: (() => void) | null = null
  closed = false

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      this.wake?.()
    })
    socket.on("close", () => {
      this.closed = true
      this.wake?.()
    })
    socket.on("error", () => {})
  }

  static connect(port: number): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: "127.0.0.1", port }, () => resolve(new RespClient(s)))
      s.once("error", reject)
    })
  }

  send(...args: ReadonlyArray<string>): void {
    this.socket.write(multibulk(args))
  }

  sendRaw(bytes: string | Buffer): void {
    this.socket.write(bytes)
  }

  /** The next reply (≤ timeoutMs), or an error if none came or the connection closed first. */
  async read(timeoutMs = 2000): Promise<Value> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const r = this.buf.length > 0 ? decode(this.buf, 0) : null
      if (r !== null) {
        this.buf = this.buf.subarray(r.next)
        return r.value
      }
      if (this.closed) throw new Error("connection closed before a reply")
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms (buffered ${JSON.stringify(this.buf.toString("latin1"))})`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(t)
          this.wake = null
          resolve()
        }
      })
    }
  }

  /** Raw bytes received and not decoded yet, after waiting `ms`. */
  async rawAfter(ms: number): Promise<string> {
    await new Promise((r) => setTimeout(r, ms))
    const s = this.buf.toString("utf8")
    this.buf = Buffer.alloc(0)
    return s
  }

  async call(...args: ReadonlyArray<string>): Promise<Value> {
    this.send(...args)
    return this.read()
  }

  /** Resolves true once the server closed the connection (≤ timeoutMs), false otherwise. */
  async waitClosed(timeoutMs = 2000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    return this.closed
  }

  close(): void {
    this.socket.destroy()
  }
}
