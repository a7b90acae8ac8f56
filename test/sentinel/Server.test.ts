/**
 * The endpoint over real sockets, every command in RESP2 and RESP3, with a raw client that
 * tells the reply types apart.
 */
import { describe, expect, it } from "vitest"
import { Effect, Exit, Scope } from "effect"
import type { DictatorNodeService, NodeStatus } from "../../src/Node.js"
import { diff } from "../../src/sentinel/Events.js"
import { fromStatus, runId } from "../../src/sentinel/Records.js"
import { type Endpoint, follow, listen, type SentinelOptions } from "../../src/sentinel/Server.js"
import { asRecord, RespClient, type Value } from "./RespClient.js"
import { member, status } from "./fixtures.js"

const baseOptions: SentinelOptions = {
  host: "127.0.0.1",
  port: 0,
  password: null,
  service: "svc",
  checkIntervalMs: 20,
  downAfterMs: 1000,
  staleAfterMs: 1000
}

/** Runs `f` with an endpoint listening on a free port, closed afterwards whatever happens. */
const withEndpoint = async (options: Partial<SentinelOptions>, f: (e: Endpoint, clients: () => Promise<RespClient>) => Promise<void>) => {
  const scope = Effect.runSync(Scope.make())
  const opened: Array<RespClient> = []
  try {
    const endpoint = await Effect.runPromise(Scope.extend(listen({ ...baseOptions, ...options }), scope))
    await f(endpoint, async () => {
      const c = await RespClient.connect(endpoint.port)
      opened.push(c)
      return c
    })
  } finally {
    for (const c of opened) c.close()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const healthy = () => fromStatus(status({ self: 1 }), null, { now: 0, staleAfterMs: 1000 })
const err = (e: string): Value => ({ error: e })

describe("sentinel endpoint: RESP2", () => {
  it("answers the handshake and discovery commands", () =>
    withEndpoint({}, async (endpoint, client) => {
      await Effect.runPromise(endpoint.update(healthy(), []))
      const c = await client()
      expect(await c.call("PING")).toEqual({ simple: "PONG" })
      expect(await c.call("PING", "hi")).toBe("hi")
      expect(await c.call("CLIENT", "SETNAME", "app")).toEqual({ simple: "OK" })
      expect(await c.call("CLIENT", "GETNAME")).toBe("app")
      expect(await c.call("CLIENT", "SETINFO", "LIB-NAME", "test")).toEqual({ simple: "OK" })
      expect(await c.call("CLIENT", "NOPE")).toEqual(err("ERR unknown subcommand 'NOPE'. Try CLIENT HELP."))
      const hello = await c.call("HELLO")
      expect(Array.isArray(hello)).toBe(true)
      expect(asRecord(hello)).toMatchObject({ server: "redis", proto: { int: 2 }, mode: "sentinel", modules: [] })
      expect(await c.call("HELLO", "2")).toEqual(hello)
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual(["127.0.0.1", "7001"])
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "other")).toEqual({ null: "array" })
      const masters = (await c.call("SENTINEL", "masters")) as ReadonlyArray<Value>
      expect(masters).toHaveLength(1)
      expect(Array.isArray(masters[0])).toBe(true)
      expect(asRecord(masters[0]!)).toMatchObject({ name: "svc", ip: "127.0.0.1", port: "7001", flags: "master", "config-epoch": "4294967296" })
      expect(asRecord(await c.call("SENTINEL", "MASTER", "svc"))).toMatchObject({ flags: "master", "num-slaves": "2", "num-other-sentinels": "2" })
      expect(await c.call("SENTINEL", "master", "other")).toEqual(err("ERR No such master with that name"))
      const slaves = (await c.call("SENTINEL", "slaves", "svc")) as ReadonlyArray<Value>
      expect(slaves.map((s) => asRecord(s)["port"])).toEqual(["7002", "7003"])
      expect(await c.call("SENTINEL", "replicas", "svc")).toEqual(slaves)
      const sentinels = (await c.call("SENTINEL", "sentinels", "svc")) as ReadonlyArray<Value>
      expect(sentinels.map((s) => asRecord(s))).toEqual([
        expect.objectContaining({ ip: "127.0.0.1", port: "26002", flags: "sentinel", runid: runId("svc", "n2/sentinel") }),
        expect.objectContaining({ ip: "127.0.0.1", port: "26003", flags: "sentinel", runid: runId("svc", "n3/sentinel") })
      ])
      expect(await c.call("SENTINEL", "myid")).toBe(runId("svc", "n1/sentinel"))
      expect(await c.call("SENTINEL", "is-master-down-by-addr")).toEqual(err("ERR unknown subcommand 'is-master-down-by-addr'. Try SENTINEL HELP."))
      expect(await c.call("SENTINEL", "masters", "x")).toEqual(err("ERR wrong number of arguments for 'sentinel|masters' command"))
      expect(await c.call("ROLE")).toEqual(["sentinel", ["svc"]])
      expect(await c.call("GET", "k", "v")).toEqual(err("ERR unknown command 'GET', with args beginning with: 'k' 'v' "))
      expect(await c.call("FOO")).toEqual(err("ERR unknown command 'FOO', with args beginning with: "))
      const info = (await c.call("INFO")) as string
      expect(info).toContain("redis_mode:sentinel\r\n")
      expect(info).toContain(`tcp_port:${endpoint.port}\r\n`)
      expect(info).toContain("connected_clients:1\r\n")
      expect(info).toContain("master0:name=svc,status=ok,address=127.0.0.1:7001,slaves=2,sentinels=3\r\n")
      expect(await c.call("INFO", "clients")).toBe("# Clients\r\nconnected_clients:1\r\n")
      expect(await c.call("QUIT")).toEqual({ simple: "OK" })
      expect(await c.waitClosed()).toBe(true)
    }))

  it("answers inline commands as telnet sends them", () =>
    withEndpoint({}, async (endpoint, client) => {
      await Effect.runPromise(endpoint.update(healthy(), []))
      const c = await client()
      c.sendRaw("SENTINEL get-master-addr-by-name svc\r\n")
      expect(await c.read()).toEqual(["127.0.0.1", "7001"])
    }))

  it("before any view (node starting): no master, empty lists, errors for a named master", () =>
    withEndpoint({}, async (_, client) => {
      const c = await client()
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual({ null: "array" })
      expect(await c.call("SENTINEL", "masters")).toEqual([])
      expect(await c.call("SENTINEL", "sentinels", "svc")).toEqual(err("ERR No such master with that name"))
    }))

  it("a lost master is flagged s_down,o_down; a dictator cut off from ZooKeeper hands out no master", () =>
    withEndpoint({}, async (endpoint, client) => {
      const lost = fromStatus(status({ master: null }), healthy(), { now: 0, staleAfterMs: 1000 })
      await Effect.runPromise(endpoint.update(lost, []))
      const c = await client()
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual(["127.0.0.1", "7001"])
      expect(asRecord(await c.call("SENTINEL", "master", "svc"))["flags"]).toBe("master,s_down,o_down")
      expect(await c.call("INFO", "sentinel")).toContain("master0:name=svc,status=odown,")
      const cutOff = fromStatus(status({ session: { status: "disconnected", since: 0 } }), healthy(), { now: 5000, staleAfterMs: 1000 })
      await Effect.runPromise(endpoint.update(cutOff, []))
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual({ null: "array" })
      expect(asRecord(await c.call("SENTINEL", "master", "svc"))["flags"]).toBe("master,s_down,o_down")
    }))

  it("pub/sub: confirmations, the subscribed-mode rules, messages and pmessages with Redis glob rules", () =>
    withEndpoint({}, async (endpoint, client) => {
      const v1 = healthy()
      await Effect.runPromise(endpoint.update(v1, []))
      const c = await client()
      c.send("SUBSCRIBE", "+switch-master", "+sdown")
      expect(await c.read()).toEqual(["subscribe", "+switch-master", { int: 1 }])
      expect(await c.read()).toEqual(["subscribe", "+sdown", { int: 2 }])
      expect(await c.call("PSUBSCRIBE", "[-+]odown")).toEqual(["psubscribe", "[-+]odown", { int: 3 }])
      expect(await c.call("PING")).toEqual(["pong", ""])
      expect(await c.call("SENTINEL", "masters")).toEqual(
        err("ERR Can't execute 'sentinel': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
      )
      const other = await client()
      expect(await other.call("PSUBSCRIBE", "*")).toEqual(["psubscribe", "*", { int: 1 }])

      const voted = [member(1, { role: "master" }), member(2, { master_down: "4294967296" }), member(3, { master_down: "4294967296" })]
      const v2 = fromStatus(status({ self: 1, members: voted }), v1, { now: 0, staleAfterMs: 1000 })
      const v3 = fromStatus(status({ self: 1, master: 2, epoch: "9", members: [member(2, { role: "master" }), member(3)] }), v2, { now: 0, staleAfterMs: 1000 })
      await Effect.runPromise(endpoint.update(v2, diff(v1, v2)))
      await Effect.runPromise(endpoint.update(v3, diff(v2, v3)))
      expect(await c.read()).toEqual(["message", "+sdown", "master svc 127.0.0.1 7001"])
      expect(await c.read()).toEqual(["pmessage", "[-+]odown", "+odown", "master svc 127.0.0.1 7001 #quorum 2/2"])
      expect(await c.read()).toEqual(["message", "+switch-master", "svc 127.0.0.1 7001 127.0.0.1 7002"])
      // +slave matches none of its channels; the old master, now a replica entry, is down.
      expect(await c.read()).toEqual(["message", "+sdown", "slave 127.0.0.1:7001 127.0.0.1 7001 @ svc 127.0.0.1 7002"])
      const all: Array<Value> = []
      for (let i = 0; i < 5; i++) all.push(await other.read())
      expect(all.map((m) => (m as ReadonlyArray<string>)[2])).toEqual(["+sdown", "+odown", "+switch-master", "+slave", "+sdown"])

      expect(await c.call("UNSUBSCRIBE", "+sdown")).toEqual(["unsubscribe", "+sdown", { int: 2 }])
      c.send("UNSUBSCRIBE")
      expect(await c.read()).toEqual(["unsubscribe", "+switch-master", { int: 1 }])
      expect(await c.call("PUNSUBSCRIBE")).toEqual(["punsubscribe", "[-+]odown", { int: 0 }])
      expect(await c.call("PUNSUBSCRIBE")).toEqual(["punsubscribe", { null: "bulk" }, { int: 0 }])
      // Out of subscribed mode, every command again.
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual(["127.0.0.1", "7002"])
    }))
})

describe("sentinel endpoint: RESP3", () => {
  it("HELLO 3 switches to maps, `_` nulls and push frames", () =>
    withEndpoint({}, async (endpoint, client) => {
      await Effect.runPromise(endpoint.update(healthy(), []))
      const c = await client()
      const hello = await c.call("HELLO", "3", "SETNAME", "app")
      expect(hello).toHaveProperty("map")
      expect(asRecord(hello)).toMatchObject({ server: "redis", version: expect.stringMatching(/^7\./), proto: { int: 3 }, id: { int: expect.any(Number) }, mode: "sentinel", modules: [] })
      expect(await c.call("CLIENT", "GETNAME")).toBe("app")
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "nope")).toEqual({ null: "resp3" })
      expect(await c.call("CLIENT", "GETNAME", "x")).toBe("app")
      const masters = (await c.call("SENTINEL", "masters")) as ReadonlyArray<Value>
      expect(masters[0]).toHaveProperty("map")
      expect(asRecord(masters[0]!)).toMatchObject({ name: "svc", flags: "master", port: "7001" })
      expect(await c.call("SENTINEL", "master", "svc")).toHaveProperty("map")
      const replicas = (await c.call("SENTINEL", "replicas", "svc")) as ReadonlyArray<Value>
      expect(replicas.every((r) => typeof r === "object" && r !== null && "map" in r)).toBe(true)
      expect(await c.call("SUBSCRIBE", "+switch-master")).toEqual({ push: ["subscribe", "+switch-master", { int: 1 }] })
      // RESP3 clients may run anything while subscribed; PING answers PONG.
      expect(await c.call("PING")).toEqual({ simple: "PONG" })
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual(["127.0.0.1", "7001"])
      await Effect.runPromise(endpoint.update(healthy(), [{ channel: "+switch-master", payload: "svc a 1 b 2" }]))
      expect(await c.read()).toEqual({ push: ["message", "+switch-master", "svc a 1 b 2"] })
      expect(await c.call("HELLO", "2")).toSatisfy(Array.isArray)
    }))

  it("HELLO with an unsupported version or a bad option", () =>
    withEndpoint({}, async (_, client) => {
      const c = await client()
      expect(await c.call("HELLO", "4")).toEqual(err("NOPROTO unsupported protocol version"))
      expect(await c.call("HELLO", "x")).toEqual(err("ERR Protocol version is not an integer or out of range"))
      expect(await c.call("HELLO", "3", "FOO")).toEqual(err("ERR Syntax error in HELLO option 'FOO'"))
      // Still RESP2.
      expect(await c.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual({ null: "array" })
    }))
})

