/**
 * The local Redis: its connection, and its health from PING + INFO checks on a short interval.
 * The only writer of the health state; everyone else reads it.
 */
import { Context, Duration, Effect, Layer, type Subscribable, SubscriptionRef } from "effect"
import { DictatorConfig } from "../Config.js"
import { describeHealth, type HealthState, nextHealth, sameHealth } from "../domain/Health.js"
import { formatAddress, Redis, type RedisConnection } from "../Redis.js"
import { supervised } from "./supervised.js"

/** Past the client's first reconnect attempt (20 ms, see Redis.ts), which tells refused from alive. */
const RECHECK_AFTER_CLOSE = Duration.millis(30)

export interface LocalHealthService {
  readonly connection: RedisConnection
  readonly health: Subscribable.Subscribable<HealthState>
  /** Checks now (after a change of role) and folds the result into the health state. */
  readonly checkNow: Effect.Effect<HealthState>
}

export class LocalHealth extends Context.Tag("dictator/LocalHealth")<LocalHealth, LocalHealthService>() {}

/** One check: PING then INFO replication, in one round trip. */
export const checkOnce = (conn: RedisConnection) => Effect.either(conn.check)

/**
 * The pause between two checks, cut short when the server drops the connection: a killed Redis
 * is then checked right after the client's first reconnect attempt (refused), not a whole
 * interval later.
 */
export const untilNextCheck = (conn: RedisConnection, interval: Duration.Duration) =>
  Effect.raceFirst(Effect.sleep(interval), Effect.zipRight(conn.closed, Effect.sleep(RECHECK_AFTER_CLOSE)))

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const redis = yield* Redis
  const self = { host: config.node.host, port: config.node.port }
  const interval = Duration.millis(config.check_interval_ms)
  const connection = yield* redis.connect(self, Duration.millis(config.check_timeout_ms))
  const health = yield* SubscriptionRef.make<HealthState>({ _tag: "Unknown" })

  const checkNow = Effect.gen(function* () {
    const result = yield* checkOnce(connection)
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const prev = yield* SubscriptionRef.get(health)
    const next = nextHealth(prev, result, now, { downAfterMs: config.down_after_ms })
    if (prev._tag !== next._tag) {
      const log = next._tag === "Healthy" ? Effect.logInfo : Effect.logWarning
      yield* log(`local Redis ${formatAddress(self)} ${describeHealth(next)}`)
    }
    if (!sameHealth(prev, next)) yield* SubscriptionRef.set(health, next)
    return next
  })

  yield* supervised("health")(Effect.forever(Effect.zipRight(checkNow, untilNextCheck(connection, interval))))
  return { connection, health, checkNow } satisfies LocalHealthService
})

export const layer = Layer.scoped(LocalHealth, make)
