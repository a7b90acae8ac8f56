/**
 * The local Redis: its connection, and its health from PING + INFO checks on a short interval.
 * The only writer of the health state; everyone else reads it.
 */
import { Context, Duration, Effect, Either, Layer, type Subscribable, SubscriptionRef } from "effect"
import { DictatorConfig } from "../Config.js"
import { describeHealth, type HealthState, nextHealth, sameHealth } from "../domain/Health.js"
import { formatAddress, MIN_REDIS_VERSION, Redis, type RedisConnection, supportsWritePause } from "../Redis.js"
import { type Periodic, periodic, supervised } from "./supervised.js"

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
 * Wakes `checks` whenever the server drops the connection: a killed Redis is then checked right
 * after the client's first reconnect attempt (refused), not up to a whole interval later.
 */
export const checkAgainOnClose = (conn: RedisConnection, checks: Periodic) =>
  Effect.forever(Effect.zipRight(Effect.zipRight(conn.closed, Effect.sleep(RECHECK_AFTER_CLOSE)), checks.wake))

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const redis = yield* Redis
  const self = { host: config.node.host, port: config.node.port }
  const interval = Duration.millis(config.check_interval_ms)
  const connection = yield* redis.connect(self, Duration.millis(config.check_timeout_ms))
  const health = yield* SubscriptionRef.make<HealthState>({ _tag: "Unknown" })
  /** redis_version of the process answering now; read again after any failed check (it may be a new one). */
  let version: string | null = null

  /**
   * The fence is CLIENT PAUSE … WRITE, which Redis has since 6.2: an older Redis could never be
   * fenced, so it is misconfigured (never a candidate) until it is upgraded.
   */
  const tooOld = Effect.gen(function* () {
    if (version === null) version = yield* connection.serverVersion
    return supportsWritePause(version)
      ? null
      : `Redis ${version} is older than ${MIN_REDIS_VERSION}: the dictator fences a master with CLIENT PAUSE … WRITE, which older versions lack; it is never elected master until this Redis is upgraded to ${MIN_REDIS_VERSION} or later`
  })

  const checkNow = Effect.gen(function* () {
    const checked = yield* checkOnce(connection)
    if (Either.isLeft(checked)) version = null
    const old = Either.isRight(checked) ? yield* Effect.either(tooOld) : Either.right(null)
    const result = Either.isLeft(old) ? Either.left(old.left) : checked
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const prev = yield* SubscriptionRef.get(health)
    const next: HealthState =
      Either.isRight(old) && old.right !== null
        ? { _tag: "Misconfigured", since: prev._tag === "Misconfigured" ? prev.since : now, detail: old.right }
        : nextHealth(prev, result, now, { downAfterMs: config.down_after_ms })
    if (prev._tag !== next._tag) {
      const log = next._tag === "Healthy" ? Effect.logInfo : Effect.logWarning
      yield* log(`local Redis ${formatAddress(self)} ${describeHealth(next)}`)
    }
    if (!sameHealth(prev, next)) yield* SubscriptionRef.set(health, next)
    return next
  })

  const checks = yield* periodic("health", Effect.asVoid(checkNow), interval)
  yield* supervised("health-closed")(checkAgainOnClose(connection, checks))
  return { connection, health, checkNow } satisfies LocalHealthService
})

export const layer = Layer.scoped(LocalHealth, make)