describe("sentinel endpoint: AUTH", () => {
  it("with a password: NOAUTH first, WRONGPASS, then OK; HELLO AUTH works in one step", () =>
    withEndpoint({ password: "s3cret" }, async (endpoint, client) => {
      await Effect.runPromise(endpoint.update(healthy(), []))
      const c = await client()
      expect(await c.call("PING")).toEqual(err("NOAUTH Authentication required."))
      expect(await c.call("SENTINEL", "masters")).toEqual(err("NOAUTH Authentication required."))
      expect(await c.call("AUTH", "nope")).toEqual(err("WRONGPASS invalid username-password pair or user is disabled."))
      expect(await c.call("AUTH", "bob", "s3cret")).toEqual(err("WRONGPASS invalid username-password pair or user is disabled."))
      expect(await c.call("AUTH", "s3cret")).toEqual({ simple: "OK" })
      expect(await c.call("PING")).toEqual({ simple: "PONG" })
      const d = await client()
      expect(await d.call("HELLO", "3")).toMatchObject({ error: expect.stringMatching(/^NOAUTH /) })
      expect(await d.call("HELLO", "3", "AUTH", "default", "wrong")).toEqual(err("WRONGPASS invalid username-password pair or user is disabled."))
      expect(asRecord(await d.call("HELLO", "3", "AUTH", "default", "s3cret"))).toMatchObject({ proto: { int: 3 } })
      expect(await d.call("SENTINEL", "get-master-addr-by-name", "svc")).toEqual(["127.0.0.1", "7001"])
    }))

  it("without a password: AUTH <password> is refused as Redis does", () =>
    withEndpoint({}, async (_, client) => {
      const c = await client()
      expect(await c.call("AUTH", "x")).toEqual(
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
      )
      expect(await c.call("AUTH", "default", "x")).toEqual({ simple: "OK" })
    }))
})

