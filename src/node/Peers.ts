/**
 * Connections to the other members' Redis servers (ranking, host-death detection, handover,
 * demoting an orphaned old master). One per address, shared, closed a minute after its last use,
 * so a departed member's server is not reconnected to forever.
 */
import { Context, Data, Duration, Effect, Layer, RcMap } from "effect"
import { DictatorConfig } from "../Config.js"
import { Redis, type RedisAddress, type RedisConnection } from "../Redis.js"

export interface PeersService {
  readonly use: <A, E, R>(address: RedisAddress, f: (conn: RedisConnection) => Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export class Peers extends Context.Tag("dictator/Peers")<Peers, PeersService>() {
  static readonly layer = Layer.scoped(
    Peers,
    Effect.gen(function* () {
      const { config } = yield* DictatorConfig
      const redis = yield* Redis
      const timeout = Duration.millis(config.check_timeout_ms)
      const conns = yield* RcMap.make({
        lookup: (key: RedisAddress) => redis.connect({ host: key.host, port: key.port }, timeout),
        idleTimeToLive: "1 minute"
      })
      return {
        use: (address, f) =>
          Effect.scoped(Effect.flatMap(RcMap.get(conns, Data.struct({ host: address.host, port: address.port })), f))
      }
    })
  )
}
