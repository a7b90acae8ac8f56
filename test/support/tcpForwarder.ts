/**
 * A TCP forwarder on 127.0.0.1 in the test process: every connection to `port` is piped to
 * 127.0.0.1:`target`. `block` makes it hang up on new and existing connections at once (the
 * client sees its socket closed and tries its next server); `unblock` forwards again. Chaos tests
 * put one in front of each ZooKeeper server to steer which server a dictator's session uses
 * without touching the dictator: the servers and the dictators stay real processes.
 */
import * as net from "node:net"
import { Effect, type Scope } from "effect"

export interface TcpForwarder {
  readonly port: number
  /** "127.0.0.1:port", to list in a zk_hosts. */
  readonly address: string
  readonly target: number
  readonly block: Effect.Effect<void>
  readonly unblock: Effect.Effect<void>
}

export const tcpForwarder = (target: number): Effect.Effect<TcpForwarder, never, Scope.Scope> =>
  Effect.gen(function* () {
    let blocked = false
    const pairs = new Set<{ readonly a: net.Socket; readonly b: net.Socket }>()
    const server = net.createServer((a) => {
      if (blocked) return void a.destroy()
      const b = net.createConnection({ host: "127.0.0.1", port: target })
      const pair = { a, b }
      pairs.add(pair)
      const drop = () => {
        pairs.delete(pair)
        a.destroy()
        b.destroy()
      }
      a.on("error", drop).on("close", drop)
      b.on("error", drop).on("close", drop)
      a.pipe(b)
      b.pipe(a)
    })
    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const p of pairs) {
            p.a.destroy()
            p.b.destroy()
          }
          server.close(() => resume(Effect.void))
        })
    )
    return {
      port,
      address: `127.0.0.1:${port}`,
      target,
      block: Effect.sync(() => {
        blocked = true
        for (const p of [...pairs]) {
          p.a.destroy()
          p.b.destroy()
        }
      }),
      unblock: Effect.sync(() => void (blocked = false))
    }
  })