describe("sentinel endpoint: bounds", () => {
  it("a protocol error is answered, then the connection closed", () =>
    withEndpoint({}, async (_, client) => {
      const c = await client()
      c.sendRaw("*1\r\n$99999999\r\n")
      expect(await c.read()).toEqual(err("ERR Protocol error: invalid bulk length"))
      expect(await c.waitClosed()).toBe(true)
    }))

  it("connections past the limit get an error and are closed", () =>
    withEndpoint({ maxConnections: 2 }, async (_, client) => {
      const a = await client()
      const b = await client()
      expect(await a.call("PING")).toEqual({ simple: "PONG" })
      expect(await b.call("PING")).toEqual({ simple: "PONG" })
      const c = await client()
      expect(await c.read()).toEqual(err("ERR max number of clients reached"))
      expect(await c.waitClosed()).toBe(true)
      a.close()
      await a.waitClosed()
      // The slot is free again (the server sees the close shortly after).
      let ok = false
      for (let i = 0; i < 50 && !ok; i++) {
        const d = await client()
        ok = (await d.call("PING").catch(() => null)) !== null && !(await d.waitClosed(50))
        if (!ok) await new Promise((r) => setTimeout(r, 20))
      }
      expect(ok).toBe(true)
    }))

  it("an idle client is closed unless it subscribed; a slow request is cut", () =>
    withEndpoint({ idleTimeoutMs: 400, requestTimeoutMs: 150 }, async (_, client) => {
      const idle = await client()
      const subscribed = await client()
      expect(await subscribed.call("SUBSCRIBE", "+switch-master")).toEqual(["subscribe", "+switch-master", { int: 1 }])
      const slow = await client()
      slow.sendRaw("*2\r\n$8\r\nSENTINEL\r\n$3\r\nmas")
      expect(await idle.waitClosed(1500)).toBe(true)
      expect(await slow.read(1500)).toEqual(err("ERR Protocol error: request not completed in time"))
      expect(await slow.waitClosed()).toBe(true)
      await new Promise((r) => setTimeout(r, 400))
      expect(subscribed.closed).toBe(false)
      expect(await subscribed.call("PING")).toEqual(["pong", ""])
    }))

  it("a client that does not read is closed past the output bound", () =>
    withEndpoint({ maxOutputBytes: 64 * 1024 }, async (endpoint, client) => {
      const c = await client()
      expect(await c.call("SUBSCRIBE", "x")).toEqual(["subscribe", "x", { int: 1 }])
      c.socket.pause()
      const big = "y".repeat(16 * 1024)
      for (let i = 0; i < 400 && (await Effect.runPromise(endpoint.connectionCount)) > 0; i++) {
        await Effect.runPromise(endpoint.update(healthy(), [{ channel: "x", payload: big }]))
        await new Promise((r) => setImmediate(r))
      }
      expect(await Effect.runPromise(endpoint.connectionCount)).toBe(0)
    }))
})

