/**
 * This node's member record in ZooKeeper: what it is (role, offset, health, priority) and its
 * vote against an unreachable master. Written when it changes (domain/Records.republish), on
 * every new session, and removed on the way out.
 */
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { announcedAddress, DictatorConfig } from "../Config.js"
import { lastInfo } from "../domain/Health.js"
import { type MemberRecord, type Published, republish } from "../domain/Records.js"
import { VERSION } from "../Version.js"
import { LocalHealth } from "./LocalHealth.js"
import { Mode } from "./Mode.js"
import { Observer } from "./Observer.js"
import { Store } from "./Store.js"
import { inOwnFiber, periodic, supervised } from "./supervised.js"

/** How often the record is looked at again without a change of its inputs. */
const REFRESH = Duration.seconds(1)

export interface MembershipService {
  /** The record as it would be written now. */
  readonly record: Effect.Effect<MemberRecord>
  /** Removes the record (leaving the election); the next write creates it again. */
  readonly remove: Effect.Effect<void>
}

export class Membership extends Context.Tag("dictator/Membership")<Membership, MembershipService>() {}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const local = yield* LocalHealth
  const observer = yield* Observer
  const mode = yield* Mode
  const now = Effect.clockWith((c) => c.currentTimeMillis)
  const startedAt = yield* now
  let published: Published | null = null
  /** The duplicate that keeps this node out, as last said. */
  let refused: string | null = null
  // What the others reach: the announced address (announce_host / announce_port), not node.host.
  const announced = announcedAddress(config)

  const record = Effect.gen(function* () {
    const h = yield* local.health.get
    const info = lastInfo(h)
    return {
      name: config.node.name,
      host: announced.host,
      port: announced.port,
      priority: config.node.priority,
      healthy: h._tag === "Healthy",
      role: info?.role ?? "unknown",
      offset: info?.offset ?? 0,
      replid: info?.replid ?? "",
      link_up: info?.linkUp ?? false,
      master_down: yield* observer.opinion.get,
      version: VERSION,
      sentinel: config.sentinel_port === undefined ? null : `${announced.host}:${config.sentinel_port}`,
      // Where the other dictators ask this one (failsafe mode): a URL, https with http_tls.
      http: `${config.http_tls === undefined ? "http" : "https"}://${config.node.host}:${config.http_port}`
    } satisfies MemberRecord
  })

  const publishOnce = Effect.gen(function* () {
    const session = yield* store.session.get
    if (session.status !== "connected" || (yield* mode.get) !== "enabled") return
    const h = yield* local.health.get
    const t = yield* now
    // Wait for the local Redis (up to loading_timeout) before showing up as a member.
    if (h._tag !== "Healthy" && published === null && t - startedAt < config.node.loading_timeout * 1000) return
    const next = yield* record
    const write = republish(published, next, session.generation, t)
    if (write === "skip") return
    if (write === "update" && (yield* store.updateMember(next))) {
      published = { generation: session.generation, record: next, at: t }
      return
    }
    yield* store.createMember(next, session)
    if (published === null && h._tag !== "Healthy") {
      yield* Effect.logWarning(
        `local Redis not ready after loading_timeout ${config.node.loading_timeout}s: joining as a non-candidate until it is healthy`
      )
    }
    published = { generation: session.generation, record: next, at: t }
  })

  const remove = Effect.suspend(() => {
    published = null
    return store.removeMember(config.node.name)
  }).pipe(Effect.catchAll((e) => Effect.logWarning(`cannot remove the member record: ${e.message}`)))

  let failing: string | undefined
  const pass = Effect.suspend(() => {
    const before = published
    return Effect.map(publishOnce, () => published !== before)
  }).pipe(
    // Once per reason, not once per tick (a NoAuth lasts until the operator fixes zk_auth).
    Effect.tap((wrote) =>
      Effect.suspend(() => {
        refused = null
        if (failing === undefined || !wrote) return Effect.void
        failing = undefined
        return Effect.logInfo("member record published again")
      })
    ),
    Effect.catchAll((e) => {
      if (e._tag === "DuplicateNode") {
        // Said once while it lasts: not a candidate, not a voter, until the other one leaves.
        if (refused === e.message) return Effect.void
        refused = e.message
        return Effect.logError(`not joining: ${e.message}`)
      }
      if (e.message === failing) return Effect.void
      failing = e.message
      return Effect.logWarning(`cannot publish member record: ${e.message}`)
    })
  )
  // A change of the record's inputs wakes the loop. A new session is looked at within a check
  // interval, not at once: the record of a node whose session expired comes back after the others
  // have had their election without it. The slow period only refreshes an offset held back by
  // OFFSET_REFRESH_MS.
  const interval = Duration.millis(config.check_interval_ms)
  const member = yield* periodic(
    "member",
    (self) =>
      Effect.zipRight(
        pass,
        Effect.flatMap(store.session.get, (session) =>
          self.every(failing === undefined && published !== null && published.generation === session.generation ? REFRESH : interval)
        )
      ),
    interval
  )
  // The health's kind only: a change of offset or link alone is written with the next period (or a
  // check interval later while the record is not settled), not in the middle of a failover.
  const inputs: ReadonlyArray<Stream.Stream<unknown>> = [
    local.health.changes.pipe(Stream.map((h) => h._tag), Stream.changes),
    observer.opinion.changes,
    mode.changes
  ]
  yield* supervised("member-wake")(
    Effect.forEach(inputs, (changes) => Stream.runForEach(changes, () => member.wake), { concurrency: "unbounded", discard: true })
  )
  yield* supervised("member-session")(Stream.runForEach(store.session.changes, () => member.every(interval)))
  yield* Effect.addFinalizer(() => inOwnFiber(remove.pipe(Effect.timeout("2 seconds"), Effect.ignore)))
  return { record, remove } satisfies MembershipService
})

export const layer = Layer.scoped(Membership, make)