describe("sentinel endpoint: follow", () => {
  it("polls the node's status and publishes the events of a failover", () =>
    withEndpoint({}, async (endpoint, client) => {
      let current = status({ self: 1 })
      const node: DictatorNodeService = {
        status: Effect.sync(() => current as unknown as NodeStatus),
        statusNow: Effect.sync(() => current as unknown as NodeStatus),
        enable: Effect.succeed(false),
        disable: Effect.succeed(false),
        failsafe: () => Effect.succeed({ yes: false, reason: "not asked here" }),
        metrics: Effect.succeed({ contentType: "text/plain", text: "" }),
        countHttp: () => Effect.void,
        countSentinel: () => Effect.void
      }
      const scope = Effect.runSync(Scope.make())
      try {
        await Effect.runPromise(Scope.extend(follow(endpoint, node, baseOptions), scope))
        const c = await client()
        let addr: Value = { null: "array" }
        for (let i = 0; i < 100 && !Array.isArray(addr); i++) {
          addr = await c.call("SENTINEL", "get-master-addr-by-name", "svc")
          if (!Array.isArray(addr)) await new Promise((r) => setTimeout(r, 10))
        }
        expect(addr).toEqual(["127.0.0.1", "7001"])
        expect(await c.call("SUBSCRIBE", "+switch-master")).toEqual(["subscribe", "+switch-master", { int: 1 }])
        current = status({ self: 1, master: 3, epoch: "77", members: [member(1), member(2), member(3, { role: "master" })] })
        expect(await c.read()).toEqual(["message", "+switch-master", "svc 127.0.0.1 7001 127.0.0.1 7003"])
      } finally {
        await Effect.runPromise(Scope.close(scope, Exit.void))
      }
    }))
})
